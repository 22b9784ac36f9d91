"""Duplicates computed once: the engine on 1,000 distinct texts twice against 2,000 distinct texts.

Acceptance (issue 17, part 2): 2,000 rows that are 1,000 distinct texts twice give ``duplicate_rows == 1000``,
outputs equal to a run without the duplicates, and at least 1.6x the speed of 2,000 distinct rows measured in
the same run.

The texts are 2,000 docstrings drawn at random (``--seed``) from the benchmark corpus
(``../shared/data/stdlib_docs.parquet``), so both inputs hold texts of the same kind and, in expectation, the
same tokens per row:

* **distinct** (the anchor): the 2,000 texts;
* **twice**: the first 1,000 of them, each twice, shuffled;
* **reference**: those 1,000 once, in the order the twice run first meets them, for the equality check.

The Spark-free engine (``sparkinfer.engine.run``, one chunk) embeds them with the bundled all-MiniLM-L6-v2 on
``--threads`` torch threads after one warm-up call; the two timed inputs alternate ``--repeats`` times and
the best time of each counts. Prints a markdown row for BENCHMARKS.md and one JSON object.

Example:
    .venv/bin/python scripts/bench_dedup.py
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import REPO_ROOT, commit, cpu_model  # noqa: E402

CORPUS = REPO_ROOT.parent / "shared" / "data" / "stdlib_docs.parquet"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=2000, help="rows per timed input (default: 2000)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args(argv)

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from sparkinfer import ModelSpec
    from sparkinfer.engine import run
    from sparkinfer.notebook import bundled_minilm

    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    corpus = list(dict.fromkeys(pq.read_table(args.corpus, columns=["text"]).column("text").to_pylist()))
    drawn = rng.sample(corpus, args.rows)
    half = drawn[: args.rows // 2]
    twice = half * 2
    rng.shuffle(twice)
    reference = list(dict.fromkeys(twice))
    spec = ModelSpec(bundled_minilm(""), task="embedding", device="cpu")
    inputs = {name: pa.array(texts, pa.string()) for name, texts in
              (("distinct", drawn), ("twice", twice), ("reference", reference))}
    print(f"{args.rows} rows per input; model {spec.model}; {args.threads} torch threads; {cpu_model()}; "
          f"commit {commit()}", file=sys.stderr, flush=True)

    run(spec, inputs["reference"][:200])  # warm-up: the load, the first forward passes
    best: dict[str, float] = {}
    metrics: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for repeat in range(args.repeats):
        for name in ("distinct", "twice"):
            started = time.perf_counter()
            out, m = run(spec, inputs[name])
            seconds = time.perf_counter() - started
            best[name] = min(best.get(name, seconds), seconds)
            metrics[name], outputs[name] = m, out
            print(f"repeat {repeat + 1}: {name} {seconds:.2f} s", file=sys.stderr, flush=True)
    alone, _ = run(spec, inputs["reference"])

    vectors = dict(zip(reference, np.asarray(alone.to_pylist(), dtype=np.float64)))
    got = np.asarray(outputs["twice"].to_pylist(), dtype=np.float64)
    want = np.stack([vectors[t] for t in twice])
    cosines = (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    ratio = best["distinct"] / best["twice"]
    duplicates = metrics["twice"].duplicate_rows
    result = {
        "commit": commit(), "cpu": cpu_model(), "threads": args.threads, "rows": args.rows,
        "seconds": best, "speedup": ratio, "duplicate_rows": duplicates,
        "real_tokens": {k: m.real_tokens for k, m in metrics.items()},
        "padded_tokens": {k: m.padded_tokens for k, m in metrics.items()},
        "max_abs_difference": float(np.abs(got - want).max()), "min_cosine": float(cosines.min()),
        "bit_identical": bool(np.array_equal(got, want)),
    }
    print(f"| dedup, engine | {args.rows} rows: {args.rows - duplicates} distinct x2 vs {args.rows} distinct | "
          f"{best['twice']:.2f} s vs {best['distinct']:.2f} s | **{ratio:.2f}x** | duplicate_rows {duplicates}; "
          f"max abs difference to the run without duplicates {result['max_abs_difference']:.1e} |")
    print(json.dumps(result, indent=2))
    ok = ratio >= 1.6 and duplicates == args.rows // 2 and result["min_cosine"] >= 0.99999
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
