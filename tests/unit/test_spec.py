"""ModelSpec: frozen, hashable, picklable, equal by value, and every invalid value is a helpful SpecError."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest

from sparkinfer import ModelSpec, SpecError


def test_spec_is_frozen() -> None:
    spec = ModelSpec("m", task="embedding")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.batch_tokens = 1  # type: ignore[misc]
    assert spec.batch_tokens == 4096


def test_spec_is_keyword_only_after_model() -> None:
    with pytest.raises(TypeError):
        ModelSpec("m", "embedding")  # type: ignore[call-arg]


def test_specs_are_equal_and_hash_equal_by_value() -> None:
    a = ModelSpec("m", task="classification", top_k=2, batch_tokens=512)
    b = ModelSpec("m", task="classification", top_k=2, batch_tokens=512)
    c = ModelSpec("m", task="classification", top_k=3, batch_tokens=512)
    assert a == b and a is not b
    assert hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    assert {a: "x"}[b] == "x"


def test_spec_survives_pickling() -> None:
    spec = ModelSpec("/models/x", task="embedding", pooling="cls", normalize=True, max_length=128, device="cuda:1")
    copy = pickle.loads(pickle.dumps(spec))
    assert copy == spec
    assert hash(copy) == hash(spec)
    assert dataclasses.asdict(copy) == dataclasses.asdict(spec)


# (task, options, the field the message must name, the got-value it must show, a hint it must give)
INVALID: list[tuple[str, Any, dict[str, Any], str, str, str]] = [
    ("bad task", "m", {"task": "summarize"}, "ModelSpec.task", "'summarize'", "'embedding', 'classification'"),
    ("zero batch_tokens", "m", {"batch_tokens": 0}, "ModelSpec.batch_tokens", "(got 0)", "positive int"),
    ("negative batch_tokens", "m", {"batch_tokens": -5}, "ModelSpec.batch_tokens", "(got -5)", "positive int"),
    ("bool batch_tokens", "m", {"batch_tokens": True}, "ModelSpec.batch_tokens", "(got True)", "positive int"),
    ("float batch_tokens", "m", {"batch_tokens": 512.0}, "ModelSpec.batch_tokens", "(got 512.0)", "positive int"),
    ("zero max_batch_size", "m", {"max_batch_size": 0}, "ModelSpec.max_batch_size", "(got 0)", "positive int"),
    ("bool max_length", "m", {"max_length": True}, "ModelSpec.max_length", "(got True)", "positive int or None"),
    ("zero buffer_rows", "m", {"buffer_rows": 0}, "ModelSpec.buffer_rows", "(got 0)", "positive int"),
    (
        "batch_tokens below max_length",
        "m",
        {"max_length": 512, "batch_tokens": 256},
        "ModelSpec.batch_tokens",
        "batch_tokens=256",
        "raise batch_tokens or lower max_length",
    ),
    (
        "return_all_scores with top_k",
        "m",
        {"task": "classification", "return_all_scores": True, "top_k": 2},
        "ModelSpec.return_all_scores",
        "top_k=2",
        "use top_k=None",
    ),
    (
        "classification option on embedding",
        "m",
        {"top_k": 2},
        "ModelSpec.top_k",
        "top_k=2",
        "use task='classification'",
    ),
    (
        "embedding option on classification",
        "m",
        {"task": "classification", "pooling": "cls"},
        "ModelSpec.pooling",
        "pooling='cls'",
        "use task='embedding'",
    ),
    ("zero top_k", "m", {"task": "classification", "top_k": 0}, "ModelSpec.top_k", "(got 0)", "positive int"),
    ("bad device", "m", {"device": "gpu"}, "ModelSpec.device", "'gpu'", "'cuda:N'"),
    ("bad device index", "m", {"device": "cuda:x"}, "ModelSpec.device", "'cuda:x'", "'cuda:N'"),
    ("bad dtype", "m", {"dtype": "fp16"}, "ModelSpec.dtype", "'fp16'", "'float16'"),
    ("bad pooling", "m", {"pooling": "avg"}, "ModelSpec.pooling", "'avg'", "'mean'"),
    ("non-bool normalize", "m", {"normalize": 1}, "ModelSpec.normalize", "(got 1)", "True or False"),
    (
        "bad function_to_apply",
        "m",
        {"task": "classification", "function_to_apply": "relu"},
        "ModelSpec.function_to_apply",
        "'relu'",
        "'softmax'",
    ),
    ("empty revision", "m", {"revision": ""}, "ModelSpec.revision", "(got '')", "non-empty string or None"),
    ("empty model", "", {}, "ModelSpec.model", "(got '')", "pass e.g."),
    ("blank model", "   ", {}, "ModelSpec.model", "(got '   ')", "pass e.g."),
    ("non-str model", 3, {}, "ModelSpec.model", "(got 3)", "pass e.g."),
    ("non-bool overlap", "m", {"overlap": "yes"}, "ModelSpec.overlap", "(got 'yes')", "True or False"),
]


@pytest.mark.parametrize(
    ("model", "options", "field", "got", "hint"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_values_raise_spec_error_naming_field_value_and_hint(
    model: Any, options: dict[str, Any], field: str, got: str, hint: str
) -> None:
    kwargs = {"task": "embedding", **options}
    with pytest.raises(SpecError) as info:
        ModelSpec(model, **kwargs)
    message = str(info.value)
    assert field in message
    assert got in message
    assert hint in message
    assert isinstance(info.value, ValueError)  # SpecError is a ValueError for callers that catch those


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_valid_devices_are_accepted(device: str) -> None:
    assert ModelSpec("m", task="embedding", device=device).device == device


def test_batch_tokens_equal_to_max_length_is_accepted() -> None:
    assert ModelSpec("m", task="embedding", max_length=256, batch_tokens=256).batch_tokens == 256


def test_cache_key_ignores_batching_fields() -> None:
    a = ModelSpec("m", task="embedding", batch_tokens=128, max_batch_size=4, buffer_rows=10)
    b = ModelSpec("m", task="embedding", batch_tokens=9000, max_batch_size=300, buffer_rows=7)
    assert a != b
    assert a.cache_key == b.cache_key
    assert hash(a.cache_key) == hash(b.cache_key)
    assert a.cache_key == ModelSpec("m", task="embedding")


@pytest.mark.parametrize(
    "other",
    [
        {"pooling": "cls"},
        {"normalize": False},
        {"max_length": 64},
        {"dtype": "float16"},
        {"device": "cpu"},
        {"revision": "abc"},
        {"trust_remote_code": True},
    ],
)
def test_cache_key_keeps_model_fields(other: dict[str, Any]) -> None:
    base = ModelSpec("m", task="embedding")
    assert base.with_options(**other).cache_key != base.cache_key


def test_cache_key_of_a_long_max_length_spec_is_valid() -> None:
    # max_length above the default budget: resetting batch_tokens to its default must not break validation.
    a = ModelSpec("m", task="embedding", max_length=8192, batch_tokens=16384)
    b = ModelSpec("m", task="embedding", max_length=8192, batch_tokens=32768, max_batch_size=8)
    assert a.cache_key == b.cache_key
    assert a.cache_key.max_length == 8192


def test_with_options_replaces_and_revalidates() -> None:
    spec = ModelSpec("m", task="classification")
    changed = spec.with_options(top_k=2, batch_tokens=1024)
    assert (changed.top_k, changed.batch_tokens) == (2, 1024)
    assert spec.top_k is None  # the original is untouched
    with pytest.raises(SpecError, match=r"ModelSpec\.batch_tokens must be a positive int \(got 0\)"):
        spec.with_options(batch_tokens=0)


def test_with_options_rejects_unknown_names() -> None:
    spec = ModelSpec("m", task="embedding")
    with pytest.raises(SpecError) as info:
        spec.with_options(batch_size=8, pooling="cls")
    message = str(info.value)
    assert "'batch_size'" in message
    assert "'max_batch_size'" in message  # the hint lists the real options
    assert "'pooling'" not in message.split(";")[0]  # only the unknown name is blamed

