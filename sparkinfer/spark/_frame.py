"""Predict whole DataFrames with the engine's metrics carried in the rows, for jobs and their run reports.

Metrics travel with the data, not through SparkContext accumulators (which Spark Connect does not have):
one ``mapInArrow`` adds the prediction columns and a struct column `METRICS_COLUMN` that is null on every
row except one per engine call, which carries that call's `Metrics`. A job attaches a
``pyspark.sql.Observation`` summing that column to the very action that writes the rows, drops the column
before writing, and reads the totals on the driver: no second pass, no cached copy, and only successful task
attempts count.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType

from sparkinfer.engine import sources
from sparkinfer.engine.metrics import MAXIMA, Metrics
from sparkinfer.engine.runner import output_type
from sparkinfer.errors import SpecError
from sparkinfer.spark.progress import sending
from sparkinfer.spark.udf import _check_dependencies, _run_task, _task_gpu_amount
from sparkinfer.spec import ModelSpec

log = logging.getLogger("sparkinfer")

METRICS_COLUMN = "_sparkinfer_metrics"
ROWS_METRIC = "_rows"


def metrics_type() -> pa.DataType:
    """The Arrow struct of `Metrics`' counters: int64 for ints, float64 for floats."""
    arrow = {"int": pa.int64(), "float": pa.float64()}
    return pa.struct([(f.name, arrow[_kind(f)]) for f in dataclasses.fields(Metrics)])


def _kind(field: dataclasses.Field[Any]) -> str:
    # Annotations are strings under `from __future__ import annotations`.
    return field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))


def predict_columns(
    df: DataFrame, unpinned: ModelSpec, outputs: Sequence[tuple[str, str]], *, progress: str | None = None
) -> DataFrame:
    """`df` with one prediction column per (input, output) pair, plus `METRICS_COLUMN`.

    Every input column goes through the same model in one stream: an Arrow batch of n rows and k input
    columns becomes k*n texts, length-sorted together. An output named like an existing column replaces it
    in place (``withColumn`` semantics). With `progress` (a `progress.Progress` address) the tasks report
    the rows they finish to the driver as they go. A remote model is pinned here unless it is already
    (`sources.pin`).

    Raises:
        SpecError: When an input column is missing or not a string column.
    """
    from pyspark.sql.pandas.types import from_arrow_type

    # The job pins the spec (and fingerprints it) before it gets here; a remote model is pinned once.
    spec = unpinned if unpinned.revision is not None else sources.pin(unpinned)
    _check_dependencies(spec)
    for source, _ in outputs:
        if source not in df.columns:
            raise SpecError(f"input column {source!r} is not in the table (got columns {df.columns})")
        kind = df.schema[source].dataType.typeName()
        if kind != "string":
            raise SpecError(
                f"input column {source!r} must be a string column (got {kind}); cast it first, "
                f"e.g. df.withColumn({source!r}, F.col({source!r}).cast('string'))"
            )
    prediction = from_arrow_type(output_type(spec))
    targets = [target for _, target in outputs]
    fields = [StructField(f.name, prediction) if f.name in targets else f for f in df.schema.fields]
    fields += [StructField(t, prediction) for t in targets if t not in df.columns]
    fields.append(StructField(METRICS_COLUMN, from_arrow_type(metrics_type())))
    schema = StructType(fields)
    plan = _Plan(spec, tuple(s for s, _ in outputs), tuple(targets), tuple(schema.names), _task_gpu_amount(),
                 progress)

    def predict_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield from _predict_task(plan, batches)

    return df.mapInArrow(predict_batches, schema)


def metric_columns() -> list[Column]:
    """Aggregates for ``DataFrame.observe``: the row count and the sum (or maximum) of every counter."""
    sums = [
        F.coalesce((F.max if f.name in MAXIMA else F.sum)(f"{METRICS_COLUMN}.{f.name}"), F.lit(0)).alias(f.name)
        for f in dataclasses.fields(Metrics)
    ]
    return [F.count(F.lit(1)).alias(ROWS_METRIC), *sums]


def observed_metrics(observed: dict[str, Any]) -> tuple[int, Metrics]:
    """The row count and the summed `Metrics` from an Observation's result (see `metric_columns`)."""
    cast = {"int": int, "float": float}
    values = {f.name: cast[_kind(f)](observed[f.name]) for f in dataclasses.fields(Metrics)}
    return int(observed[ROWS_METRIC]), Metrics(**values)


@dataclasses.dataclass(frozen=True)
class _Plan:
    spec: ModelSpec
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    names: tuple[str, ...]
    gpu_amount: float | None
    progress: str | None = None


def _predict_task(plan: _Plan, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor side: run the engine over the input columns, re-attach the other columns, carry metrics."""
    held: deque[pa.RecordBatch] = deque()
    pending: list[Metrics] = []
    width = len(plan.sources)

    def texts() -> Iterator[pa.Array]:
        for batch in batches:
            held.append(batch)
            columns = [batch.column(name).cast(pa.large_string()) for name in plan.sources]
            yield pa.concat_arrays(columns) if width > 1 else columns[0]

    # The engine yields one output per input array, in order, after it has consumed that array: the batch
    # it belongs to is always the oldest one held.
    with sending(plan.progress) as sender:
        for out in _run_task(plan.spec, texts(), on_metrics=pending.append, gpu_amount=plan.gpu_amount,
                             on_progress=sender):
            yield _joined(plan, held.popleft(), out, pending)
    if pending:  # only when the task's last batches were empty: nothing left to carry them
        log.warning("sparkinfer: metrics of %d engine call(s) had no row to travel with", len(pending))


def _joined(plan: _Plan, batch: pa.RecordBatch, out: pa.Array, pending: list[Metrics]) -> pa.RecordBatch:
    """The input `batch` with its predictions `out` and the metrics waiting to travel (`pending`, emptied)."""
    n = batch.num_rows
    predictions = {t: out.slice(i * n, n) for i, t in enumerate(plan.targets)}
    carried = sum(pending, Metrics()) if pending and n else None
    if carried is not None:
        pending.clear()
    columns = [predictions[name] if name in predictions else batch.column(name) for name in plan.names[:-1]]
    columns.append(_metrics_array(carried, n))
    return pa.RecordBatch.from_arrays(columns, names=list(plan.names))


def _metrics_array(metrics: Metrics | None, rows: int) -> pa.Array:
    first = [dataclasses.asdict(metrics)] if metrics is not None else []
    return pa.array(first + [None] * (rows - len(first)), type=metrics_type())
