"""The per-process model cache: one load per load key, head options and batching share it, new weights evict the old."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

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


@pytest.mark.parametrize(
    ("fixture", "task", "variants"),
    [
        ("tiny_encoder", "embedding", [{"pooling": "mean"}, {"pooling": "cls"}, {"max_length": 4},
                                       {"normalize": True}]),
        ("tiny_causal_lm", "generation", [{"max_new_tokens": 3}, {"max_new_tokens": 6, "return_details": True},
                                          {"max_length": 5, "max_new_tokens": 3}]),
    ],
)
def test_head_options_share_the_weights_and_bind_their_own_head(
    request: pytest.FixtureRequest, fixture: str, task: str, variants: list[dict[str, Any]]
) -> None:
    """Specs of one load key load the weights once; each still gets exactly what it would get alone."""
    path = request.getfixturevalue(fixture)
    texts = pa.array(["a short row", None, "another row, somewhat longer than the first one"], pa.string())
    specs = [ModelSpec(path, task=task, device="cpu", **options) for options in variants]
    shared = [run(spec, texts) for spec in [*specs, specs[0]]]  # the first again: nothing of the others leaked
    assert cache.stats() == CacheStats(loads=1, hits=len(specs))
    assert [m.model_loads for _, m in shared] == [1] + [0] * len(specs)
    alone = []
    for spec in specs:
        cache.clear()
        alone.append(run(spec, texts)[0].to_pylist())
    assert [out.to_pylist() for out, _ in shared] == [*alone, alone[0]]
    assert len({repr(rows) for rows in alone}) == len(specs)  # the options really change the output


@pytest.mark.parametrize("options", [{"dtype": "bfloat16"}, {"revision": "main"}, {"task": "classification"}])
def test_options_that_decide_the_weights_load_again(tiny_classifier: str, options: dict[str, Any]) -> None:
    base = ModelSpec(tiny_classifier, task="embedding", device="cpu")
    other = dataclasses.replace(base, **options)
    assert base.load_key != other.load_key
    run(base, TEXTS)
    run(other, TEXTS)
    assert cache.stats() == CacheStats(loads=2, hits=0)


def test_a_preset_and_its_quantization_spec_share_a_load_key() -> None:
    from sparkinfer import QuantizationSpec

    assert ModelSpec("m", task="embedding", quantization="4bit").load_key == ModelSpec(
        "m", task="embedding", quantization=QuantizationSpec(bits=4)).load_key
    assert ModelSpec("m", task="embedding", pooling="cls", max_length=8, batch_tokens=64).load_key == ModelSpec(
        "m", task="embedding").load_key


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


def test_skeletons_for_a_host_do_not_evict_the_weights(tiny_classifier: str, tiny_encoder: str) -> None:
    """A worker alternating host="worker" and host="executor" jobs loads neither the weights nor the skeleton again."""
    spec = ModelSpec(tiny_classifier, task="classification")
    weights, fresh = cache.get_model(spec, device="cpu")
    skeleton, fresh_skeleton = cache.get_model(spec, device="meta")
    assert fresh and fresh_skeleton and skeleton.memory_bytes == 0 and weights.memory_bytes > 0
    assert {p.device.type for p in skeleton.model.parameters()} == {"meta"}
    assert cache.get_model(spec, device="cpu") == (weights, False)  # same spec, other device: its own binding
    assert cache.get_model(spec, device="meta") == (skeleton, False)
    # Other weights still evict the resident ones, and leave the skeleton alone.
    cache.get_model(ModelSpec(tiny_encoder, task="embedding"), device="cpu")
    assert cache.get_model(spec, device="meta")[1] is False
    assert cache.get_model(spec, device="cpu")[1] is True
