"""The acceptance property: the engine's batched run equals running every row alone.

`run` tokenizes, sorts rows by length, cuts token-budget micro-batches, pads each to its longest row
and restores the input order. None of that may change a single output: for random texts (nulls, empty
strings, short and truncated rows, random order) and random batching settings, every row must equal
plain transformers / sentence-transformers run on that row alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkinfer import ModelSpec, SpecError
from sparkinfer.engine import Metrics, run, run_stream
from sparkinfer.engine.tasks import get_task
from tests.unit.helpers import (
    ClassifierOracle,
    SentenceTransformerOracle,
    assert_classification_matches,
    assert_embeddings_match,
)

PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
"""Model calls take far longer than hypothesis's default deadline; examples stay few to keep the suite fast."""


def texts_strategy(words: list[str], *, max_rows: int, long_words: int) -> st.SearchStrategy[list[str | None]]:
    """Rows of random word counts cut from real docstrings, mixed with nulls and empty/blank strings."""
    count = st.one_of(st.integers(0, 6), st.integers(0, 60), st.integers(long_words // 2, long_words))
    text = st.builds(lambda start, n: " ".join(words[start : start + n]), st.integers(0, len(words) - 1), count)
    return st.lists(st.one_of(text, text, st.none(), st.sampled_from(["", " "])), max_size=max_rows)


def split_into_batches(data: st.DataObject, array: pa.Array) -> list[pa.Array]:
    """Cut `array` at random points into consecutive Arrow batches (some possibly empty)."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(array)), max_size=6), label="cuts"))
    bounds = [0, *cuts, len(array)]
    return [array.slice(a, b - a) for a, b in zip(bounds, bounds[1:])]


def token_counts(tokenizer: Any, texts: list[str | None]) -> list[int]:
    """Untruncated token counts (special tokens included) of the non-null rows, from the HF tokenizer."""
    valid = [t for t in texts if t is not None]
    return [len(ids) for ids in tokenizer(valid, truncation=False)["input_ids"]] if valid else []


def model_limit(tokenizer: Any, model: Any) -> int:
    return int(min(tokenizer.model_max_length, model.config.max_position_embeddings))


def check_metrics(metrics: Metrics, texts: list[str | None], counts: list[int], spec: ModelSpec, length: int) -> None:
    """The counters agree with the tokenizer's own per-row counts and the batching settings."""
    valid = len(counts)
    assert metrics.rows == len(texts)
    assert metrics.null_rows == len(texts) - valid
    assert metrics.real_tokens == sum(min(c, length) for c in counts)
    assert metrics.truncated_rows == sum(c > length for c in counts)
    # Repeated inputs (blank strings, above all) are computed once: their tokens are not padded.
    assert 0 <= metrics.duplicate_rows <= valid and 0 <= metrics.duplicate_tokens <= metrics.real_tokens
    assert metrics.padded_tokens >= metrics.real_tokens - metrics.duplicate_tokens
    # Each micro-batch stays within the budget, except a single row longer than it (at most `length`).
    assert metrics.padded_tokens <= metrics.micro_batches * max(spec.batch_tokens, length)
    computed = valid - metrics.duplicate_rows
    assert math.ceil(computed / spec.max_batch_size) <= metrics.micro_batches <= computed


def check_stream(
    spec: ModelSpec, batches: list[pa.Array], buffer_rows: int, *, overlap: bool = True
) -> tuple[pa.Array, list[Metrics]]:
    """run_stream over `batches`: one output per input batch, same lengths; engine calls within buffer_rows."""
    calls: list[Metrics] = []
    streaming = spec.with_options(buffer_rows=buffer_rows, overlap=overlap)
    outs = list(run_stream(streaming, batches, on_metrics=calls.append))
    assert [len(o) for o in outs] == [len(b) for b in batches]
    assert all(m.rows <= buffer_rows for m in calls)
    assert sum(m.rows for m in calls) == sum(len(b) for b in batches)
    return pa.concat_arrays(outs), calls


# ------------------------------------------------------------------------------------ the property


@settings(PROPERTY, max_examples=40)
@given(data=st.data())
def test_classifier_batched_equals_each_row_alone(
    tiny_classifier: str,
    classifier_oracle: Callable[[str], ClassifierOracle],
    words: list[str],
    data: st.DataObject,
) -> None:
    oracle = classifier_oracle(tiny_classifier)
    texts = data.draw(texts_strategy(words, max_rows=40, long_words=450), label="texts")
    max_length = data.draw(st.sampled_from([None, 8, 64]), label="max_length")
    spec = ModelSpec(
        tiny_classifier,
        task="classification",
        max_length=max_length,
        batch_tokens=data.draw(st.integers(max_length or 1, 3000), label="batch_tokens"),
        max_batch_size=data.draw(st.integers(1, 48), label="max_batch_size"),
    )
    array = pa.array(texts, type=data.draw(st.sampled_from([pa.string(), pa.large_string()]), label="type"))

    out, metrics = run(spec, array)

    assert out.type == get_task("classification").arrow_type(spec)
    assert_classification_matches(out, texts, oracle, max_length=max_length)
    length = max_length or model_limit(oracle.tokenizer, oracle.model)
    check_metrics(metrics, texts, token_counts(oracle.tokenizer, texts), spec, length)

    streamed, _ = check_stream(
        spec,
        split_into_batches(data, array),
        data.draw(st.integers(1, 64), label="buffer_rows"),
        overlap=data.draw(st.booleans(), label="overlap"),
    )
    assert_classification_matches(streamed, texts, oracle, max_length=max_length)


@settings(PROPERTY, max_examples=15)
@given(data=st.data())
def test_minilm_batched_equals_each_row_alone(
    minilm_path: str, minilm_oracle: SentenceTransformerOracle, words: list[str], data: st.DataObject
) -> None:
    texts = data.draw(texts_strategy(words, max_rows=24, long_words=300), label="texts")
    spec = ModelSpec(
        minilm_path,
        task="embedding",
        batch_tokens=data.draw(st.integers(1, 3000), label="batch_tokens"),
        max_batch_size=data.draw(st.integers(1, 32), label="max_batch_size"),
    )
    array = pa.array(texts, type=pa.string())

    out, metrics = run(spec, array)

    assert out.type == pa.list_(pa.float32())
    assert_embeddings_match(out, texts, minilm_oracle)
    # MiniLM's sentence-transformers config caps rows at 256 tokens.
    check_metrics(metrics, texts, token_counts(minilm_oracle.model.tokenizer, texts), spec, 256)

    streamed, _ = check_stream(
        spec,
        split_into_batches(data, array),
        data.draw(st.integers(1, 32), label="buffer_rows"),
        overlap=data.draw(st.booleans(), label="overlap"),
    )
    assert_embeddings_match(streamed, texts, minilm_oracle)


# ------------------------------------------------------------------------------------ run_stream


def pooled_calls(sizes: list[int], buffer_rows: int) -> list[int]:
    """Reference for run_stream's documented pooling: gather batches until buffer_rows rows wait, then cut
    the pool into ceil(n / buffer_rows) near-even engine calls."""
    calls: list[int] = []
    waiting = 0
    for i, size in enumerate(sizes):
        waiting += size
        if waiting >= buffer_rows or i == len(sizes) - 1:
            chunks = max(1, -(-waiting // buffer_rows))
            calls += [len(c) for c in np.array_split(np.arange(waiting), chunks)]
            waiting = 0
    return calls


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "sequential"])
@pytest.mark.parametrize(
    ("sizes", "buffer_rows"),
    [
        pytest.param([3, 5, 1, 0, 7, 2, 9, 1, 1], 10, id="small-batches-pooled"),
        pytest.param([1] * 20, 8, id="single-rows-pooled"),
        pytest.param([50], 16, id="one-batch-larger-than-buffer"),
        pytest.param([40, 2, 30], 16, id="large-and-small"),
        pytest.param([0], 4, id="one-empty-batch"),
    ],
)
def test_run_stream_keeps_batch_lengths_and_equals_run(
    tiny_classifier: str,
    classifier_oracle: Callable[[str], ClassifierOracle],
    docs: list[str],
    sizes: list[int],
    buffer_rows: int,
    overlap: bool,
) -> None:
    oracle = classifier_oracle(tiny_classifier)
    texts: list[str | None] = [None if i % 7 == 3 else docs[i] for i in range(sum(sizes))]
    array = pa.array(texts, type=pa.string())
    offsets = np.cumsum([0, *sizes])
    batches = [array.slice(a, b - a) for a, b in zip(offsets, offsets[1:])]
    spec = ModelSpec(tiny_classifier, task="classification", batch_tokens=600, max_batch_size=6)

    streamed, calls = check_stream(spec, batches, buffer_rows, overlap=overlap)

    assert sorted(m.rows for m in calls) == sorted(pooled_calls(sizes, buffer_rows))
    whole, _ = run(spec, array)
    for got, expected in zip(streamed.to_pylist(), whole.to_pylist()):
        if expected is None:
            assert got is None
        else:
            assert got["label"] == expected["label"]
            assert got["score"] == pytest.approx(expected["score"], abs=1e-5)
    assert_classification_matches(streamed, texts, oracle)
    total = sum(calls, Metrics())
    assert (total.rows, total.null_rows) == (len(texts), texts.count(None))


def test_run_stream_with_no_batches_yields_nothing(tiny_classifier: str) -> None:
    spec = ModelSpec(tiny_classifier, task="classification")
    assert list(run_stream(spec, [])) == []


# ------------------------------------------------------------------------------------ metrics and errors


def test_metrics_count_rows_tokens_truncations_and_batches(
    tiny_classifier: str, classifier_oracle: Callable[[str], ClassifierOracle], docs: list[str]
) -> None:
    oracle = classifier_oracle(tiny_classifier)
    texts: list[str | None] = [*docs[:60], None, "", None, " ".join(docs[60:70])]
    spec = ModelSpec(tiny_classifier, task="classification", max_length=16, batch_tokens=64, max_batch_size=8)

    _, metrics = run(spec, pa.array(texts, type=pa.string()))

    counts = token_counts(oracle.tokenizer, texts)
    assert metrics.rows == 64
    assert metrics.null_rows == 2
    assert metrics.real_tokens == sum(min(c, 16) for c in counts)
    assert metrics.truncated_rows == sum(c > 16 for c in counts)
    assert 0 < metrics.truncated_rows < 62  # the sample has both short and long rows
    assert metrics.padded_tokens >= metrics.real_tokens - metrics.duplicate_tokens
    # batch_tokens=64 over rows of at most 16 tokens: at most 4 full-length rows, padded, per micro-batch.
    assert metrics.padded_tokens <= 64 * metrics.micro_batches
    assert metrics.micro_batches >= math.ceil(62 / 8)
    computed = metrics.real_tokens - metrics.duplicate_tokens
    assert metrics.padding_efficiency == pytest.approx(computed / metrics.padded_tokens)


def test_metrics_add_and_to_dict() -> None:
    a = Metrics(rows=3, null_rows=1, real_tokens=10, padded_tokens=12, truncated_rows=1, micro_batches=1)
    b = Metrics(rows=2, real_tokens=6, padded_tokens=8, micro_batches=2, forward_seconds=0.5)
    total = a + b
    assert (total.rows, total.null_rows, total.real_tokens, total.padded_tokens) == (5, 1, 16, 20)
    assert (total.truncated_rows, total.micro_batches, total.forward_seconds) == (1, 3, 0.5)
    assert total.to_dict()["padding_efficiency"] == pytest.approx(16 / 20)
    assert Metrics().padding_efficiency == 1.0


@pytest.mark.parametrize(
    "array",
    [pa.array([1, 2]), pa.array([b"abc"]), pa.array([["a"]]), pa.array([None])],
    ids=["int64", "binary", "list", "null"],
)
def test_non_string_input_raises_spec_error(tiny_classifier: str, array: pa.Array) -> None:
    spec = ModelSpec(tiny_classifier, task="classification")
    with pytest.raises(SpecError) as info:
        run(spec, array)
    assert str(array.type) in str(info.value)
    assert "cast" in str(info.value)
