"""Plain helpers of the Spark tier (fixtures are in conftest.py): rows, expected values, worker probes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

DOCS_PARQUET = Path(__file__).resolve().parents[1] / "data" / "stdlib_docs_sample.parquet"
NULL_IDS = (-3, -2, -1)  # extra rows whose text is null
LABELS = ["neg", "neu", "pos"]
# The oracles compute in float32 on the CPU; on a CUDA machine device="auto" would run bfloat16 on the
# GPU. Pinning the CPU keeps the arithmetic the same everywhere (tests/gpu is where GPUs are tested).
ON_CPU: dict[str, Any] = {"device": "cpu"}

Vector = npt.NDArray[np.float32]
Probs = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Doc:
    """One input row as the oracles see it (read with pyarrow, not Spark)."""

    module: str
    text: str | None


def expected_extras(row_id: int) -> tuple[str, list[float]]:
    """The two extra columns `docs_df` derives from the id: they must come out of every UDF untouched."""
    return f"row-{row_id}", [row_id / 4, 1.5]


def rows_by_id(rows: list[Any]) -> dict[int, Any]:
    """Collected Rows keyed by their id column (ids are unique)."""
    by_id = {row.id: row for row in rows}
    assert len(by_id) == len(rows), "duplicate ids in the output"
    return by_id


def cosines(got: list[list[float]], want: list[Vector]) -> npt.NDArray[np.float64]:
    """Row-wise cosine similarity of two equally long lists of vectors."""
    a = np.asarray(got, dtype=np.float64)
    b = np.asarray(want, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    similarity: npt.NDArray[np.float64] = (a * b).sum(axis=1) / norms
    return similarity


# ------------------------------------------------------------------------------------ Python-worker probes


@dataclass(frozen=True)
class WorkerState:
    """What a probe saw in one Python worker process.

    Attributes:
        pid: The worker's process id.
        loads: `cache.stats().loads` in that worker.
        hits: `cache.stats().hits` in that worker.
        torch_threads: ``torch.get_num_threads()`` there, or -1 when the worker never imported torch.
        probe_tasks: How many of the probe's tasks ran in that worker.
    """

    pid: int
    loads: int
    hits: int
    torch_threads: int
    probe_tasks: int


_PROBE_TYPE = "struct<pid:bigint,loads:bigint,hits:bigint,torch_threads:int>"


def _probe_udf(reset: bool) -> Any:
    """An iterator UDF like sparkinfer's own (Arrow, or pandas before PySpark 4.1), so that it runs in the
    same pool of Python workers.

    Spark keys its worker pools by the runner's environment, and RDD jobs get another one: an
    ``rdd.mapPartitions`` probe would look at other processes than those that ran sparkinfer.
    """
    from pyspark.sql import functions as F

    # Nested, so that cloudpickle ships it by value rather than as a reference to this module.
    def probe(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        import os
        import sys

        from sparkinfer.engine import cache

        if reset:
            import torch

            cache.clear()
            torch.set_num_threads(2)  # not 1: a predict job must bring it to spark.task.cpus itself
        for batch in batches:
            stats = cache.stats()
            threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else -1
            n = len(batch)
            yield pa.StructArray.from_arrays(
                [
                    pa.array([os.getpid()] * n, pa.int64()),
                    pa.array([stats.loads] * n, pa.int64()),
                    pa.array([stats.hits] * n, pa.int64()),
                    pa.array([threads] * n, pa.int32()),
                ],
                names=["pid", "loads", "hits", "torch_threads"],
            )

    if hasattr(F, "arrow_udf"):
        return F.arrow_udf(probe, _PROBE_TYPE)

    # PySpark < 4.1: a pandas UDF, as sparkinfer's own is there (a struct goes out as a DataFrame).
    def probe_pandas(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        for out in probe(pa.array(batch) for batch in batches):
            yield pd.DataFrame({name: out.field(name).to_pandas() for name in out.type.names})

    return F.pandas_udf(probe_pandas, _PROBE_TYPE)


def probe_workers(spark: Any, *, tasks: int, reset: bool = False) -> dict[int, WorkerState]:
    """Run `tasks` one-row tasks and report the state of each Python worker they ran in, by pid.

    With ``reset=True`` each of those workers first drops its model, zeroes its cache counters and sets
    torch to 2 threads. Spark hands idle workers out first-in first-out, so `tasks` at least as large as
    the pool visits every idle worker.
    """
    rows = (
        spark.range(tasks, numPartitions=tasks)
        .select(_probe_udf(reset)("id").alias("probe"))
        .select("probe.*")
        .collect()
    )
    assert len(rows) == tasks
    states: dict[int, WorkerState] = {}
    for row in rows:
        seen = states.get(row.pid)
        states[row.pid] = WorkerState(
            row.pid, row.loads, row.hits, row.torch_threads, (seen.probe_tasks if seen else 0) + 1
        )
    # A worker gets a second task only once it has gone round the queue, behind every idle worker:
    # if one did, the probe saw the whole pool. If none did, the pool may be larger than `tasks`.
    assert any(s.probe_tasks > 1 for s in states.values()), f"{tasks} tasks ran in {len(states)} workers"
    return states


@contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run an oracle on one torch thread: on a busy 2-core machine two spinning threads are ~10-20x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
