"""Per-row errors: on_error="raise" | "null" | "column", bisection down to the guilty rows, max_error_rate.

A row "the model cannot handle" is made with the fault hook: ``SPARKINFER_FAULTS=fail_on_token=ID`` makes
any micro-batch holding token ID raise ValueError, so every row whose text holds the poison word fails,
wherever batching put it. The other rows must equal the per-row oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

from sparkinfer import InferenceError, ModelSpec, SpecError
from sparkinfer.engine import faults, output_type, run, run_stream
from tests.unit.helpers import ClassifierOracle, assert_classification_matches

pytestmark = pytest.mark.usefixtures("empty_cache")

POISON = "zebra"  # one WordPiece token in the MiniLM vocabulary, and in no docstring below


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch, tiny_classifier: str) -> None:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tiny_classifier)(POISON, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1
    monkeypatch.setenv(faults.ENV, f"fail_on_token={ids[0]}")


def _texts(docs: list[str], n: int, poison_every: int) -> list[str | None]:
    texts: list[str | None] = []
    for i in range(n):
        assert POISON not in docs[i].lower()
        text = docs[i] if i % poison_every else f"{docs[i][:80]} {POISON}"
        texts.append(None if i % 17 == 3 else text)
    return texts


def _spec(model: str, **options: Any) -> ModelSpec:
    return ModelSpec(model, task="classification", max_length=64, batch_tokens=1024, **options)


@pytest.mark.parametrize("on_error", ["null", "column"])
def test_only_the_guilty_rows_fail_and_the_others_equal_the_oracle(
    tiny_classifier: str,
    classifier_oracle: Callable[[str], ClassifierOracle],
    docs: list[str],
    on_error: str,
    poisoned: None,
) -> None:
    texts = _texts(docs, 120, poison_every=9)
    guilty = {i for i, t in enumerate(texts) if t is not None and POISON in t}
    spec = _spec(tiny_classifier, on_error=on_error)
    batches = [pa.array(texts[i : i + 25], pa.string()) for i in range(0, len(texts), 25)]
    seen: list[Any] = []
    out = pa.concat_arrays(list(run_stream(spec.with_options(buffer_rows=50), batches, on_metrics=seen.append)))

    assert out.type == output_type(spec)
    assert sum(m.error_rows for m in seen) == len(guilty)
    rows = out.to_pylist()
    if on_error == "column":
        for i, row in enumerate(rows):
            if texts[i] is None:
                assert row is None, f"row {i}"
            elif i in guilty:
                assert row["result"] is None, f"row {i}"
                assert row["error"].startswith("ValueError: injected by SPARKINFER_FAULTS"), f"row {i}"
            else:
                assert row["error"] is None, f"row {i}: {row['error']}"
        rows = [None if row is None else row["result"] for row in rows]
    # Every other row is what the model gives that row alone (a guilty row's answer is null).
    expected_texts = [None if i in guilty else text for i, text in enumerate(texts)]
    assert_classification_matches(pa.array(rows), expected_texts, classifier_oracle(tiny_classifier), max_length=64)


def test_raise_names_the_failing_rows_position_in_the_stream(
    tiny_classifier: str, docs: list[str], poisoned: None
) -> None:
    texts: list[str | None] = [docs[i] for i in range(60)]
    texts[47] = f"{docs[47][:50]} {POISON}"
    batches = [pa.array(texts[i : i + 20], pa.string()) for i in range(0, 60, 20)]
    with pytest.raises(InferenceError, match=r"row 47 of this task's input .*ValueError.*on_error="):
        list(run_stream(_spec(tiny_classifier, buffer_rows=20), batches))


def test_max_error_rate_stops_a_stream_of_garbage(tiny_classifier: str, docs: list[str], poisoned: None) -> None:
    texts = pa.array(_texts(docs, 200, poison_every=2), pa.string())  # about half the rows fail
    with pytest.raises(InferenceError, match=r"rows failed in this task, more than max_error_rate=0.1"):
        run(_spec(tiny_classifier, on_error="null", max_error_rate=0.1), texts)
    out, metrics = run(_spec(tiny_classifier, on_error="null", max_error_rate=0.6), texts)
    assert 0 < metrics.error_rows == out.null_count - texts.null_count


def test_error_policy_options_are_checked_on_the_driver() -> None:
    with pytest.raises(SpecError, match="on_error must be one of"):
        ModelSpec("m", task="embedding", on_error="skip")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="max_error_rate needs on_error='null' or 'column'"):
        ModelSpec("m", task="embedding", max_error_rate=0.1)
    with pytest.raises(SpecError, match=r"max_error_rate must be None or a number in \[0, 1\)"):
        ModelSpec("m", task="embedding", on_error="null", max_error_rate=1.5)
