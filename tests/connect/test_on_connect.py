"""The main paths on Spark Connect, checked against the same per-row oracles as the classic tier.

embed, classify, generate, a registered SQL function, the job through `run` (Delta via delta-rs, resumed)
and ``sparkinfer run --remote``: all from a client process without a JVM, against a local Connect server.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sparkinfer as si
from sparkinfer.spark.job import Job, run
from tests.spark.helpers import ON_CPU, single_torch_thread
from tests.unit.helpers import (
    ClassifierOracle,
    SentenceTransformerOracle,
    assert_classification_matches,
    assert_embeddings_match,
)
from tests.unit.test_generation import GenerateOracle

pytestmark = pytest.mark.spark

ROWS = 24
NEW = 8
SCHEMA = "id long, text string"


@pytest.fixture(scope="module")
def rows(docs: list[str]) -> list[dict[str, Any]]:
    """ROWS docstrings of very different lengths, every seventh one null."""
    return [{"id": i, "text": None if i % 7 == 3 else docs[i * 13]} for i in range(ROWS)]


@pytest.fixture(scope="module")
def texts(rows: list[dict[str, Any]]) -> list[str | None]:
    return [r["text"] for r in rows]


@pytest.fixture(scope="module")
def frame(spark: Any, rows: list[dict[str, Any]]) -> Any:
    """The rows as a Connect DataFrame in three partitions, out of id order."""
    return spark.createDataFrame([(r["id"], r["text"]) for r in rows], SCHEMA).repartition(3)


def _by_id(collected: list[Any], column: str) -> pa.Array:
    """One output column in id order, as Arrow (what the oracle checks take)."""
    values = {r["id"]: r[column] for r in collected}
    assert sorted(values) == list(range(ROWS)), "rows lost or duplicated"
    return pa.array([_plain(values[i]) for i in range(ROWS)])


def _plain(value: Any) -> Any:
    return value.asDict(recursive=True) if hasattr(value, "asDict") else value


def test_embed_equals_sentence_transformers(frame: Any, minilm_path: str, texts: list[str | None]) -> None:
    got = frame.withColumn("emb", si.embed("text", minilm_path, max_length=256, **ON_CPU)).collect()
    with single_torch_thread():
        assert_embeddings_match(_by_id(got, "emb"), texts, SentenceTransformerOracle(minilm_path))


def test_classify_and_sql_function_equal_transformers(
    spark: Any, frame: Any, tiny_classifier: str, texts: list[str | None]
) -> None:
    # The SQL function computes in the executor's model host (which lives in the executors, not the client).
    spec = si.ModelSpec(tiny_classifier, task="classification", host="executor", **ON_CPU)
    si.register(spark, "classify_text", spec)
    frame.createOrReplaceTempView("connect_docs")
    by_column = frame.withColumn("pred", si.classify("text", tiny_classifier, **ON_CPU)).collect()
    by_sql = spark.sql("SELECT id, classify_text(text) AS pred FROM connect_docs").collect()
    with single_torch_thread():
        oracle = ClassifierOracle(tiny_classifier)
        assert_classification_matches(_by_id(by_column, "pred"), texts, oracle)
        assert_classification_matches(_by_id(by_sql, "pred"), texts, oracle)


def test_generate_equals_per_row_generate(frame: Any, tiny_causal_lm: str, texts: list[str | None]) -> None:
    got = frame.withColumn(
        "out", si.generate("text", tiny_causal_lm, max_new_tokens=NEW, return_details=True, host="executor", **ON_CPU)
    ).collect()
    outputs = _by_id(got, "out").to_pylist()
    with single_torch_thread():
        oracle = GenerateOracle(tiny_causal_lm, causal=True)
        for i, (text, out) in enumerate(zip(texts, outputs, strict=True)):
            if text is None:
                assert out is None, f"row {i}"
                continue
            generated, prompt_tokens = oracle.generate(text, NEW)
            assert out["text"] == oracle.decode(generated), f"row {i}"
            assert (out["prompt_tokens"], out["completion_tokens"]) == (prompt_tokens, len(generated)), f"row {i}"


def test_extract_gives_the_schemas_struct_as_each_row_alone(
    frame: Any, tiny_extraction_lm: str, texts: list[str | None]
) -> None:
    from sparkinfer.engine import run as run_engine

    ddl, options = "name varchar(10), age int, member boolean", {"max_new_tokens": 64, **ON_CPU}
    got = frame.withColumn("x", si.extract("text", tiny_extraction_lm, ddl, **options)).collect()
    outputs = _by_id(got, "x").to_pylist()
    spec = si.ModelSpec(tiny_extraction_lm, task="extraction", schema=ddl, **options)
    with single_torch_thread():
        alone = [None if t is None else run_engine(spec, pa.array([t]))[0].to_pylist()[0] for t in texts]
    assert outputs == alone and sum(o is not None and o["status"] == "ok" for o in outputs) >= 15


@pytest.fixture(scope="module")
def input_table(rows: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("connect_input") / "docs"
    path.mkdir()
    for part in range(2):
        pq.write_table(pa.Table.from_pylist(rows[part::2]), path / f"part-{part}.parquet")
    return str(path)


def test_job_writes_delta_and_resumes(
    spark: Any, input_table: str, tiny_classifier: str, texts: list[str | None], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import deltalake

    output = str(tmp_path / "pred")
    spec = si.ModelSpec(tiny_classifier, task="classification", **ON_CPU)
    job = Job(input=input_table, output=output, spec=spec, key="id", chunk_rows=12, format="delta",
              progress_interval=0.2)
    caplog.set_level(logging.INFO, logger="sparkinfer")
    first = run(spark, job)
    assert (first.rows_in, first.rows_out, first.rows_skipped) == (ROWS, ROWS, 0)
    assert first.chunks == 2 and len(first.delta_versions) == 2
    # Progress reached this client from the tasks (UDP) before the first chunk committed its exact counts.
    messages = [(getattr(r, "progress", None), r.getMessage()) for r in caplog.records]
    first_commit = next(i for i, (_, text) in enumerate(messages) if "chunk 1/2 committed" in text)
    assert any(p is not None and p.done > 0 for p, _ in messages[:first_commit]), messages
    # Connect cannot tell the input's partitions without a job; the slots came from a spark.range's.
    assert first.partitioning is not None and first.partitioning["slots"] >= 1
    assert first.partitioning["input_partitions"] is None and first.partitioning["chosen_by"] == "auto"
    # The engine's counters came back through the rows (Observation), not through a SparkContext.
    assert first.metrics.rows == ROWS and first.metrics.null_rows == texts.count(None)
    assert first.metrics.real_tokens > 0
    table = deltalake.DeltaTable(output).to_pyarrow_table().sort_by("id")
    with single_torch_thread():
        oracle = ClassifierOracle(tiny_classifier)
        assert_classification_matches(table.column("prediction").combine_chunks(), texts, oracle)

    again = run(spark, job)
    assert (again.rows_out, again.rows_skipped) == (0, ROWS)
    assert deltalake.DeltaTable(output).to_pyarrow_table().num_rows == ROWS


def test_sparkinfer_run_remote(
    connect_url: str, input_table: str, tiny_classifier: str, texts: list[str | None], tmp_path: Path
) -> None:
    output, report = tmp_path / "pred", tmp_path / "report.json"
    command = [
        str(Path(sys.executable).parent / "sparkinfer"), "run", "--remote", connect_url, "--input", input_table,
        "--output", str(output), "--format", "parquet", "--model", tiny_classifier, "--task", "classification",
        "--device", "cpu", "--report", str(report),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(report.read_text())["rows_out"] == ROWS
    table = pq.read_table(output).sort_by("id")
    with single_torch_thread():
        oracle = ClassifierOracle(tiny_classifier)
        assert_classification_matches(table.column("prediction").combine_chunks(), texts, oracle)


def test_validate_and_the_job_gate_on_connect(spark: Any, input_table: str, tiny_classifier: str, tmp_path: Path) -> None:
    """si.validate's one pass (mapInArrow partials, toLocalIterator), its pyspark.ml domain classifier, and
    ``--validate``'s stage-validate-publish, from a client without a JVM. Values against scipy/numpy."""
    import deltalake
    import numpy as np
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(0)

    def table(shift: float, n: int = 300) -> tuple[Any, np.ndarray]:
        scores = rng.beta(2 + shift, 2, n)
        vectors = rng.normal(shift, 1.0, (n, 16)) + 3.0
        rows = [(i, {"label": "a" if s > 0.5 else "b", "score": float(s)}, v.tolist())
                for i, (s, v) in enumerate(zip(scores, vectors))]
        return spark.createDataFrame(rows, "id long, prediction struct<label:string, score:double>, "
                                           "embedding array<double>").repartition(3), scores

    reference, ref_scores = table(0.0)
    same, same_scores = table(0.0)
    shifted, _ = table(1.5)
    calm = si.validate(same, reference)
    assert calm.passed, calm.summary()
    assert abs(calm.metric("prediction", "score.ks") - ks_2samp(ref_scores, same_scores).statistic) < 1e-6
    drift = si.validate(shifted, reference)
    assert not drift.passed
    failed = {r.check.metric for r in drift.failures}
    assert {"score.wasserstein", "domain_auc"} <= failed, drift.summary()
    assert drift.metric("embedding", "domain_auc") > 0.9  # pyspark.ml's classifier, over Connect

    output = str(tmp_path / "gated")
    spec = si.ModelSpec(tiny_classifier, task="classification", **ON_CPU)
    job = Job(input=input_table, output=output, spec=spec, key="id", format="delta", validate="")
    report = run(spark, job)
    assert report.passed and report.validation is not None and report.validation["published_version"] == 0
    assert deltalake.DeltaTable(output).to_pyarrow_table().num_rows == ROWS
    assert "<svg" in Path(f"{output}.validation.html").read_text()
