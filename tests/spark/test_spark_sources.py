"""Remote models on Spark (issue 18): S3 through s3fs and the MLflow registry, in the Column API and the job.

The stores are real and local (tests/sources.py): moto's S3 server on loopback, and an MLflow registry with a
sqlite backend and a file artifact store. The Python workers reach them with the standard environment
variables only (``AWS_*``, ``MLFLOW_TRACKING_URI``), given through ``sc.environment`` as a cluster's executor
environment would give them, never through Spark's conf. Every embedding is checked against
sentence-transformers run on each row alone from the bundled model's local directory.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyspark
import pytest

import sparkinfer as si
from sparkinfer.engine.sources import _node
from sparkinfer.spark.job import main
from tests.sources import move_alias
from tests.unit.helpers import SentenceTransformerOracle

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "predict_table.py"
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
S3_URI = "s3://models/minilm"
ROWS = 48


@pytest.fixture(scope="module")
def oracle(minilm_path: str) -> SentenceTransformerOracle:
    return SentenceTransformerOracle(minilm_path)


@pytest.fixture(scope="module")
def remote_env(spark: Any, s3: Any, mlflow_registry: dict[str, str],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The stores' environment, and a node cache of this module's own, in the driver and the Python workers."""
    env = {**s3.env, **mlflow_registry, _node.ENV: str(tmp_path_factory.mktemp("node-cache"))}
    environment = spark.sparkContext.environment
    before = {k: environment.get(k) for k in env}
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        environment[k] = v
        mp.setenv(k, v)
    yield env
    mp.undo()
    for k, v in before.items():
        if v is None:
            environment.pop(k, None)
        else:
            environment[k] = v


@pytest.fixture(scope="module")
def texts_path(docs: list[str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """ROWS docstrings (id, text), and a null text (id ROWS), in two Parquet files."""
    path = tmp_path_factory.mktemp("remote-input") / "input"
    path.mkdir()
    rows = [{"id": i, "text": docs[i]} for i in range(ROWS)] + [{"id": ROWS, "text": None}]
    for part in range(2):
        pq.write_table(pa.Table.from_pylist(rows[part::2]), path / f"part-{part}.parquet")
    return str(path)


def _assert_embeddings(got: dict[int, Any], docs: list[str], oracle: SentenceTransformerOracle, *,
                       normalized: bool = True) -> None:
    """`got` (id → vector) holds every row's oracle embedding; without `normalized`, its direction only."""
    assert got.pop(ROWS, "absent") is None  # the null text
    assert sorted(got) == list(range(ROWS))
    vectors = np.asarray([got[i] for i in range(ROWS)], dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1)
    if normalized:
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    else:  # mean pooling without the Normalize module: lengths vary from row to row
        assert norms.min() > 1.5 and np.ptp(norms) > 0.1, norms
    np.testing.assert_allclose(vectors / norms[:, None], [oracle(docs[i]) for i in range(ROWS)], rtol=0, atol=1e-4)


def _column(spark: Any, path: str, model: str, **options: Any) -> dict[int, Any]:
    frame = spark.read.parquet(path).withColumn("vector", si.embed("text", model, **options))
    return {row["id"]: row["vector"] for row in frame.select("id", "vector").collect()}


def test_embed_from_s3_equals_the_local_model(spark: Any, remote_env: dict[str, str], texts_path: str,
                                             docs: list[str], oracle: SentenceTransformerOracle) -> None:
    _assert_embeddings(_column(spark, texts_path, S3_URI), docs, oracle)
    assert list(Path(remote_env[_node.ENV]).glob("minilm-*/*/model.safetensors"))  # in this module's node cache


@pytest.mark.parametrize("uri", ["models:/minilm/1", "models:/minilm@champion"])
def test_embed_from_the_mlflow_registry(spark: Any, remote_env: dict[str, str], texts_path: str, docs: list[str],
                                        oracle: SentenceTransformerOracle, uri: str) -> None:
    _assert_embeddings(_column(spark, texts_path, uri), docs, oracle)


def test_a_transformers_flavor_model_loads_from_its_model_and_tokenizer_parts(
    spark: Any, remote_env: dict[str, str], texts_path: str, docs: list[str], oracle: SentenceTransformerOracle,
) -> None:
    """Version 2 is MLflow's transformers flavor: weights under model/, the tokenizer under components/.

    The flavor keeps no sentence-transformers config: mean pooling without the Normalize module, and the
    tokenizer's 512 tokens unless max_length says 256 as sentence_bert_config.json does.
    """
    got = _column(spark, texts_path, "models:/minilm/2", max_length=256)
    _assert_embeddings(got, docs, oracle, normalized=False)


def test_a_moved_alias_is_a_model_change(spark: Any, remote_env: dict[str, str], texts_path: str, docs: list[str],
                                         oracle: SentenceTransformerOracle, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The job on models:/minilm@champion; the alias moves to version 2; a rerun refuses, or re-predicts."""
    output = tmp_path / "out"
    args = ["--input", texts_path, "--output", str(output), "--format", "parquet", "--model",
            "models:/minilm@champion", "--task", "embedding", "--max-length", "256", "--key", "id",
            "--report", str(tmp_path / "r.json")]
    try:
        assert main(args) == 0
        first = json.loads((tmp_path / "r.json").read_text())
        assert first["fingerprint_fields"]["revision"] == "1" and first["rows_out"] == ROWS + 1
        assert main(args) == 0  # the same version: nothing to do
        assert json.loads((tmp_path / "r.json").read_text())["rows_skipped"] == ROWS + 1

        move_alias("2")
        capsys.readouterr()
        assert main(args) == 2
        assert re.search(r"another model fingerprint", capsys.readouterr().err)
        assert main([*args, "--on-model-change", "repredict"]) == 0
        second = json.loads((tmp_path / "r.json").read_text())
    finally:
        move_alias("1")
    assert second["fingerprint_fields"]["revision"] == "2" and second["rows_replaced"] == ROWS + 1
    table = pq.read_table(output).to_pydict()
    assert set(table["sparkinfer_fingerprint"]) == {second["fingerprint"]}
    _assert_embeddings(dict(zip(table["id"], table["embedding"], strict=True)), docs, oracle, normalized=False)


@pytest.mark.cluster
def test_on_local_cluster_each_node_downloads_once_and_concurrent_tasks_wait(
    s3: Any, texts_path: str, docs: list[str], oracle: SentenceTransformerOracle, tmp_path: Path,
) -> None:
    """Two executor JVMs on this one node, one task each, start together; the download is slowed (4 s a file).

    One process downloads; the other waits on the node cache's lock and then reuses the download.
    """
    trace = tmp_path / "trace"
    trace.mkdir()
    env = {**_clean_env(), **s3.env, _node.ENV: str(tmp_path / "node-cache"), "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "HF_HUB_OFFLINE": "1",
           "SPARK_LOCAL_DIRS": str(tmp_path / "spark-local"),
           "SPARKINFER_FAULTS": f"trace_fetches={trace},slow_download_ms=4000"}
    output = tmp_path / "out"
    result = subprocess.run(
        [str(SPARK_SUBMIT), "--master", "local-cluster[2,1,1024]", "--conf", "spark.ui.enabled=false",
         "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0", str(SCRIPT), "--input", texts_path,
         "--output", str(output), "--format", "parquet", "--model", S3_URI, "--task", "embedding",
         "--partitions", "2"],
        env=env, capture_output=True, text=True, timeout=400,
    )
    work = Path(pyspark.__file__).parent / "work"  # local-cluster workers keep a directory per application
    for app in set(re.findall(r"app-\d{14}-\d{4}", result.stderr)):
        shutil.rmtree(work / app, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    events = [line.split() for f in trace.iterdir() for line in f.read_text().splitlines()]
    downloads = [e for e in events if e[0] == "download"]
    assert len(downloads) == 1, events
    _, downloader, _, _, _ = downloads[0]
    done = next(float(e[3]) for e in events if e[0] == "done")
    waited = {e[1]: float(e[3]) for e in events if e[0] == "wait" and e[1] != downloader}
    reused = {e[1]: float(e[3]) for e in events if e[0] == "reuse" and e[1] in waited}
    assert waited and all(t < done for t in waited.values()), events  # it waited while the download ran
    assert reused and all(t >= done for t in reused.values()), events  # then took the finished download
    executors = {e[2] for e in events}
    assert len(executors) == 2 and "-" not in executors, events  # the two processes are in two executor JVMs
    table = pq.read_table(output).to_pydict()
    _assert_embeddings(dict(zip(table["id"], table["embedding"], strict=True)), docs, oracle)


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("SPARKINFER_", "MLFLOW_"))}
