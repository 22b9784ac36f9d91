"""Invalid options fail on the driver, as SpecError, when the Column is built: no Spark job runs."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import sparkinfer as si

pytestmark = pytest.mark.spark

# Each case builds a Column (or registers a function) with one invalid argument; the pattern names the
# offending option and echoes the value received.
Builder = Callable[[Any, str, str], object]
CASES: dict[str, tuple[Builder, str]] = {
    "batch_tokens=0": (
        lambda spark, emb, clf: si.embed("text", emb, batch_tokens=0),
        r"batch_tokens.*\(got 0\)",
    ),
    "predict without task": (lambda spark, emb, clf: si.predict("text", emb), r"task="),
    "pooling for classification": (
        lambda spark, emb, clf: si.classify("text", clf, pooling="cls"),
        r"pooling.*'cls'",
    ),
    "top_k with return_all_scores": (
        lambda spark, emb, clf: si.classify("text", clf, top_k=2, return_all_scores=True),
        r"return_all_scores.*top_k",
    ),
    "max_length above batch_tokens": (
        lambda spark, emb, clf: si.embed("text", emb, max_length=256, batch_tokens=128),
        r"batch_tokens.*max_length|max_length.*batch_tokens",
    ),
    "unknown option": (lambda spark, emb, clf: si.embed("text", emb, batch_size=8), r"batch_size"),
    "task contradicts the spec": (
        lambda spark, emb, clf: si.classify("text", si.ModelSpec(emb, task="embedding")),
        r"classification.*embedding",
    ),
    "input not a column": (lambda spark, emb, clf: si.embed(42, emb), r"column.*\(got int: 42\)"),
    "SQL name not an identifier": (
        lambda spark, emb, clf: si.register(spark, "embed-text", emb, task="embedding"),
        r"'embed-text'",
    ),
}


@pytest.fixture
def job_group(spark: Any) -> Iterator[str]:
    """A job group set on this thread for the test, so the test can list the jobs it started."""
    group = "sparkinfer-driver-side-errors"
    spark.sparkContext.setJobGroup(group, "column builders must not start jobs")
    yield group
    spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    spark.sparkContext.setLocalProperty("spark.job.description", None)


@pytest.mark.parametrize("case", list(CASES))
def test_invalid_options_raise_spec_error_without_a_job(
    case: str, spark: Any, job_group: str, minilm_path: str, tiny_classifier: str
) -> None:
    build, pattern = CASES[case]
    with pytest.raises(si.SpecError, match=pattern):
        build(spark, minilm_path, tiny_classifier)
    assert spark.sparkContext.statusTracker().getJobIdsForGroup(job_group) == []


def test_job_group_sees_jobs(spark: Any, job_group: str) -> None:
    """The no-job check above can fail: a job run under the group shows up in it."""
    spark.range(1).collect()
    assert spark.sparkContext.statusTracker().getJobIdsForGroup(job_group) != []


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [("n", "CAST(1 AS INT)", "INT"), ("b", "X'78'", "BINARY"), ("a", "array('x')", "ARRAY<STRING>")],
)
def test_a_non_string_input_column_fails_before_any_prediction(
    name: str, value: str, shown: str, spark: Any, job_group: str, tiny_classifier: str
) -> None:
    """PySpark >= 4.0: on the driver, when the plan is analysed (no job runs). Before: the task fails at once.

    The failing job has one task and no Python stage upstream of the UDF: PySpark 3.5 closes the socket of a
    Python worker it has already put back in its pool when it kills an interrupted task's worker (its
    ``PythonWorkerFactory.stopWorker``), and a later job that takes that worker fails with "Socket is
    closed". A local DataFrame's rows pass through such a stage, and a second task would be interrupted.
    """
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    frame = spark.range(1, numPartitions=1).selectExpr("id", f"{value} AS {name}")
    if hasattr(F, "collate"):
        jobs = spark.sparkContext.statusTracker().getJobIdsForGroup(job_group)  # test_job_group_sees_jobs' job
        expected = rf'requires the "STRING" type, however "{name}" has the type "{re.escape(shown)}"'
        with pytest.raises(AnalysisException, match=expected):
            frame.withColumn("pred", si.classify(name, tiny_classifier))
        assert spark.sparkContext.statusTracker().getJobIdsForGroup(job_group) == jobs
    else:
        with pytest.raises(Exception, match=r"sparkinfer input must be a string column \(got Arrow type"):
            frame.withColumn("pred", si.classify(name, tiny_classifier)).collect()
