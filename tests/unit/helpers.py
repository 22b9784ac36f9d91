"""Per-row oracles and the assertions that compare the engine's output with them.

An oracle runs plain transformers / sentence-transformers on ONE row at a time (no batching, no padding),
so it is an independent reference for the engine's batched, length-sorted, padded run. Oracles memoize
per row, so property tests that draw the same text twice pay for it once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pytest

FloatArray = npt.NDArray[np.float64]

TOLERANCE = 1e-5
"""How far a batched score may lie from the per-row oracle's, or from another batching's.

Padding and batch shapes moved the tiny classifiers' float32 scores by at most 3e-6 (tiny_classifier, 129
texts of up to 512 tokens in three batchings); two different texts' answers lie further apart than this
(test_tasks.py::test_the_classifiers_tell_rows_apart), so an answer given to the wrong row fails.
"""


# ---------------------------------------------------------------------------------------------- oracles


class ClassifierOracle:
    """Plain ``AutoModelForSequenceClassification`` on one row at a time; logits memoized per row."""

    def __init__(self, path: str) -> None:
        import transformers

        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        self.model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
        config = self.model.config
        self.labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        self._logits: dict[tuple[str, int | None], FloatArray] = {}

    def logits(self, text: str, max_length: int | None = None) -> FloatArray:
        key = (text, max_length)
        if key not in self._logits:
            import torch

            enc = self.tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            with torch.inference_mode():
                self._logits[key] = self.model(**enc).logits[0].double().numpy()
        return self._logits[key]

    def scores(self, text: str, max_length: int | None = None, function: str = "softmax") -> FloatArray:
        logits = self.logits(text, max_length)
        if function == "softmax":
            e = np.exp(logits - logits.max())
            return e / e.sum()
        if function == "sigmoid":
            return 1.0 / (1.0 + np.exp(-logits))
        assert function == "none"
        return logits


class EncoderOracle:
    """Plain ``AutoModel`` on one row at a time: the unpadded last_hidden_state, memoized per row."""

    def __init__(self, path: str) -> None:
        import transformers

        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        self.model = transformers.AutoModel.from_pretrained(path).eval()
        self._hidden: dict[str, FloatArray] = {}

    def hidden(self, text: str) -> FloatArray:
        if text not in self._hidden:
            import torch

            enc = self.tokenizer(text, truncation=True, return_tensors="pt")
            with torch.inference_mode():
                self._hidden[text] = self.model(**enc).last_hidden_state[0].double().numpy()
        return self._hidden[text]


class SentenceTransformerOracle:
    """``SentenceTransformer(path).encode(text, normalize_embeddings=True)`` one row at a time, memoized."""

    def __init__(self, path: str) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(path, device="cpu")
        self._vectors: dict[str, FloatArray] = {}

    def __call__(self, text: str) -> FloatArray:
        if text not in self._vectors:
            self._vectors[text] = np.asarray(
                self.model.encode(text, normalize_embeddings=True, convert_to_numpy=True), dtype=np.float64
            )
        return self._vectors[text]


# ---------------------------------------------------------------------------------------------- checks


def swap_blind_pairs(scores: Sequence[FloatArray], tol: float = TOLERANCE) -> float:
    """The fraction of row pairs whose swap `assert_classification_matches` could not see.

    `scores` holds each row's oracle scores (one vector per row). A pair is blind when both rows have the
    same best label and best scores within `tol` of each other: each row's answer then passes for the
    other's. For rows of different texts this must be 0, or a bug that mixes rows up can pass the checks.
    """
    best = [(int(np.argmax(s)), float(np.max(s))) for s in scores]
    pairs = [(a, b) for i, a in enumerate(best) for b in best[i + 1 :]]
    blind = sum(a[0] == b[0] and abs(a[1] - b[1]) <= tol for a, b in pairs)
    return blind / len(pairs) if pairs else 0.0


def assert_classification_matches(
    out: pa.Array,
    texts: list[str | None],
    oracle: ClassifierOracle,
    *,
    max_length: int | None = None,
    function: str = "softmax",
) -> None:
    """Each row's label/score equals the oracle's best label/score for that row alone; nulls stay nulls."""
    rows = out.to_pylist()
    assert len(rows) == len(texts)
    for i, (text, row) in enumerate(zip(texts, rows)):
        if text is None:
            assert row is None, f"row {i}: null input must give a null struct, got {row!r}"
            continue
        expected = oracle.scores(text, max_length, function)
        assert row is not None, f"row {i}: non-null input {text[:40]!r} gave null"
        assert row["score"] == pytest.approx(expected.max(), abs=TOLERANCE), f"row {i}: {text[:40]!r}"
        # The label must be the oracle's best; a different label passes only if it ties the best.
        assert expected[oracle.labels.index(row["label"])] >= expected.max() - TOLERANCE, (
            f"row {i}: got {row['label']!r}, oracle scores {dict(zip(oracle.labels, expected))}"
        )


def assert_embeddings_match(
    out: pa.Array, texts: list[str | None], reference: Callable[[str], FloatArray], *, atol: float = 1e-5
) -> None:
    """Each row's vector equals the per-row reference (cosine >= 0.9999 and allclose); nulls stay nulls."""
    rows = out.to_pylist()
    assert len(rows) == len(texts)
    for i, (text, row) in enumerate(zip(texts, rows)):
        if text is None:
            assert row is None, f"row {i}: null input must give a null list"
            continue
        assert row is not None, f"row {i}: non-null input {text[:40]!r} gave null"
        got = np.asarray(row, dtype=np.float64)
        expected = reference(text)
        assert got.shape == expected.shape, f"row {i}"
        cosine = float(got @ expected / (np.linalg.norm(got) * np.linalg.norm(expected)))
        assert cosine >= 0.9999, f"row {i}: cosine {cosine} for {text[:40]!r}"
        np.testing.assert_allclose(got, expected, atol=atol, rtol=0, err_msg=f"row {i}: {text[:40]!r}")
