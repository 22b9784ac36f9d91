"""si.register: a SQL function returns what the Column API returns, for embedding and classification."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import sparkinfer as si
from tests.spark.helpers import LABELS, NULL_IDS, ON_CPU, Probs, Vector, cosines, rows_by_id

pytestmark = pytest.mark.spark

# Every 12th docstring (50 rows over the 3 partitions) and the null rows: SQL adds no batching of its
# own, so a slice proves the wiring at a fraction of the cost of the full table.
SUBSET = "id % 12 = 0 OR text IS NULL"


@pytest.fixture(scope="module")
def docs_view(spark: Any, docs_df: Any) -> Iterator[Any]:
    """The subset as a DataFrame, also registered as the temporary view ``docs``."""
    subset = docs_df.where(SUBSET)
    subset.createOrReplaceTempView("docs")
    yield subset
    spark.catalog.dropTempView("docs")


def test_sql_embedding_equals_column_api(
    spark: Any, docs_view: Any, minilm_path: str, st_vectors: dict[int, Vector]
) -> None:
    spec = si.ModelSpec(minilm_path, task="embedding", max_length=256, batch_tokens=512, **ON_CPU)
    si.register(spark, "embed_text", spec)
    from_sql = rows_by_id(spark.sql("SELECT id, embed_text(text) AS emb FROM docs").collect())
    from_column = rows_by_id(docs_view.select("id", si.embed("text", spec).alias("emb")).collect())

    assert set(from_sql) == set(from_column) and len(from_sql) == 50 + len(NULL_IDS)
    assert [from_sql[i].emb for i in NULL_IDS] == [None, None, None]
    ids = sorted(i for i in from_sql if i not in NULL_IDS)
    sql_vectors = [from_sql[i].emb for i in ids]
    np.testing.assert_allclose(sql_vectors, [from_column[i].emb for i in ids], rtol=0, atol=1e-6)
    # ... and both are right, not merely equal.
    assert cosines(sql_vectors, [st_vectors[i] for i in ids]).min() >= 0.9999


def test_sql_classification_equals_column_api(
    spark: Any, docs_view: Any, tiny_classifier: str, classifier_probs: dict[int, Probs]
) -> None:
    options = {"return_all_scores": True, **ON_CPU}
    si.register(spark, "classify_text", tiny_classifier, task="classification", **options)
    from_sql = rows_by_id(spark.sql("SELECT id, classify_text(text) AS pred FROM docs").collect())
    from_column = rows_by_id(
        docs_view.select("id", si.classify("text", tiny_classifier, **options).alias("pred")).collect()
    )

    assert set(from_sql) == set(from_column) and len(from_sql) == 50 + len(NULL_IDS)
    assert [from_sql[i].pred for i in NULL_IDS] == [None, None, None]
    for i in sorted(set(from_sql) - set(NULL_IDS)):
        sql, column = from_sql[i].pred.asDict(recursive=True), from_column[i].pred.asDict(recursive=True)
        assert sql["label"] == column["label"] == LABELS[classifier_probs[i].argmax()], i
        assert abs(sql["score"] - column["score"]) <= 1e-12, i
        assert [s["label"] for s in sql["scores"]] == [s["label"] for s in column["scores"]] == LABELS, i
        sql_scores = [s["score"] for s in sql["scores"]]
        np.testing.assert_allclose(sql_scores, [s["score"] for s in column["scores"]], rtol=0, atol=1e-12)
        np.testing.assert_allclose(sql_scores, classifier_probs[i], rtol=0, atol=1e-5)
