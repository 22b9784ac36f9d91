"""Constrained vs unconstrained decoding on CPU: the tokens/s cost of typed extraction's grammar masks.

Both decode greedily through ``sparkinfer.engine.run`` (in this process, on ``--threads`` torch threads) with
the same random-weight GPT-2 built from a config (``--layers`` 12, ``--width`` 768: about 110M parameters with
the default vocabulary; nothing is downloaded), the same prompts and the same ``--max-new-tokens``:

* **unconstrained** (the anchor): ``task="generation"``, ``return_details=True``.
* **constrained**: ``task="extraction"`` under `SCHEMA` (a nested struct, an array with maxItems, an enum, an
  integer range, a boolean, nullable strings, strings with maxLength); reported too: ``Metrics.mask_seconds``
  per generated token (µs), its share of ``forward_seconds``, and the rows' statuses.

Generated tokens are counted the same way for both: the script wraps each bound head's ``_generate`` and sums
its rows' ``completion_tokens`` (the end-of-sequence token included; checked against the anchor's output
column). Re-tokenizing ``raw`` would miscount a grammar's non-canonical tokenizations. Slot-steps (rows x
decode steps of each ``generate`` call) also count the rows that ended before their micro-batch did, so
slot-steps/s compares the cost of a step apart from how soon rows end.

The tokenizer is a byte-level BPE of ``--vocab`` tokens (a realistic vocabulary matters for mask cost),
trained in a few seconds on tests/data/stdlib_docs_sample.parquet plus the running Python's top-level stdlib
modules. Prompts: "Extract from this text: " + the first 300 characters of ``--rows`` docstrings, from
../shared/data/stdlib_docs.parquet when it exists, else the fixture. Each system is warmed up once, then run
``--repeats`` times, interleaved. Prints the setup, markdown rows for BENCHMARKS.md (ratios against the
anchor of the same run) and one JSON object.

Example:
    .venv/bin/python scripts/bench_extract.py --rows 64 --max-new-tokens 128 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

_NULLABLE = {"type": ["string", "null"], "maxLength": 40}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "maxLength": 80},
        "kind": {"enum": ["function", "class", "method", "module", "constant", "other"]},
        "arguments": {"type": "array", "maxItems": 4, "items": {
            "type": "object", "required": ["name", "type"],
            "properties": {"name": {"type": "string", "maxLength": 24}, "type": _NULLABLE}}},
        "returns": {"type": "object", "required": ["type", "may_be_none"],
                    "properties": {"type": _NULLABLE, "may_be_none": {"type": "boolean"}}},
        "examples": {"type": "integer", "minimum": 0, "maximum": 10},
        "deprecated": {"type": "boolean"},
        "see_also": _NULLABLE,
    },
    "required": ["summary", "kind", "arguments", "returns", "examples", "deprecated", "see_also"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: as a Spark task with one core)")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768, help="GPT-2 n_embd (heads of 64)")
    parser.add_argument("--vocab", type=int, default=32768, help="BPE vocabulary size to train")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, str(REPO_ROOT))
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    import transformers

    from sparkinfer import ModelSpec
    from sparkinfer.engine import cache, run
    from tests.conftest import DATA

    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    edited = [line for line in _git("status", "--porcelain", "--", "sparkinfer", "scripts").splitlines() if line]
    print(f"commit:  {_git('rev-parse', '--short', 'HEAD').strip()}"
          + (f" + uncommitted: {', '.join(e[3:] for e in edited)}" if edited else ""))
    print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} threads, {_cpu_model()}")

    shared = REPO_ROOT.parent / "shared" / "data" / "stdlib_docs.parquet"
    source = shared if shared.exists() else DATA / "stdlib_docs_sample.parquet"
    docs = pq.read_table(source).column("text").to_pylist()
    picked = random.Random(args.seed).sample(docs, min(args.rows, len(docs)))
    prompts = [f"Extract from this text: {doc[:300]}" for doc in picked]
    new = args.max_new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        path, params, vocab, seconds = _build_gpt2(Path(tmp), args)
        print(f"model: random GPT-2, {args.layers} layers, width {args.width}, {params / 1e6:.1f}M parameters, "
              f"BPE vocab {vocab} (trained in {seconds:.1f}s)")
        print(f"prompts: {len(prompts)} from {source.name}; max_new_tokens {new}, batch_tokens {args.batch_tokens}")
        common = dict(max_new_tokens=new, batch_tokens=args.batch_tokens, device="cpu")
        free = ModelSpec(path, task="generation", return_details=True, **common)
        typed = ModelSpec(path, task="extraction", schema=json.dumps(SCHEMA), **common)
        texts = pa.array(prompts, pa.string())
        specs = {"unconstrained": free, "constrained": typed}
        calls: dict[str, list[tuple[int, int, int]]] = {name: [] for name in specs}
        for name, spec in specs.items():  # the runner reuses these cached bindings
            _count_tokens(cache.get_model(spec, device="cpu")[0].head, calls[name])

        def timed(name: str) -> dict[str, Any]:
            calls[name].clear()
            started = time.perf_counter()
            out, metrics = run(specs[name], texts)
            wall = time.perf_counter() - started
            rows = out.to_pylist()
            got = {"seconds": wall, "metrics": metrics, "tokens": sum(c[2] for c in calls[name]),
                   "slot_steps": sum(c[0] * c[1] for c in calls[name])}
            if name == "unconstrained":
                assert got["tokens"] == sum(r["completion_tokens"] for r in rows), "the wrap miscounted"
            else:
                got |= {"raw": rows[0]["raw"], "statuses": Counter(r["status"] for r in rows)}
            return got

        for name in specs:  # warm-up: allocator, kernels, the grammar's executor threads
            timed(name)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in specs}
        for repeat in range(args.repeats):  # interleaved, alternating order: the load drifts
            for name in list(specs)[:: 1 if repeat % 2 == 0 else -1]:
                runs[name].append(timed(name))
                print(f"  {name:<14} run {repeat + 1}: {runs[name][-1]['seconds']:.2f}s", file=sys.stderr)

    summary: dict[str, Any] = {"rows": len(prompts), "max_new_tokens": new, "parameters": params, "vocab": vocab,
                               "threads": args.threads, "torch": torch.__version__, "cpu": _cpu_model()}
    for name, got in runs.items():
        best, median = min(r["seconds"] for r in got), statistics.median(r["seconds"] for r in got)
        tokens, slots = got[0]["tokens"], got[0]["slot_steps"]
        summary[name] = {"tokens": tokens, "slot_steps": slots, "best_seconds": best, "median_seconds": median,
                         "tokens_per_second": tokens / best, "tokens_per_second_median": tokens / median,
                         "slot_steps_per_second": slots / best, "all_seconds": [round(r["seconds"], 3) for r in got]}
    anchor, typed_run = summary["unconstrained"], summary["constrained"]
    for key in ("tokens_per_second", "tokens_per_second_median", "slot_steps_per_second"):
        typed_run[f"{key}_vs_unconstrained"] = typed_run[key] / anchor[key]
    constrained = runs["constrained"]
    mask = [r["metrics"].mask_seconds for r in constrained]
    typed_run["mask_us_per_token"] = 1e6 * statistics.median(mask) / typed_run["tokens"]
    typed_run["mask_share_of_forward"] = statistics.median(m / r["metrics"].forward_seconds
                                                           for m, r in zip(mask, constrained))
    typed_run["statuses"] = {s: constrained[0]["statuses"].get(s, 0) for s in ("ok", "truncated", "invalid")}
    typed_run["micro_batches"] = constrained[0]["metrics"].micro_batches
    print(f"first row's raw output: {constrained[0]['raw'][:160]!r}")
    print("slot-steps: rows x decode steps of each generate call (a row that ended early still takes its slot)\n")
    header = ["decoding", "tokens", "slot-steps", "best s", "median s", "tokens/s (best)", "tokens/s (median)",
              "vs unconstrained (best / median)", "slot-steps/s vs unconstrained", "mask µs/token",
              "mask share of forward", "ok / truncated / invalid"]
    print("| " + " | ".join(header) + " |")
    print("| --- |" + " ---: |" * (len(header) - 2) + " --- |")
    for name, got in (("unconstrained (anchor)", anchor), ("constrained (extraction)", typed_run)):
        rest = ["1.00x / 1.00x", "1.00x", "-", "-", "-"] if got is anchor else [
            f"**{got['tokens_per_second_vs_unconstrained']:.2f}x** / "
            f"{got['tokens_per_second_median_vs_unconstrained']:.2f}x",
            f"{got['slot_steps_per_second_vs_unconstrained']:.2f}x", f"{got['mask_us_per_token']:.0f}",
            f"{100 * got['mask_share_of_forward']:.1f}%", " / ".join(str(v) for v in got["statuses"].values())]
        print(f"| {name} | {got['tokens']} | {got['slot_steps']} | {got['best_seconds']:.2f} | "
              f"{got['median_seconds']:.2f} | {got['tokens_per_second']:.1f} | {got['tokens_per_second_median']:.1f} | "
              + " | ".join(rest) + " |")
    print(json.dumps(summary, default=float))
    return 0


def _count_tokens(head: Any, log: list[tuple[int, int, int]]) -> None:
    """Wrap this head's ``_generate`` to log (rows, decode steps, completion tokens) of each ``generate`` call."""
    generate = head._generate

    def counting(*args: Any, **kwargs: Any) -> Any:
        results, complete, mask = generate(*args, **kwargs)
        counts = [r[2] for r in results]
        log.append((len(counts), max(counts, default=0), sum(counts)))
        return results, complete, mask

    head._generate = counting


def _build_gpt2(directory: Path, args: argparse.Namespace) -> tuple[str, int, int, float]:
    """A byte-level BPE trained here and a random GPT-2 over it, saved to `directory`."""
    import pyarrow.parquet as pq
    import tokenizers
    import torch
    import transformers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from tests.conftest import DATA

    started = time.perf_counter()
    stdlib = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    corpus = [p.read_text(errors="replace") for p in stdlib]
    corpus += pq.read_table(DATA / "stdlib_docs_sample.parquet").column("text").to_pylist()
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=args.vocab, special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                                     unk_token="<unk>", model_max_length=1024)
    tokenizer.save_pretrained(directory)
    seconds = time.perf_counter() - started
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=1024, n_embd=args.width,
                                     n_layer=args.layers, n_head=max(1, args.width // 64), bos_token_id=1,
                                     eos_token_id=1, pad_token_id=0)
    torch.manual_seed(args.seed)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(directory)
    return str(directory), sum(p.numel() for p in model.parameters()), len(tokenizer), seconds


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*command: str) -> str:
    try:
        return subprocess.run(["git", *command], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    except OSError:
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
