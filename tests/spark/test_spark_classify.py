"""si.classify on Spark against a plain transformers forward pass + softmax on each row alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import sparkinfer as si
from tests.spark.helpers import LABELS, NULL_IDS, ON_CPU, Doc, Probs, expected_extras, rows_by_id

pytestmark = pytest.mark.spark

SCORE_TOLERANCE = 1e-5
VARIANTS: dict[str, dict[str, Any]] = {
    "best-label": {},
    "return_all_scores": {"return_all_scores": True},
    "top_k=2": {"top_k": 2},
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def classified(
    request: pytest.FixtureRequest,
    docs_df: Any,
    tiny_classifier: str,
) -> tuple[str, dict[int, Any]]:
    """The variant's name, and id → output Row of one Spark job classifying every row of `docs_df`."""
    column = si.classify("text", tiny_classifier, **VARIANTS[request.param], **ON_CPU)
    return request.param, rows_by_id(docs_df.select("*", column.alias("pred")).collect())


def test_label_and_score_match_transformers_per_row(
    classified: tuple[str, dict[int, Any]], classifier_probs: dict[int, Probs]
) -> None:
    _, rows = classified
    assert set(classifier_probs) <= set(rows) and len(classifier_probs) == 600
    for i, probs in classifier_probs.items():
        pred = rows[i].pred
        assert pred.label == LABELS[probs.argmax()], (i, pred, probs)
        assert abs(pred.score - probs.max()) <= SCORE_TOLERANCE, (i, pred, probs)


def test_scores_array_matches_transformers_per_row(
    classified: tuple[str, dict[int, Any]], classifier_probs: dict[int, Probs]
) -> None:
    variant, rows = classified
    for i, probs in classifier_probs.items():
        pred = rows[i].pred.asDict(recursive=True)
        if variant == "best-label":
            assert set(pred) == {"label", "score"}
            continue
        if variant == "return_all_scores":
            order = np.arange(len(LABELS))  # every label, in label-id order
        else:
            order = np.argsort(-probs, kind="stable")[:2]  # the two best, best first
        assert [s["label"] for s in pred["scores"]] == [LABELS[k] for k in order], (i, pred, probs)
        np.testing.assert_allclose(
            [s["score"] for s in pred["scores"]], probs[order], rtol=0, atol=SCORE_TOLERANCE, err_msg=str(i)
        )


def test_null_text_gives_null_struct(classified: tuple[str, dict[int, Any]]) -> None:
    _, rows = classified
    assert [rows[i].pred for i in NULL_IDS] == [None, None, None]


def test_other_columns_pass_through(classified: tuple[str, dict[int, Any]], doc_rows: dict[int, Doc]) -> None:
    _, rows = classified
    assert set(rows) == set(doc_rows)
    for i, row in rows.items():
        assert (row.module, row.text) == (doc_rows[i].module, doc_rows[i].text), i
        assert (row.tag, row.weights) == expected_extras(i), i
