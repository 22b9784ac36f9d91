"""Per-worker behaviour: the model loads once per Python worker, and torch uses spark.task.cpus threads."""

from __future__ import annotations

from typing import Any

import pytest

import sparkinfer as si
from tests.spark.helpers import ON_CPU, WorkerState, probe_workers

pytestmark = pytest.mark.spark

PARTITIONS = 6
RUNS = 2
# More probe tasks than Python workers: Spark hands idle workers out first-in first-out, so every idle
# worker of the pool runs at least one probe task (local[2] keeps two, rarely three).
PROBE_TASKS = 8


@pytest.fixture(scope="module")
def after_predict(spark: Any, tiny_classifier: str) -> tuple[dict[int, WorkerState], list[list[Any]]]:
    """Reset every worker, run the same predict job twice over 6 partitions, then probe the workers.

    Each partition holds 8 rows, far below ``buffer_rows``, so each task makes exactly one cache lookup:
    a load or a hit. Returns the workers' states after the runs and the rows of each run.
    """
    probe_workers(spark, tasks=PROBE_TASKS, reset=True)
    df = spark.range(8 * PARTITIONS, numPartitions=PARTITIONS).selectExpr(
        "id", "concat('document number ', id) AS text"
    )
    column = si.classify("text", tiny_classifier, **ON_CPU)
    runs = [sorted(df.select("id", column.alias("pred")).collect()) for _ in range(RUNS)]
    return probe_workers(spark, tasks=PROBE_TASKS), runs


def test_each_worker_loads_the_model_at_most_once(
    after_predict: tuple[dict[int, WorkerState], list[list[Any]]],
) -> None:
    states, runs = after_predict
    assert [len(rows) for rows in runs] == [8 * PARTITIONS] * RUNS and runs[0] == runs[1]
    assert all(row.pred is not None for row in runs[0])
    served = {pid: s for pid, s in states.items() if s.loads + s.hits > 0}
    # Every cache lookup of the 12 tasks is accounted for: no worker was missed, none counted twice.
    assert sum(s.loads + s.hits for s in served.values()) == RUNS * PARTITIONS, states
    assert all(s.loads == 1 for s in served.values()), states
    # 12 tasks on 2 slots: workers are reused, and at least one answered later tasks from its cache.
    assert max(s.hits for s in served.values()) >= 1, states


def test_torch_threads_follow_task_cpus(
    spark: Any, after_predict: tuple[dict[int, WorkerState], list[list[Any]]]
) -> None:
    states, _ = after_predict
    assert spark.sparkContext.getConf().get("spark.task.cpus", "1") == "1"
    served = [s for s in states.values() if s.loads + s.hits > 0]
    assert served, states
    # The reset set 2 threads in every worker; sparkinfer's tasks must have brought it to 1.
    assert [s.torch_threads for s in served] == [1] * len(served), states
