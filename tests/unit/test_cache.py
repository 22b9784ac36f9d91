"""The per-process model cache: one load per spec, batching fields share it, a new model evicts the old."""

from __future__ import annotations
from collections.abc import Callable

import pyarrow as pa
import pytest

from sparkinfer import ModelSpec
from sparkinfer.engine import cache, run
from sparkinfer.engine.cache import CacheStats
from tests.unit.helpers import ClassifierOracle, assert_classification_matches

pytestmark = pytest.mark.usefixtures("empty_cache")


TEXTS = pa.array(["a short row", None, "another row"], pa.string())


def test_same_spec_loads_once(tiny_classifier: str, classifier_oracle: Callable[[str], ClassifierOracle]) -> None:
    spec = ModelSpec(tiny_classifier, task="classification")
    first_out, first = run(spec, TEXTS)
    second_out, second = run(spec, TEXTS)
    assert cache.stats() == CacheStats(loads=1, hits=1)
    assert (first.model_loads, second.model_loads) == (1, 0)
    assert first.model_load_seconds > 0 and second.model_load_seconds == 0
    # The model served from the cache is the right one, and gives each row its own answer.
    assert_classification_matches(second_out, TEXTS.to_pylist(), classifier_oracle(tiny_classifier))
    assert second_out.to_pylist() == first_out.to_pylist()


def test_specs_differing_only_in_batching_share_the_model(tiny_classifier: str) -> None:
    for batch_tokens, max_batch_size, buffer_rows in [(4096, 256, 4096), (64, 2, 3), (1000, 7, 100)]:
        spec = ModelSpec(
            tiny_classifier,
            task="classification",
            batch_tokens=batch_tokens,
            max_batch_size=max_batch_size,
            buffer_rows=buffer_rows,
        )
        run(spec, TEXTS)
    assert cache.stats() == CacheStats(loads=1, hits=2)


def test_a_long_max_length_spec_is_cached(tiny_classifier: str) -> None:
    # batch_tokens above the default budget must still give a valid cache key.
    a = ModelSpec(tiny_classifier, task="classification", max_length=512, batch_tokens=512)
    b = ModelSpec(tiny_classifier, task="classification", max_length=512, batch_tokens=8192)
    run(a, TEXTS)
    run(b, TEXTS)
    assert cache.stats() == CacheStats(loads=1, hits=1)


def test_a_different_spec_evicts_the_resident_model(tiny_classifier: str, tiny_encoder: str) -> None:
    classify = ModelSpec(tiny_classifier, task="classification")
    embed = ModelSpec(tiny_encoder, task="embedding")
    run(classify, TEXTS)
    run(embed, TEXTS)
    assert cache.stats() == CacheStats(loads=2, hits=0)
    run(embed, TEXTS)
    assert cache.stats() == CacheStats(loads=2, hits=1)
    run(classify, TEXTS)  # evicted by the embedding model: loaded again
    assert cache.stats() == CacheStats(loads=3, hits=1)


def test_a_model_option_is_a_different_entry(tiny_encoder: str) -> None:
    run(ModelSpec(tiny_encoder, task="embedding", pooling="mean"), TEXTS)
    run(ModelSpec(tiny_encoder, task="embedding", pooling="cls"), TEXTS)
    assert cache.stats() == CacheStats(loads=2, hits=0)


def test_clear_resets_counters_and_drops_the_model(tiny_classifier: str) -> None:
    spec = ModelSpec(tiny_classifier, task="classification")
    run(spec, TEXTS)
    cache.clear()
    assert cache.stats() == CacheStats(loads=0, hits=0)
    _, metrics = run(spec, TEXTS)
    assert metrics.model_loads == 1
    assert cache.stats() == CacheStats(loads=1, hits=0)


def test_get_model_reports_whether_it_loaded(tiny_classifier: str) -> None:
    spec = ModelSpec(tiny_classifier, task="classification")
    first, loaded = cache.get_model(spec)
    again, loaded_again = cache.get_model(spec.with_options(batch_tokens=128))
    assert (loaded, loaded_again) == (True, False)
    assert again is first
    assert first.spec == spec.cache_key
