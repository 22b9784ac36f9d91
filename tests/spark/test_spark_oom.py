"""Out-of-memory recovery inside Spark's Python workers, through the job (issue 7, acceptance 4).

The out-of-memory is injected with ``SPARKINFER_FAULTS`` (see ``sparkinfer/engine/faults.py``) in the
environment Spark starts its Python workers with (``SparkContext.environment``, read when a Python
function is wrapped): a micro-batch of more than a few rows raises torch's own
``torch.cuda.OutOfMemoryError`` in the worker. The job must complete, write what an un-split run writes,
and report the splits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sparkinfer as si
from sparkinfer.engine import faults
from sparkinfer.spark.job import Job, run
from tests.spark.helpers import single_torch_thread
from tests.unit.helpers import TOLERANCE, ClassifierOracle, assert_classification_matches

pytestmark = pytest.mark.spark

OOM_ABOVE_ROWS = 4


def _predictions(spark: Any, path: str) -> dict[int, Any]:
    return {r["id"]: r["prediction"] for r in si.read_table(spark, path).collect()}


def test_an_injected_oom_in_the_workers_splits_and_the_job_completes(
    spark: Any, tiny_classifier: str, docs: list[str], tmp_path: Path
) -> None:
    rows = [{"id": i, "text": None if i % 13 == 0 else docs[i]} for i in range(120)]
    source = tmp_path / "input.parquet"
    pq.write_table(pa.Table.from_pylist(rows), source)
    spec = si.ModelSpec(tiny_classifier, task="classification", max_length=64, batch_tokens=1024,
                        return_all_scores=True)

    def job(name: str) -> Job:
        return Job(input=str(source), output=str(tmp_path / name), format="parquet", spec=spec, key="id")

    environment = spark.sparkContext.environment  # what the next Python workers start with
    environment[faults.ENV] = f"oom_above_rows={OOM_ABOVE_ROWS}"
    try:
        split = run(spark, job("split"))
    finally:
        del environment[faults.ENV]
    unsplit = run(spark, job("unsplit"))

    assert unsplit.metrics.oom_splits == 0
    assert split.metrics.oom_splits > 0
    # Every split halves a batch, so the split run needs more micro-batches for the same rows.
    assert split.metrics.micro_batches > unsplit.metrics.micro_batches
    assert split.rows_out == unsplit.rows_out == len(rows)
    got, want = _predictions(spark, str(tmp_path / "split")), _predictions(spark, str(tmp_path / "unsplit"))
    assert sorted(got) == sorted(want) == [r["id"] for r in rows]
    for key, expected in want.items():
        if expected is None:
            assert got[key] is None
            continue
        assert got[key]["label"] == expected["label"]
        assert [s["score"] for s in got[key]["scores"]] == pytest.approx(
            [s["score"] for s in expected["scores"]], abs=TOLERANCE
        )
    # ...and both are right: each row's prediction is what transformers gives its text alone.
    ids = [r["id"] for r in rows]
    with single_torch_thread():
        predictions = pa.array([None if got[i] is None else got[i].asDict(recursive=True) for i in ids])
        assert_classification_matches(predictions, [r["text"] for r in rows], ClassifierOracle(tiny_classifier),
                                      max_length=64)
