"""Generation throughput: sparkinfer's Spark-free engine (batched) vs. ``model.generate`` on one row at a time.

Both decode greedily with the same tiny random GPT-2 (tests/conftest.py's ``build_tiny_causal_lm``: 2 layers,
width 32, 128 positions, a 512-token BPE tokenizer trained on the docstring fixture) over the same prompts
(docstrings cut to 1..100 words), in this process, on ``--threads`` torch threads:

* **sparkinfer**: ``sparkinfer.engine.run`` with ``task="generation"``, ``return_details=True``: prompts are
  length-sorted, left-padded into token-budget micro-batches (prompt + ``max_new_tokens``), and generated
  together; rows that end early stop being extended once their whole micro-batch has ended.
* **per-row**: ``model.generate(max_new_tokens=...)`` on each prompt alone, no padding: what a Python loop or
  a row-at-a-time UDF does.

Each is warmed up once, then timed ``--repeats`` times (best and median reported). Generated tokens are
counted per row up to and including the end-of-sequence token; greedy decoding makes both systems generate
the same tokens, which the script checks (``outputs_equal``). Prints one JSON object on stdout.

Example:
    .venv/bin/python scripts/bench_generate.py --rows 256 --max-new-tokens 32 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO_ROOT))
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    import transformers

    from sparkinfer import ModelSpec
    from sparkinfer.engine import run
    from tests.conftest import DATA, build_tiny_causal_lm

    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    docs = pq.read_table(DATA / "stdlib_docs_sample.parquet").column("text").to_pylist()
    rng = random.Random(0)
    prompts = [" ".join(rng.choice(docs).split()[: rng.randint(1, 100)]) for _ in range(args.rows)]
    new = args.max_new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_causal_lm(Path(tmp))
        spec = ModelSpec(path, task="generation", max_new_tokens=new, batch_tokens=args.batch_tokens,
                         return_details=True, device=args.device)

        def engine() -> list[Any]:
            out, _ = run(spec, pa.array(prompts, pa.string()))
            return [(row["text"], row["completion_tokens"]) for row in out.to_pylist()]

        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.AutoModelForCausalLM.from_pretrained(path).to(args.device).eval()
        eos = model.generation_config.eos_token_id

        def per_row() -> list[Any]:
            results = []
            with torch.inference_mode():
                for text in prompts:
                    ids = tokenizer(text).input_ids[-(model.config.n_positions - new):]
                    tensor = torch.tensor([ids], device=args.device)
                    out = model.generate(input_ids=tensor, attention_mask=torch.ones_like(tensor),
                                         max_new_tokens=new, do_sample=False)[0, len(ids):].tolist()
                    out = out[: out.index(eos) + 1] if eos in out else out
                    text_out = tokenizer.decode([t for t in out if t != eos], skip_special_tokens=True)
                    results.append((text_out, len(out)))
            return results

        timings: dict[str, list[float]] = {}
        outputs: dict[str, list[Any]] = {}
        for name, fn in (("sparkinfer", engine), ("per_row", per_row)):
            outputs[name] = fn()  # warm-up (and, for the engine, the model load)
            timings[name] = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                fn()
                timings[name].append(time.perf_counter() - started)
    tokens = {name: sum(n for _, n in out) for name, out in outputs.items()}
    report: dict[str, Any] = {
        "rows": args.rows,
        "max_new_tokens": new,
        "batch_tokens": args.batch_tokens,
        "threads": args.threads,
        "device": args.device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": platform.processor() or platform.machine(),
        "generated_tokens": tokens,
        "outputs_equal": outputs["sparkinfer"] == outputs["per_row"],
    }
    for name, seconds in timings.items():
        report[name] = {
            "seconds": [round(s, 3) for s in seconds],
            "tokens_per_second_best": round(tokens[name] / min(seconds), 1),
            "tokens_per_second_median": round(tokens[name] / statistics.median(seconds), 1),
        }
    report["speedup_best"] = round(
        report["sparkinfer"]["tokens_per_second_best"] / report["per_row"]["tokens_per_second_best"], 2
    )
    report["speedup_median"] = round(
        report["sparkinfer"]["tokens_per_second_median"] / report["per_row"]["tokens_per_second_median"], 2
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
