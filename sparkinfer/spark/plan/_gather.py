"""The Spark side of a plan: the texts a job would predict, their sample, their tokens, the cluster's slots,
and the calibration task."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from sparkinfer.errors import SpecError
from sparkinfer.spark import partitioning
from sparkinfer.spark.plan import _estimate
from sparkinfer.spark.plan._result import Calibration, Cluster
from sparkinfer.spec import ModelSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_TEXT = "_sparkinfer_plan_text"
_CALIBRATION_CHUNKS = 8
_MIN_CHUNK_ROWS = 32
DEFAULT_CHUNK_ROWS = 100_000  # Job.chunk_rows' default
_CALIBRATION_SCHEMA = ("rows long, real_tokens long, padded_tokens long, tokenize_seconds double, "
                       "forward_seconds double, model_load_seconds double, task_seconds double, task_cpus int")


@dataclass(frozen=True)
class Target:
    """What a plan reads and predicts: the rows, the texts' columns, the model, the job's layout."""

    df: DataFrame
    label: str
    spec: ModelSpec
    input_cols: tuple[str, ...]
    prompt_template: str | None
    partitions: int | None
    key: str | None
    chunk_rows: int

    @property
    def width(self) -> int:
        """Texts per row."""
        return 1 if self.prompt_template is not None else len(self.input_cols)


def target_of(spark: SparkSession, source: Any, spec: ModelSpec | None, input_cols: tuple[str, ...],
              prompt_template: str | None) -> Target:
    """`plan`'s source (a Job, a table, or a DataFrame with `spec`) as a `Target`, its columns checked."""
    from pyspark.sql import DataFrame

    from sparkinfer.spark import tables
    from sparkinfer.spark.job import Job, _check_input

    if isinstance(source, Job):
        if spec is not None or input_cols != ("text",) or prompt_template is not None:
            raise SpecError("plan: a Job brings its own spec, input_cols and prompt_template; pass none of them "
                            f"(got spec={spec!r}, input_cols={input_cols!r}, prompt_template={prompt_template!r})")
        df = tables.read_table(spark, source.input, source.input_format, delta_engine=source.delta_engine)
        _check_input(df, source)
        return Target(df, source.input, source.spec, source.input_cols, source.prompt_template, source.partitions,
                      source.key, source.chunk_rows)
    if not isinstance(spec, ModelSpec):
        raise SpecError(f"plan: spec must be a ModelSpec for a table or DataFrame source (got {spec!r})")
    if isinstance(source, DataFrame):
        df, label = source, "DataFrame"
    elif isinstance(source, str) and source.strip():
        df, label = tables.read_table(spark, source), source
    else:
        raise SpecError(f"plan: source must be a Job, a table path or name, or a DataFrame (got {source!r})")
    if not input_cols or not all(isinstance(c, str) and c for c in input_cols):
        raise SpecError(f"plan: input_cols must name text columns (got {input_cols!r})")
    target = Target(df, label, spec, input_cols, prompt_template, None, None, DEFAULT_CHUNK_ROWS)
    _check_columns(target)
    return target


def _check_columns(target: Target) -> None:
    from sparkinfer.spark.udf import template_columns

    names = template_columns(target.prompt_template) if target.prompt_template else list(target.input_cols)
    missing = [c for c in names if c not in target.df.columns]
    if missing:
        raise SpecError(f"plan: {target.label} has no column(s) {missing} (got columns {target.df.columns})")
    if target.prompt_template is None:
        types = dict(target.df.dtypes)
        wrong = {c: types[c] for c in target.input_cols if types[c] != "string"}
        if wrong:
            raise SpecError(f"plan: input_cols must be string columns (got {wrong}); cast them, or use "
                            "prompt_template, which casts to string")


def check_options(sample: int, calibrate: int | None, executors: int | None, slots: int | None,
                  gpus: int | None) -> None:
    """Refuse `plan`'s counts when they are not positive ints, and a cluster shape given by halves."""
    for name, value, optional in (("sample", sample, False), ("calibrate", calibrate, True),
                                  ("executors", executors, True), ("slots_per_executor", slots, True),
                                  ("gpus_per_executor", gpus, True)):
        if (value is not None or not optional) and (isinstance(value, bool) or not isinstance(value, int)
                                                   or value < 1):
            raise SpecError(f"plan: {name} must be a positive int{' or None' if optional else ''} (got {value!r})")
    if executors is not None and slots is None and gpus is None:
        raise SpecError(f"plan: executors={executors} needs slots_per_executor or gpus_per_executor "
                        "(--slots-per-executor / --gpus-per-executor): the cluster shape to project for")
    if executors is None and (slots is not None or gpus is not None):
        raise SpecError("plan: slots_per_executor and gpus_per_executor describe executors=E; give it too")


def _texts(df: DataFrame, target: Target) -> DataFrame:
    """One string column of every text the job would predict (each input column's, or the prompt)."""
    from pyspark.sql import functions as F

    from sparkinfer.spark.udf import prompt

    if target.prompt_template is not None:
        return df.select(prompt(target.prompt_template).alias(_TEXT))
    if len(target.input_cols) == 1:
        return df.select(F.col(target.input_cols[0]).alias(_TEXT))
    return df.select(F.explode(F.array(*[F.col(c) for c in target.input_cols])).alias(_TEXT))


def sample_texts(df: DataFrame, target: Target, total: int, n: int, seed: int,
                 rng: np.random.Generator) -> list[str | None]:
    """`n` texts drawn without replacement (every text when there are fewer), collected to the driver.

    ``df.sample`` keeps each text with a probability a little above ``n / total``; the driver then keeps `n`
    of them at random (``limit`` alone would favour the first partitions).
    """
    texts = _texts(df, target)
    if n >= total:
        return [r[0] for r in texts.collect()]
    fraction = min(1.0, (1.2 * n + 20) / total)
    drawn = [r[0] for r in texts.sample(fraction=fraction, seed=seed).limit(2 * n + 20).collect()]
    if len(drawn) <= n:
        return drawn
    return [drawn[i] for i in sorted(rng.choice(len(drawn), size=n, replace=False))]


def tokenize(spec: ModelSpec, strings: list[str]) -> tuple[np.ndarray[Any, np.dtype[np.int64]], int, int, int]:
    """Token counts after truncation, the texts truncated, ``max_length`` and the head's new tokens, from the
    engine's own tokenizer and head over a weightless skeleton of the model (`loading.META`)."""
    from sparkinfer.engine import cache
    from sparkinfer.engine.loading import META

    loaded, _ = cache.get_model(spec, device=META)
    encodings = loaded.head.prepare(strings)
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    truncated = sum(1 for e in encodings if e.overflowing)
    return lengths, truncated, int(loaded.max_length), int(loaded.head.new_tokens)


def cluster_shape(spark: SparkSession, executors: int | None, slots: int | None, gpus: int | None) -> Cluster:
    """The shape given (``executors`` x the fewer of `slots` and `gpus` per executor), else the session's: its
    task slots (`partitioning.task_slots`), in executors of ``spark.executor.cores`` over ``spark.task.cpus``
    (one executor in local mode)."""
    if executors is not None:
        per = min(s for s in (slots, gpus) if s is not None)
        return Cluster(executors, per, gpus, executors * per, "given")
    total = partitioning.task_slots(spark)
    per = total
    cores, cpus = spark.conf.get("spark.executor.cores", None), spark.conf.get("spark.task.cpus", "1")
    master = spark.conf.get("spark.master", "local") or "local"
    if cores and not master.startswith("local"):
        per = max(1, min(total, int(cores) // max(int(cpus or 1), 1)))
    return Cluster(max(1, total // per), per, None, total, "session")


def chunk_share(rows: int, chunk_rows: int | None) -> int:
    """Rows of one chunk, as the job cuts them (about equal hash buckets)."""
    if chunk_rows is None:
        return rows
    return math.ceil(rows / math.ceil(rows / chunk_rows))


def calibrate_task(spark: SparkSession, spec: ModelSpec, strings: list[str]) -> Calibration:
    """Run the model on `strings` in one Spark task, in chunks, and measure each chunk."""
    from sparkinfer.spark.udf import _task_gpu_amount

    chunk = max(_MIN_CHUNK_ROWS, math.ceil(len(strings) / _CALIBRATION_CHUNKS))
    chunk_spec = dataclasses.replace(spec, buffer_rows=chunk)  # same cached model: batching is not its key
    gpu_amount = _task_gpu_amount()

    def measure(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield _calibration_task(chunk_spec, chunk, gpu_amount, batches)

    frame = spark.createDataFrame([(s,) for s in strings], f"{_TEXT} string").coalesce(1)
    started = time.perf_counter()
    measured = [r.asDict() for r in frame.mapInArrow(measure, _CALIBRATION_SCHEMA).collect()]
    seconds = time.perf_counter() - started
    chunk_seconds = np.array([m["tokenize_seconds"] + m["forward_seconds"] for m in measured])
    padded = np.array([m["padded_tokens"] for m in measured], dtype=np.int64)
    steady = _estimate.steady_rate(chunk_seconds, padded)
    idx = list(steady.chunks)
    steady_seconds = float(chunk_seconds[idx].sum())
    load = float(sum(m["model_load_seconds"] for m in measured))
    compute = float(chunk_seconds.sum())
    return Calibration(
        rows=int(sum(m["rows"] for m in measured)), chunks=len(measured), seconds=seconds, model_load_seconds=load,
        compute_seconds=compute, warmup_seconds=steady.warmup_seconds,
        overhead_seconds=max(0.0, seconds - load - compute),
        seconds_per_padded_token=steady.seconds_per_padded_token,
        rows_per_second=sum(measured[i]["rows"] for i in idx) / steady_seconds if steady_seconds > 0 else 0.0,
        tokens_per_second=sum(measured[i]["real_tokens"] for i in idx) / steady_seconds if steady_seconds else 0.0,
        task_cpus=int(measured[0]["task_cpus"]), chunk_seconds=tuple(float(s) for s in chunk_seconds),
        chunk_padded_tokens=tuple(int(p) for p in padded), chunk_rows=tuple(int(m["rows"]) for m in measured),
    )


def _calibration_task(spec: ModelSpec, chunk: int, gpu_amount: float | None,
                      batches: Iterator[pa.RecordBatch]) -> pa.RecordBatch:
    """Executor side: the job's engine path over the task's texts, one engine chunk per `chunk` texts."""
    from pyspark import TaskContext

    from sparkinfer.engine.metrics import Metrics
    from sparkinfer.spark.udf import _run_task

    started = time.perf_counter()
    arrays = [b.column(0) for b in batches if b.num_rows]
    column = pa.concat_arrays(arrays) if arrays else pa.array([], pa.string())
    pieces = [column.slice(i, chunk) for i in range(0, len(column), chunk)]
    chunks: list[Metrics] = []
    for _ in _run_task(spec, iter(pieces), on_metrics=chunks.append, gpu_amount=gpu_amount):
        pass
    context = TaskContext.get()
    cpus = context.cpus() if context is not None else 1
    task_seconds = time.perf_counter() - started
    fields = ("rows", "real_tokens", "padded_tokens", "tokenize_seconds", "forward_seconds", "model_load_seconds")
    data: dict[str, list[Any]] = {f: [getattr(m, f) for m in chunks] for f in fields}
    data["task_seconds"] = [task_seconds] * len(chunks)
    data["task_cpus"] = [cpus] * len(chunks)
    types = {"rows": pa.int64(), "real_tokens": pa.int64(), "padded_tokens": pa.int64(), "task_cpus": pa.int32()}
    return pa.RecordBatch.from_arrays([pa.array(v, types.get(k, pa.float64())) for k, v in data.items()],
                                      names=list(data))
