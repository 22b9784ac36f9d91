"""Secrets in the environment never reach logs, printed output, the run report or Spark's conf.

Two kinds, each set where users set it, in the driver's environment and in the Python workers' (as
``spark.executorEnv.*`` would): a hub token (``HF_TOKEN``) with a local model, and AWS credentials (key id,
secret key, session token) with a model in S3 (moto's server on loopback, downloaded into a fresh node cache).
The job then runs from its command-line entry point with sparkinfer's logging and that of the libraries
handling the secret at DEBUG (everything else at INFO), and everything written is searched for each secret.

Not covered, because they are other libraries' and not ours: py4j's own DEBUG logger prints every gateway
command, including the worker environment of each Python UDF, so a secret put into ``spark.executorEnv``
shows up there when a user turns py4j's logging to DEBUG; botocore's DEBUG logger prints each request's
headers, the session token among them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparkinfer.engine.sources import _node
from sparkinfer.spark.job import main
from tests.sources import KEY_ID, SECRET, SESSION_TOKEN

pytestmark = pytest.mark.spark

TOKEN = "hf_sparkinferTestToken0123456789abcdef"


@dataclass(frozen=True)
class Case:
    model: str
    task: str
    env: dict[str, str]  # for the driver and the Python workers
    secrets: tuple[str, ...]
    loggers: tuple[str, ...]  # at DEBUG


def _hub_token(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    return Case(request.getfixturevalue("tiny_classifier"), "classification", {"HF_TOKEN": TOKEN}, (TOKEN,),
                ("sparkinfer", "transformers", "huggingface_hub", "urllib3"))


def _aws_credentials(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    s3 = request.getfixturevalue("s3")
    return Case("s3://models/minilm", "embedding", {**s3.env, _node.ENV: str(tmp_path / "node-cache")},
                (KEY_ID, SECRET, SESSION_TOKEN), ("sparkinfer", "fsspec", "s3fs", "aiobotocore", "urllib3"))


@pytest.mark.parametrize("make_case", [_hub_token, _aws_credentials], ids=["hub-token", "aws-credentials"])
def test_secrets_never_appear_in_logs_output_report_or_spark_conf(
    spark: Any, make_case: Any, docs: list[str], tmp_path: Path, request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
) -> None:
    case = make_case(request, tmp_path)
    source = tmp_path / "input.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": i, "text": docs[i]} for i in range(40)]), source)
    report = tmp_path / "report.json"
    environment = spark.sparkContext.environment
    before = {k: environment.get(k) for k in case.env}
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
        environment[k] = v
    caplog.set_level(logging.INFO)
    for logger in case.loggers:
        caplog.set_level(logging.DEBUG, logger=logger)
    try:
        status = main([
            "--input", str(source), "--output", str(tmp_path / "out"), "--format", "parquet",
            "--model", case.model, "--task", case.task, "--key", "id", "--report", str(report),
        ])
    finally:
        for k, v in before.items():
            if v is None:
                environment.pop(k, None)
            else:
                environment[k] = v
    out, err = capfd.readouterr()

    assert status == 0, err[-2000:]
    assert '"rows_out": 40' in report.read_text()  # the job ran and reported
    assert "sparkinfer" in caplog.text  # and logged at DEBUG
    conf = "\n".join(f"{k}={v}" for k, v in spark.sparkContext.getConf().getAll())
    spark_sql_conf = "\n".join(f"{k}={v}" for k, v in _sql_conf(spark).items())
    for where, text in {"logs": caplog.text, "stdout": out, "stderr": err, "report": report.read_text(),
                        "SparkConf": conf, "SQL conf": spark_sql_conf}.items():
        for n, secret in enumerate(case.secrets):
            assert secret not in text, f"secret {n} leaked into the {where}"
            assert secret[-12:] not in text, f"part of secret {n} leaked into the {where}"


def _sql_conf(spark: Any) -> dict[str, str]:
    """Every SQL conf set in the session, unredacted (``SET`` would redact token-like values).

    ``spark.conf.getAll`` is PySpark 4's; on 3.5 the same map is read from the JVM session.
    """
    if hasattr(spark.conf, "getAll"):
        return dict(spark.conf.getAll)
    every = spark._jsparkSession.conf().getAll()
    return dict(spark._jvm.scala.collection.JavaConverters.mapAsJavaMap(every))
