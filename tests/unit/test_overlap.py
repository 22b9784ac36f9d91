"""Overlap: the next chunk is tokenized, and the next micro-batch padded, while the model computes.

Concurrency is shown with events, not timings: the forward pass of chunk 0 waits (briefly) for the
tokenization of chunk 1 to start. With overlap it does; without, the two never run at the same time.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

from sparkinfer import ModelSpec
from sparkinfer.engine import Metrics, cache, run, run_stream, runner
from tests.unit.helpers import ClassifierOracle, assert_classification_matches

pytestmark = pytest.mark.usefixtures("empty_cache")


def stream(spec: ModelSpec, docs: list[str]) -> tuple[list[Any], list[Metrics]]:
    calls: list[Metrics] = []
    batches = [pa.array(docs[i : i + 10], pa.string()) for i in range(0, 60, 10)]
    outs = list(run_stream(spec, batches, on_metrics=calls.append))
    assert [len(o) for o in outs] == [10] * 6
    return [row for out in outs for row in out.to_pylist()], calls


def test_overlap_changes_nothing_but_timing(
    tiny_classifier: str, classifier_oracle: Callable[[str], ClassifierOracle], docs: list[str]
) -> None:
    spec = ModelSpec(tiny_classifier, task="classification", batch_tokens=256, buffer_rows=20)
    with_overlap, calls_on = stream(spec, docs)
    without, calls_off = stream(spec.with_options(overlap=False), docs)
    assert with_overlap == without  # same micro-batches, so bit-identical outputs
    # ...and both right: a micro-batch padded ahead must come back to its own rows.
    assert_classification_matches(pa.array(with_overlap), list(docs[:60]), classifier_oracle(tiny_classifier))
    counters = ("rows", "real_tokens", "padded_tokens", "truncated_rows", "micro_batches", "oom_splits")
    def counts(calls: list[Metrics]) -> list[list[int]]:
        return [[getattr(m, c) for c in counters] for m in calls]

    assert counts(calls_on) == counts(calls_off)
    assert len(calls_on) == 3


@pytest.mark.parametrize("overlap", [True, False])
def test_the_next_chunk_is_tokenized_while_the_model_computes(
    monkeypatch: pytest.MonkeyPatch, tiny_classifier: str, docs: list[str], overlap: bool
) -> None:
    spec = ModelSpec(tiny_classifier, task="classification", buffer_rows=20, overlap=overlap)
    loaded, _ = cache.get_model(spec)
    forward_running, next_chunk_tokenizing = threading.Event(), threading.Event()
    tokenize, forward = runner._tokenize, loaded.head.forward
    tokenized_in: list[str] = []
    saw_tokenizing: list[bool] = []

    def spy_tokenize(model: Any, texts: pa.Array, offset: int) -> Any:
        tokenized_in.append(threading.current_thread().name)
        if len(tokenized_in) == 2:
            next_chunk_tokenizing.set()
            forward_running.wait(timeout=5 if overlap else 0.2)
        return tokenize(model, texts, offset)

    def spy_forward(input_ids: Any, attention_mask: Any) -> Any:
        if not saw_tokenizing:  # the first micro-batch of chunk 0
            forward_running.set()
            saw_tokenizing.append(next_chunk_tokenizing.wait(timeout=5 if overlap else 0.2))
        return forward(input_ids, attention_mask)

    monkeypatch.setattr(runner, "_tokenize", spy_tokenize)
    monkeypatch.setattr(loaded.head, "forward", spy_forward)
    stream(spec, docs)

    assert saw_tokenizing == [overlap]
    assert len(tokenized_in) == 3
    assert set(tokenized_in) == ({"sparkinfer-tokenize_0"} if overlap else {threading.current_thread().name})


@pytest.mark.parametrize("overlap", [True, False])
def test_the_next_micro_batch_is_padded_in_the_background(
    monkeypatch: pytest.MonkeyPatch, tiny_classifier: str, docs: list[str], overlap: bool
) -> None:
    tensors = runner._tensors
    built_in: list[str] = []

    def spy(*args: Any) -> Any:
        built_in.append(threading.current_thread().name.rsplit("_", 1)[0])
        return tensors(*args)

    monkeypatch.setattr(runner, "_tensors", spy)
    spec = ModelSpec(tiny_classifier, task="classification", batch_tokens=128, overlap=overlap)
    _, metrics = run(spec, pa.array(docs[:40], pa.string()))

    assert len(built_in) == metrics.micro_batches > 3
    main = threading.current_thread().name
    # Only the first micro-batch is padded in the task's own thread; each later one was prepared ahead.
    expected = {main: 1, "sparkinfer-batch": metrics.micro_batches - 1} if overlap else {main: len(built_in)}
    assert Counter(built_in) == expected
