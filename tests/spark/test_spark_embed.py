"""si.embed on Spark against sentence-transformers' encode, row by row, across Arrow batch sizes."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import pytest

import sparkinfer as si
from tests.spark.helpers import NULL_IDS, ON_CPU, Doc, Vector, cosines, expected_extras, rows_by_id

pytestmark = pytest.mark.spark

# Small enough to cut every partition into many micro-batches (two 256-token rows fill one), and a
# buffer smaller than a partition, so rows are pooled across Arrow batches or cut out of one.
OPTIONS = {"max_length": 256, "batch_tokens": 512, "buffer_rows": 100, **ON_CPU}
MIN_COSINE = 0.9999


@pytest.fixture(scope="module", params=[16, 10000], ids=lambda n: f"maxRecordsPerBatch={n}")
def embedded(
    request: pytest.FixtureRequest,
    docs_df: Any,
    minilm_path: str,
    sql_conf: Callable[[str, str], AbstractContextManager[None]],
) -> dict[int, Any]:
    """id → output Row of one Spark job embedding every row of `docs_df` (3 partitions)."""
    column = si.embed("text", minilm_path, **OPTIONS)
    with sql_conf("spark.sql.execution.arrow.maxRecordsPerBatch", str(request.param)):
        return rows_by_id(docs_df.select("*", column.alias("embedding")).collect())


def test_embeddings_match_sentence_transformers_row_by_row(
    embedded: dict[int, Any], st_vectors: dict[int, Vector]
) -> None:
    assert set(st_vectors) <= set(embedded) and len(st_vectors) == 600
    ids = list(st_vectors)
    got = [embedded[i].embedding for i in ids]
    assert {len(v) for v in got} == {384}
    # Normalized like ST's normalize_embeddings=True, so a cosine near 1 means the same vector.
    np.testing.assert_allclose(np.linalg.norm(np.asarray(got), axis=1), 1.0, atol=1e-5)
    similarity = cosines(got, [st_vectors[i] for i in ids])
    worst = int(similarity.argmin())
    assert similarity[worst] >= MIN_COSINE, f"id {ids[worst]}: cosine {similarity[worst]:.6f}"
    # Same float32 arithmetic up to padding and batch shapes: elements agree to ~1e-6 (cosines to ~1e-12).
    np.testing.assert_allclose(got, [st_vectors[i] for i in ids], rtol=0, atol=1e-4)


def test_null_text_gives_null_embedding(embedded: dict[int, Any]) -> None:
    assert [embedded[i].embedding for i in NULL_IDS] == [None, None, None]


def test_other_columns_pass_through(embedded: dict[int, Any], doc_rows: dict[int, Doc]) -> None:
    assert set(embedded) == set(doc_rows)
    for i, row in embedded.items():
        assert (row.module, row.text) == (doc_rows[i].module, doc_rows[i].text), i
        assert (row.tag, row.weights) == expected_extras(i), i
