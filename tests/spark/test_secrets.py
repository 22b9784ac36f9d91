"""A hub token in the environment never reaches logs, printed output, the run report or Spark's conf.

The token is set where users set it: ``HF_TOKEN`` in the driver's environment and in the Python workers'
(as ``spark.executorEnv.HF_TOKEN`` would). The job then runs from its command-line entry point with
sparkinfer's, transformers' and huggingface_hub's logging at DEBUG (everything else at INFO), and
everything written is searched for the token.

Not covered, because it is PySpark's and not ours: py4j's own DEBUG logger prints every gateway command,
including the worker environment of each Python UDF, so a token put into ``spark.executorEnv`` shows up
there when a user turns py4j's logging to DEBUG.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparkinfer.spark.job import main

pytestmark = pytest.mark.spark

TOKEN = "hf_sparkinferTestToken0123456789abcdef"


def test_a_hub_token_never_appears_in_logs_output_report_or_spark_conf(
    spark: Any, tiny_classifier: str, docs: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "input.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": i, "text": docs[i]} for i in range(40)]), source)
    report = tmp_path / "report.json"
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    environment = spark.sparkContext.environment
    environment["HF_TOKEN"] = TOKEN
    caplog.set_level(logging.INFO)
    for logger in ("sparkinfer", "transformers", "huggingface_hub", "urllib3"):
        caplog.set_level(logging.DEBUG, logger=logger)
    try:
        status = main([
            "--input", str(source), "--output", str(tmp_path / "out"), "--format", "parquet",
            "--model", tiny_classifier, "--task", "classification", "--key", "id", "--report", str(report),
        ])
    finally:
        del environment["HF_TOKEN"]
    out, err = capfd.readouterr()

    assert status == 0, err[-2000:]
    assert '"rows_out": 40' in report.read_text()  # the job ran and reported
    assert "sparkinfer" in caplog.text  # and logged at DEBUG
    conf = "\n".join(f"{k}={v}" for k, v in spark.sparkContext.getConf().getAll())
    spark_sql_conf = "\n".join(f"{k}={v}" for k, v in _sql_conf(spark).items())
    for where, text in {"logs": caplog.text, "stdout": out, "stderr": err, "report": report.read_text(),
                        "SparkConf": conf, "SQL conf": spark_sql_conf}.items():
        assert TOKEN not in text, f"the token leaked into the {where}"
        assert TOKEN[-12:] not in text, f"part of the token leaked into the {where}"


def _sql_conf(spark: Any) -> dict[str, str]:
    """Every SQL conf set in the session, unredacted (``SET`` would redact token-like values).

    ``spark.conf.getAll`` is PySpark 4's; on 3.5 the same map is read from the JVM session.
    """
    if hasattr(spark.conf, "getAll"):
        return dict(spark.conf.getAll)
    every = spark._jsparkSession.conf().getAll()
    return dict(spark._jvm.scala.collection.JavaConverters.mapAsJavaMap(every))
