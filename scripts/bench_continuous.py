"""Continuous vs static generation on CPU: sparkinfer's `ContinuousDecoder` vs `GenerationHead.forward` vs transformers CB.

All three decode greedily, in this process, on ``--threads`` torch threads, with the same random-weight Llama
(built from a config: 8 layers, width 512, 8 query / 4 key-value heads, about 24M parameters, with the
512-token BPE tokenizer of tests/conftest.py) over the same prompts: ``--rows`` real docstrings from
tests/data/stdlib_docs_sample.parquet, tokenized by the head (the end of a prompt over ``--max-length`` tokens
is kept). Outputs end at varied points: the </s> row of the output head is scaled by ``--eos-boost`` so that
greedy rows end with </s> anywhere from step 1 to ``--max-new-tokens``, and ``--stop`` strings (default: the
texts of four frequent tokens) end others (the script prints the distribution of completion lengths).

* **static**: `GenerationHead.forward` (``model.generate`` on a left-padded micro-batch) over the runner's
  micro-batches: length-sorted, ``min(max_batch_size, batch_tokens // longest row)`` rows each, a row
  counting its prompt plus ``max_new_tokens``. A micro-batch decodes until its last row has ended.
* **continuous**: `ContinuousDecoder` with the same ``batch_tokens`` / ``max_batch_size``, prompts submitted
  in input order: a finished row's slot is refilled from the queue at the next step.
* **transformers CB**: ``model.generate_batch`` (transformers' ContinuousBatchingManager, paged attention),
  ``max_requests_per_batch=max_batch_size``, a KV cache sized for the active rows (the default sizes it to
  60 % of free RAM on CPU), without ``--no-hf-cb``. It has no stop strings: its rows run on to </s> or
  ``max_new_tokens``, and the script cuts them afterwards (counting the tokens it computed and those kept).

Static and continuous run ``--repeats`` times, interleaved (best and median reported); tokens/s counts the
generated tokens (the </s> included, as ``completion_tokens`` does); ratios are against the static run of the
same invocation. Wasted decode slots: for static, the rows x decode steps each micro-batch ran minus the
steps each row needed; for continuous, the slots left empty while prompts waited in the queue. Outputs must be
equal (the script prints how many rows differ, and exits 1 if static and continuous do); ``--check-rows``
rows are also checked against plain ``model.generate`` on each row alone.

Example:
    .venv/bin/python scripts/bench_continuous.py --rows 128 --max-new-tokens 64 --max-batch-size 16
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

Result = tuple[str, int, int, str]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256, help="prompt tokens kept (the end of the prompt)")
    parser.add_argument("--batch-tokens", type=int, default=16384)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--eos-boost", type=float, default=2.0)
    parser.add_argument("--stop", action="append", help="a stop string (repeatable); default: four token texts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: as a Spark task with one core)")
    parser.add_argument("--check-rows", type=int, default=12, help="rows checked against per-row model.generate")
    parser.add_argument("--no-hf-cb", action="store_true", help="skip transformers' continuous batching")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO_ROOT))
    import pyarrow.parquet as pq
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    edited = [line for line in _git("status", "--porcelain", "--", "sparkinfer", "scripts").splitlines() if line]
    print(f"commit:  {_git('rev-parse', 'HEAD').strip()}" + (f" + uncommitted: {', '.join(e[3:] for e in edited)}" if edited else ""))
    print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")

    from sparkinfer import ModelSpec
    from sparkinfer.engine import cache
    from sparkinfer.engine.tasks.generation import GenerationHead
    from tests.conftest import DATA

    docs = pq.read_table(DATA / "stdlib_docs_sample.parquet").column("text").to_pylist()
    texts = random.Random(args.seed).sample(docs, min(args.rows, len(docs)))
    new = args.max_new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        path = _build_llama(Path(tmp), eos_boost=args.eos_boost, seed=args.seed)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        stops = tuple(args.stop) if args.stop else _default_stops(tokenizer)
        spec = ModelSpec(path, task="generation", max_new_tokens=new, max_length=args.max_length, stop=stops,
                         batch_tokens=args.batch_tokens, max_batch_size=args.max_batch_size, device="cpu")
        loaded, _ = cache.get_model(spec, device="cpu")
        head = loaded.head
        assert isinstance(head, GenerationHead)
        model = loaded.model
        params = sum(p.numel() for p in model.parameters())
        ids = [e.ids for e in head.prepare(texts)]
        lengths = [len(x) for x in ids]
        print(f"model: random Llama, {params / 1e6:.1f}M parameters, vocab {model.config.vocab_size}, "
              f"attention {model.config._attn_implementation}; stops {stops!r}, eos {head.eos_ids}")
        print(f"prompts: {len(ids)} docstrings, {min(lengths)}..{max(lengths)} tokens (median "
              f"{int(np.median(lengths))}); max_new_tokens {new}, batch_tokens {args.batch_tokens}, "
              f"max_batch_size {args.max_batch_size}")

        systems: dict[str, Callable[[], dict[str, Any]]] = {
            "static": lambda: _static(head, ids, args),
            "continuous": lambda: _continuous(head, ids, args),
        }
        if not args.no_hf_cb:
            systems["transformers CB"] = lambda: _hf_cb(model, tokenizer, head, ids, args, stops)
        for name, system in systems.items():  # warm-up (allocator, kernels, CB's first manager), untimed
            system() if name != "static" else _static(head, ids[: args.max_batch_size], args)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
        names = list(systems)
        for repeat in range(args.repeats):  # interleaved, each repeat in another order: the load drifts
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                runs[name].append(systems[name]())
                last = runs[name][-1]
                print(f"  {name:<16} run {repeat + 1}: " + (f"{last['seconds']:.2f}s" if "seconds" in last
                                                           else last["error"]), file=sys.stderr)
        static = runs["static"][0]["results"]
        _print_lengths(static, new)
        checked = _check_per_row(model, tokenizer, head, ids[: args.check_rows], static, new, stops)
        if "transformers CB" in runs and "results" in runs["transformers CB"][0]:
            raw = runs["transformers CB"][0]["raw"][: args.check_rows]
            reference = [_generate(model, x, new, head.eos_ids) for x in ids[: args.check_rows]]
            cb_checked = sum(r == g for r, g in zip(raw, reference))

    tokens = sum(r[2] for r in static)
    summary: dict[str, Any] = {"rows": len(ids), "generated_tokens": tokens}
    anchor = min(r["seconds"] for r in runs["static"])
    print()
    print(f"{'system':<18}{'best s':>8}{'median s':>10}{'tokens/s':>10}{'vs static':>11}"
          f"{'forwards':>10}{'slot-steps':>12}{'wasted':>9}{'rows differ':>13}")
    for name, got in runs.items():
        if "error" in got[0]:
            print(f"{name:<18} failed: {got[0]['error']}")
            summary[name] = {"error": got[0]["error"]}
            continue
        best = min(r["seconds"] for r in got)
        median = statistics.median(r["seconds"] for r in got)
        first = got[0]
        differ = sum(a != b for a, b in zip(first["results"], static))
        _row(name, best, median, tokens / best, anchor / best, first["forwards"], first["slot_steps"],
             first["wasted"], differ)
        summary[name] = {k: v for k, v in first.items() if k not in ("results", "raw")} | {
            "best_seconds": best, "median_seconds": median, "tokens_per_second": tokens / best,
            "speedup_vs_static": anchor / best, "rows_differ_from_static": differ,
            "all_seconds": [r["seconds"] for r in got],
        }
    if "computed_tokens" in summary.get("transformers CB", {}):
        hf = summary["transformers CB"]
        print(f"  transformers CB computed {hf['computed_tokens']} tokens ({hf['computed_tokens'] / hf['best_seconds']:.0f}"
              f"/s) for the {tokens} kept after the stop strings (it has none); its raw tokens equal per-row "
              f"model.generate on {cb_checked} of {args.check_rows} checked rows")
        hf["raw_equal_per_row_generate"] = f"{cb_checked}/{args.check_rows}"
    print(f"\nstatic vs per-row model.generate on the first {checked[1]} rows: {checked[0]} equal")
    differ = summary["continuous"]["rows_differ_from_static"]
    print(f"continuous vs static: {'all outputs equal' if not differ else f'{differ} rows differ'}")
    summary["static_equal_per_row_generate"] = f"{checked[0]}/{checked[1]}"
    print(json.dumps(summary, indent=None, default=float))
    return 1 if differ or checked[0] != checked[1] else 0


# ---------------------------------------------------------------------------------------------- systems


def _static(head: Any, ids: list[list[int]], args: argparse.Namespace) -> dict[str, Any]:
    """GenerationHead.forward over the runner's length-sorted micro-batches."""
    import torch

    from sparkinfer.engine.batching import pad, plan_batches

    lengths = np.asarray([len(x) for x in ids], dtype=np.int64)
    results: list[Any] = [None] * len(ids)
    forwards = slot_steps = needed = 0
    started = time.perf_counter()
    with torch.inference_mode():
        for rows in plan_batches(lengths + head.new_tokens, batch_tokens=args.batch_tokens,
                                 max_batch_size=args.max_batch_size):
            input_ids, mask = pad(ids, rows, pad_id=head.pad_id, side="left")
            out = head.forward(torch.from_numpy(input_ids), torch.from_numpy(mask))
            steps = max(r[2] for r in out) - 1  # decode steps after the prefill: until the last row ended
            forwards += 1 + steps
            slot_steps += len(rows) * steps
            needed += sum(r[2] - 1 for r in out)
            for row, result in zip(rows, out):
                results[int(row)] = tuple(result)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "results": results, "forwards": forwards, "slot_steps": slot_steps,
            "wasted": slot_steps - needed, "micro_batches": len(plan_batches(
                lengths + head.new_tokens, batch_tokens=args.batch_tokens, max_batch_size=args.max_batch_size))}


def _continuous(head: Any, ids: list[list[int]], args: argparse.Namespace) -> dict[str, Any]:
    from sparkinfer.engine.continuous import ContinuousDecoder

    decoder = ContinuousDecoder(head, batch_tokens=args.batch_tokens, max_batch_size=args.max_batch_size)
    finished: dict[Any, Any] = {}
    started = time.perf_counter()
    for i, x in enumerate(ids):
        decoder.submit(i, x)
    while decoder.busy:
        finished.update(decoder.step())
    seconds = time.perf_counter() - started
    results = [finished[i].result for i in range(len(ids))]
    stats = decoder.stats
    return {"seconds": seconds, "results": results, "forwards": stats.forward_passes, "slot_steps": stats.slot_steps,
            "wasted": stats.wasted_slot_steps, "prefills": stats.prefills, "decode_steps": stats.decode_steps,
            "refills": stats.refills, "prefill_tokens": stats.prefill_tokens}


def _hf_cb(model: Any, tokenizer: Any, head: Any, ids: list[list[int]], args: argparse.Namespace,
           stops: tuple[str, ...]) -> dict[str, Any]:
    """transformers' generate_batch on the same prompts (a new manager per call, as generate_batch makes); its raw
    rows cut by the stop strings afterwards, untimed."""
    import torch
    import transformers

    new = args.max_new_tokens
    page = 256
    per_row = -(-(max(len(x) for x in ids) + new) // page)
    config = transformers.ContinuousBatchingConfig(
        page_size=page, num_blocks=per_row * args.max_batch_size + 4, max_requests_per_batch=args.max_batch_size,
        max_batch_tokens=min(args.batch_tokens, 4096),
    )
    generation = transformers.GenerationConfig(max_new_tokens=new, do_sample=False, eos_token_id=list(head.eos_ids),
                                               pad_token_id=head.pad_id)
    attention = model.config._attn_implementation
    try:
        with torch.inference_mode():
            started = time.perf_counter()
            out = model.generate_batch(inputs=ids, generation_config=generation, continuous_batching_config=config)
            seconds = time.perf_counter() - started
    except Exception as exc:  # a benchmark reports what failed instead of stopping
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        model.config._attn_implementation = attention  # in case generate_batch left its paged variant set
    by_prompt = sorted(out.values(), key=lambda o: int(str(o.request_id).rsplit("_", 1)[-1]))
    raw = [list(o.generated_tokens) for o in by_prompt]
    assert all(list(o.prompt_ids) == x for o, x in zip(by_prompt, ids)), "generate_batch reordered the prompts"
    return {"seconds": seconds, "raw": raw, "forwards": None, "slot_steps": None, "wasted": None,
            "results": [_cut_row(tokenizer, x, r, head.eos_ids, stops, new) for x, r in zip(ids, raw)],
            "computed_tokens": sum(len(r) for r in raw)}


# ---------------------------------------------------------------------------------------------- helpers


def _build_llama(directory: Path, *, eos_boost: float, seed: int) -> str:
    """A random Llama of about 24M parameters with the tests' 512-token BPE tokenizer."""
    import torch
    import transformers

    from tests.conftest import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(directory)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024, bos_token_id=1, eos_token_id=1,
        pad_token_id=0, initializer_range=0.05,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        model.lm_head.weight[1] *= eos_boost  # </s>: rows end anywhere from step 1 to max_new_tokens
    model.save_pretrained(directory)
    return str(directory)


def _default_stops(tokenizer: Any) -> tuple[str, ...]:
    """The texts of four alphabetic tokens of 3+ characters: each greedy step emits one with a small chance."""
    texts = [tokenizer.decode([i]) for i in range(len(tokenizer))]
    words = [t for t in texts if len(t.strip()) >= 3 and t.strip().isalpha()]
    return tuple(words[40:44])


def _generate(model: Any, ids: list[int], new: int, eos: tuple[int, ...]) -> list[int]:
    """Plain model.generate on one row alone (no padding): its tokens up to and including the first EOS."""
    import torch

    with torch.inference_mode():
        out: list[int] = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                        dtype=torch.long), max_new_tokens=new, do_sample=False)[0, len(ids):].tolist()
    end = next((i for i, t in enumerate(out) if t in eos), None)
    return out if end is None else out[: end + 1]


def _cut_row(tokenizer: Any, ids: list[int], generated: list[int], eos: tuple[int, ...], stops: tuple[str, ...],
             new: int) -> Result:
    """The static head's answer for a row whose raw greedy tokens are `generated`: the first prefix whose text
    holds a stop string ends it (decoding every prefix, as a reference independent of the head's code)."""
    generated = generated[:new]
    for n in range(1, len(generated) + 1):
        if generated[n - 1] in eos:
            return (tokenizer.decode(generated[: n - 1], skip_special_tokens=True), len(ids), n, "stop")
        text = tokenizer.decode(generated[:n], skip_special_tokens=True)
        hits = [text.find(s) for s in stops if s in text]
        if hits:
            return (text[: min(hits)], len(ids), n, "stop")
    return (tokenizer.decode(generated, skip_special_tokens=True), len(ids), len(generated), "length")


def _check_per_row(model: Any, tokenizer: Any, head: Any, ids: list[list[int]], static: list[Any], new: int,
                   stops: tuple[str, ...]) -> tuple[int, int]:
    expected = [_cut_row(tokenizer, x, _generate(model, x, new, head.eos_ids), head.eos_ids, stops, new) for x in ids]
    return sum(a == b for a, b in zip(expected, static)), len(ids)


def _print_lengths(results: list[Result], new: int) -> None:
    lengths = [r[2] for r in results]
    reasons = Counter(r[3] for r in results)
    edges = [1, 2, 5, 9, 17, 33, 65, 129, 257]
    bins = [(lo, min(hi - 1, new - 1)) for lo, hi in zip(edges, edges[1:]) if lo < new] + [(new, new)]
    counts = [sum(lo <= n <= hi for n in lengths) for lo, hi in bins]
    labels = [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in bins]
    print(f"completion tokens: mean {np.mean(lengths):.1f}, median {int(np.median(lengths))}; "
          + ", ".join(f"{label}: {count}" for label, count in zip(labels, counts))
          + f"; finish reasons {dict(reasons)}")


def _row(name: str, best: float, median: float, rate: float, ratio: float, forwards: int | None,
         slot_steps: int | None, wasted: int | None, differ: int) -> None:
    def show(value: int | None) -> str:
        return "-" if value is None else str(value)

    print(f"{name:<18}{best:>8.2f}{median:>10.2f}{rate:>10.1f}{ratio:>10.2f}x{show(forwards):>10}"
          f"{show(slot_steps):>12}{show(wasted):>9}{differ:>13}")


def _git(*command: str) -> str:
    try:
        return subprocess.run(["git", *command], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    except OSError:
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
