"""The job on a one-file input: one task (``--partitions 1``, the old behaviour) against the automatic choice.

Acceptance (issue 16): the 19,444-row single-file job on local[2] runs as at least 2 tasks and reaches at
least 1.8x the one-task rows/s, measured in one run; and a job of about 3 minutes prints a progress line at
least every 30 s, whose ETA at the halfway point is within +-50 % of the time really left.

The input is ``--copies`` (4) copies of the benchmark corpus (``../shared/data/stdlib_docs.parquet``, 4,861
docstrings; 19,444 rows) written as ONE Parquet file, so Spark reads it as one partition. Each row of copy k
starts with ``"[k] "``, so no two rows are duplicates (the engine computes a task's duplicates once, which
would flatter whichever run keeps more copies of a text in one task). Both runs are the
command line (``python -m sparkinfer.spark.job run ...``) in a fresh process on ``--master`` (local[2]), with
the bundled all-MiniLM-L6-v2, task embedding, every other option at its default, one after the other:

* **one task**: ``--partitions 1``: the anchor;
* **auto**: no ``--partitions``: the job picks the count from the rows and the task slots.

Each run's rows/s is the run report's (rows over the prediction's wall time). For the auto run the script
also reads the progress lines on stderr (default interval, 30 s): the largest gap between two of them, and
the ETA of the line nearest the halfway point of the prediction (from the job's start line to its commit
line) against the time that really remained. Prints markdown rows for BENCHMARKS.md and one JSON object.

Example:
    .venv/bin/python scripts/bench_partitions.py
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import REPO_ROOT, commit, cpu_model  # noqa: E402

CORPUS = REPO_ROOT.parent / "shared" / "data" / "stdlib_docs.parquet"
_LINE = re.compile(r"(\d\d:\d\d:\d\d) INFO sparkinfer: (.*)$")
_ETA = re.compile(r"ETA (?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--copies", type=int, default=4, help="copies of the corpus in the input (default: 4)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    args = parser.parse_args(argv)

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from sparkinfer.notebook import bundled_minilm

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_partitions_"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = pq.read_table(args.corpus, columns=["text"])
    column = corpus.column("text").combine_chunks()
    texts = pa.concat_arrays([pc.binary_join_element_wise(f"[{k}]", column, " ") for k in range(1, args.copies + 1)])
    source = work / "one_file.parquet"
    pq.write_table(pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": texts}), source)
    model = bundled_minilm("")
    print(f"input: {len(texts)} rows in one Parquet file; model {model}; master {args.master}; "
          f"{cpu_model()}; commit {commit()}", flush=True)

    results: dict[str, Any] = {}
    for name, extra in (("one task", ["--partitions", "1"]), ("auto", [])):
        output = work / name.replace(" ", "_")
        shutil.rmtree(output, ignore_errors=True)
        command = [sys.executable, "-m", "sparkinfer.spark.job", "--input", str(source), "--output", str(output),
                   "--model", model, "--task", "embedding", "--master", args.master, *extra]
        started = time.time()
        run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        wall = time.time() - started
        if run.returncode != 0:
            print(run.stderr[-4000:], file=sys.stderr)
            return 1
        report = json.loads(Path(f"{output}.report.json").read_text())
        results[name] = {"wall_seconds": wall, "rows_per_second": report["rows_per_second"],
                         "predict_seconds": report["predict_seconds"], "partitioning": report["partitioning"],
                         "model_loads": report["engine"]["model_loads"], **_progress(run.stderr)}
        print(f"{name}: {report['partitioning']['partitions']} task(s), {report['rows_per_second']:.1f} rows/s, "
              f"{report['predict_seconds']:.1f} s predicting, {wall:.1f} s in all", flush=True)
    ratio = results["auto"]["rows_per_second"] / results["one task"]["rows_per_second"]
    auto = results["auto"]
    print("\n| run | tasks | rows/s | predict s | x one task | longest gap between progress lines | ETA at half "
          "(real) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        half = (f"{r['eta_at_half']:.0f} s ({r['left_at_half']:.0f} s, {r['eta_error']:+.0%})"
                if r.get("eta_at_half") is not None else "-")
        print(f"| {name} | {r['partitioning']['partitions']} | {r['rows_per_second']:.1f} | "
              f"{r['predict_seconds']:.1f} | {r['rows_per_second'] / results['one task']['rows_per_second']:.2f} | "
              f"{r.get('max_gap', '-')} s | {half} |")
    print(json.dumps({"rows": len(texts), "ratio": ratio, "results": results, "commit": commit(),
                      "cpu": cpu_model()}, indent=2))
    ok = ratio >= 1.8 and auto["partitioning"]["partitions"] >= 2 and (auto.get("max_gap") or 99) <= 30 and (
        auto.get("eta_error") is not None and abs(auto["eta_error"]) <= 0.5)
    return 0 if ok else 1


def _progress(stderr: str) -> dict[str, Any]:
    """The progress lines' largest gap and the ETA nearest the halfway point of the prediction."""
    stamped = []
    for line in stderr.splitlines():
        match = _LINE.search(line.split("\r")[-1])
        if match:
            when = datetime.strptime(match.group(1), "%H:%M:%S")
            stamped.append((when.hour * 3600 + when.minute * 60 + when.second, match.group(2)))
    start = next((t for t, text in stamped if "to predict in" in text), None)
    end = next((t for t, text in stamped if "committed:" in text), None)
    lines = [(t, text) for t, text in stamped if " rows (" in text or "rows, waiting" in text]
    if start is None or end is None or len(lines) < 2:
        return {"progress_lines": len(lines)}
    gaps = [b - a for (a, _), (b, _) in zip([(start, "")] + lines, lines + [(end, "")])]
    with_eta = [(t, text) for t, text in lines if _ETA.search(text) and "ETA ?" not in text]
    result: dict[str, Any] = {"progress_lines": len(lines), "max_gap": max(gaps)}
    if with_eta:
        half = (start + end) / 2
        t, text = min(with_eta, key=lambda item: abs(item[0] - half))
        h, m, s = (int(g or 0) for g in _ETA.search(text).groups())  # type: ignore[union-attr]
        eta, left = h * 3600 + m * 60 + s, end - t
        result.update(eta_at_half=eta, left_at_half=left, eta_error=(eta - left) / left if left else None,
                      line_at_half=text)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
