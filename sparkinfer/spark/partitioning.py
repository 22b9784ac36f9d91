"""How many Spark tasks a prediction should run as: every task slot busy, a few waves, full buffers.

Spark splits a file input by bytes (``spark.sql.files.maxPartitionBytes``, 128 MiB): a 100 MB text table is
one task, however many executors wait. Inference costs per token, not per byte, so the job (and
`repartition_for_inference`) chooses the task count from the row count and the cluster's task slots:

* at least one task per slot, so that no slot idles;
* up to `WAVES` tasks per slot, so that a slow task (long texts, a slow node) delays the end by a fraction
  of a wave rather than by a whole task;
* no more tasks than there are `buffer_rows`-sized pieces of rows beyond that, since a task smaller than
  ``ModelSpec.buffer_rows`` sorts fewer rows together and pads more.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sparkinfer.errors import SpecError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("sparkinfer")

WAVES = 3  # tasks per slot, at most, for balance
FEW = 0.5  # a prediction stage running fewer tasks than this share of the slots gets a warning (`progress.Watch`)


@dataclass(frozen=True)
class Partitioning:
    """A partition count and why.

    Attributes:
        partitions: Tasks to predict in.
        slots: Task slots of the cluster (cores over ``spark.task.cpus``, capped by GPUs over their amount).
        rows: Rows the count was chosen for.
        input_partitions: The input's own partition count (None where it is not known: Spark Connect).
        chosen_by: ``"auto"`` (this module), ``"partitions"`` (given by the user), or ``"input"`` (the input's
            own partitioning already kept every slot busy, so it was kept without a shuffle).
    """

    partitions: int
    slots: int
    rows: int
    input_partitions: int | None
    chosen_by: str

    @property
    def repartition(self) -> bool:
        """Whether the rows are shuffled into `partitions` tasks (else kept as the input has them)."""
        return self.chosen_by != "input"

    def to_dict(self) -> dict[str, Any]:
        """The choice as JSON-able data, for the run report."""
        return asdict(self)


def partitions_for(rows: int, slots: int, buffer_rows: int, *, waves: int = WAVES) -> int:
    """The task count for `rows` rows on `slots` task slots (see the module docstring).

    >>> partitions_for(19_444, 2, 4096)   # 4 full buffers, between 1 and 3 waves
    4
    >>> partitions_for(1_000, 8, 4096)    # fewer rows than a buffer: one task per slot anyway
    8
    >>> partitions_for(10**9, 100, 4096)  # 3 waves
    300
    """
    for name, value in (("rows", rows), ("slots", slots), ("buffer_rows", buffer_rows), ("waves", waves)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "rows" else 1):
            raise SpecError(f"partitions_for: {name} must be a {'non-negative' if name == 'rows' else 'positive'} "
                            f"int (got {value!r})")
    full = max(1, rows // buffer_rows)
    return max(1, min(rows, max(slots, min(slots * waves, full))))


def task_slots(spark: SparkSession) -> int:
    """How many tasks the cluster runs at once: cores over ``spark.task.cpus``, capped by its GPUs.

    On a classic session from the SparkContext's default parallelism (its executors' cores); on Spark
    Connect, which has no SparkContext, from the partitions of a ``spark.range`` (which Spark sizes to the
    same number), counted by a small job.
    """
    conf = spark.conf
    cpus = int(conf.get("spark.task.cpus", "1") or 1)
    cores = _default_parallelism(spark)
    slots = max(1, cores // max(cpus, 1))
    gpu_task = conf.get("spark.task.resource.gpu.amount", None)
    gpu_executor = conf.get("spark.executor.resource.gpu.amount", None)
    executor_cores = conf.get("spark.executor.cores", None)
    if gpu_task and gpu_executor and executor_cores:
        executors = max(1, cores // int(executor_cores))
        slots = min(slots, max(1, int(executors * float(gpu_executor) / float(gpu_task))))
    return slots


def _default_parallelism(spark: SparkSession) -> int:
    from pyspark.sql import functions as F

    try:
        return int(spark.sparkContext.defaultParallelism)
    except Exception:  # Spark Connect: no SparkContext (the error's type differs across versions)
        ids = spark.range(0, 1 << 16).select(F.spark_partition_id().alias("p")).distinct()
        return max(1, int(ids.count()))


def input_partitions(df: DataFrame) -> int | None:
    """`df`'s partition count, or None on Spark Connect (which cannot tell without running a job)."""
    try:
        return int(df.rdd.getNumPartitions())
    except Exception:  # Connect DataFrames have no .rdd
        return None


def choose(df: DataFrame, rows: int, buffer_rows: int, *, partitions: int | None = None,
           slots: int | None = None) -> Partitioning:
    """The partitioning to predict `df` (of `rows` rows) with: `partitions` when given, else automatic.

    The input's own partitioning is kept (no shuffle) when it already has at least one task per slot and at
    most `WAVES` per slot for full buffers' worth of rows: repartitioning would only cost a shuffle.
    """
    spark = df.sparkSession
    slots = task_slots(spark) if slots is None else slots
    current = input_partitions(df)
    if partitions is not None:
        return Partitioning(partitions, slots, rows, current, "partitions")
    target = partitions_for(rows, slots, buffer_rows)
    if current is not None and min(target, slots) <= current <= max(target, slots * WAVES):
        return Partitioning(current, slots, rows, current, "input")
    return Partitioning(target, slots, rows, current, "auto")


def repartition_for_inference(df: DataFrame, *, rows: int | None = None, buffer_rows: int = 4096,
                              slots: int | None = None) -> DataFrame:
    """`df` spread over enough tasks to keep every task slot of the cluster busy while a model runs.

    A file smaller than ``spark.sql.files.maxPartitionBytes`` (128 MiB) is read as one partition, so a
    ``withColumn("emb", si.embed(...))`` over it would run in one task on one executor. Call this before
    adding prediction columns::

        df = si.repartition_for_inference(spark.read.parquet(path))
        df = df.withColumn("emb", si.embed("text", model))

    Args:
        df: The rows to predict.
        rows: Their count, when known (else counted: one cheap job on Parquet and Delta).
        buffer_rows: The ``ModelSpec.buffer_rows`` of the model that will run (the default is the spec's).
        slots: Task slots to plan for (default: the session's, see `task_slots`).

    Returns:
        `df` itself when its partitioning already suits the cluster, else ``df.repartition(n)`` (a
        round-robin shuffle, so the tasks get about equal rows).
    """
    choice = choose(df, df.count() if rows is None else rows, buffer_rows, slots=slots)
    log.info("sparkinfer: %s", describe(choice))
    return df.repartition(choice.partitions) if choice.repartition else df


def describe(choice: Partitioning) -> str:
    how = {"auto": "chosen for", "partitions": "as given, for", "input": "the input's own, kept for"}[choice.chosen_by]
    return (f"{choice.partitions} partition(s), {how} {choice.rows} row(s) on {choice.slots} task slot(s) "
            f"(input: {choice.input_partitions if choice.input_partitions is not None else 'unknown'})")
