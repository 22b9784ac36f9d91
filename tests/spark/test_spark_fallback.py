"""The pandas-UDF path used on PySpark < 4.1 gives what the Arrow path gives (simulated on this PySpark)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import sparkinfer as si
import sparkinfer.spark.udf as udf_module
from tests.spark.helpers import LABELS, NULL_IDS, ON_CPU, Probs, Vector, cosines, rows_by_id

pytestmark = pytest.mark.spark

# Every 10th docstring (60 rows) plus the null rows, in docs_df's three shuffled partitions.
SUBSET = "id % 10 = 0 OR text IS NULL"
EMBED_OPTIONS = {"max_length": 256, "batch_tokens": 512, **ON_CPU}
CLASSIFY_OPTIONS = {"top_k": 2, **ON_CPU}


@pytest.fixture(scope="module")
def both_paths(
    docs_df: Any, minilm_path: str, tiny_classifier: str
) -> dict[str, tuple[dict[int, Any], dict[int, Any]]]:
    """{"arrow": ..., "pandas": ...}: (embeddings, classifications) by id from each UDF flavour.

    One model per job (two UDFs in one select would run in two Python workers per task), and the jobs
    ordered so that the workers switch models once.
    """
    subset = docs_df.where(SUBSET)

    def embed() -> dict[int, Any]:
        column = si.embed("text", minilm_path, **EMBED_OPTIONS)
        return rows_by_id(subset.select("id", column.alias("v")).collect())

    def classify() -> dict[int, Any]:
        column = si.classify("text", tiny_classifier, **CLASSIFY_OPTIONS)
        return rows_by_id(subset.select("id", column.alias("v")).collect())

    arrow_embeddings = embed()
    with pytest.MonkeyPatch.context() as patch:
        # Read when a Column is built: the Columns built inside this block take the pandas path.
        patch.setattr(udf_module, "_HAS_ARROW_UDF", False)
        pandas = (embed(), classify())
    return {"arrow": (arrow_embeddings, classify()), "pandas": pandas}


def test_pandas_path_embeddings_equal_arrow_path(
    both_paths: dict[str, tuple[dict[int, Any], dict[int, Any]]], st_vectors: dict[int, Vector]
) -> None:
    arrow, pandas = both_paths["arrow"][0], both_paths["pandas"][0]
    assert set(arrow) == set(pandas) and len(arrow) == 60 + len(NULL_IDS)
    ids = sorted(set(arrow) - set(NULL_IDS))
    np.testing.assert_allclose([pandas[i].v for i in ids], [arrow[i].v for i in ids], rtol=0, atol=1e-6)
    assert cosines([pandas[i].v for i in ids], [st_vectors[i] for i in ids]).min() >= 0.9999
    # Arrays keep their top-level nulls on both paths.
    assert [pandas[i].v for i in NULL_IDS] == [arrow[i].v for i in NULL_IDS] == [None, None, None]


def test_pandas_path_classification_equals_arrow_path(
    both_paths: dict[str, tuple[dict[int, Any], dict[int, Any]]], classifier_probs: dict[int, Probs]
) -> None:
    arrow, pandas = both_paths["arrow"][1], both_paths["pandas"][1]
    assert set(arrow) == set(pandas) and len(arrow) == 60 + len(NULL_IDS)
    for i in sorted(set(arrow) - set(NULL_IDS)):
        got, want = pandas[i].v.asDict(recursive=True), arrow[i].v.asDict(recursive=True)
        assert got["label"] == want["label"] == LABELS[classifier_probs[i].argmax()], i
        assert [s["label"] for s in got["scores"]] == [s["label"] for s in want["scores"]], i
        np.testing.assert_allclose(
            [got["score"], *(s["score"] for s in got["scores"])],
            [want["score"], *(s["score"] for s in want["scores"])],
            rtol=0, atol=1e-12, err_msg=str(i),
        )
        assert abs(got["score"] - classifier_probs[i].max()) <= 1e-5, i


def test_pandas_path_gives_a_null_struct_for_a_null_input_too(
    both_paths: dict[str, tuple[dict[int, Any], dict[int, Any]]],
) -> None:
    """A pandas UDF returns a struct column as a DataFrame, and PySpark builds the Arrow struct from the
    DataFrame's columns without a validity mask (label=None, score=None, scores=[] for a null text);
    `predict` puts the null back, so both paths give a null struct."""
    arrow, pandas = both_paths["arrow"][1], both_paths["pandas"][1]
    assert [arrow[i].v for i in NULL_IDS] == [None, None, None]
    assert [pandas[i].v for i in NULL_IDS] == [None, None, None]
