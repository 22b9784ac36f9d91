"""Device placement from Spark's GPU assignment, the shared-GPU warning, and the cache's one-model-per-worker.

No GPU needed: the assignment comes in as plain data (or a fake TaskContext), and the CUDA device count
is a parameter (or monkeypatched).
"""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sparkinfer import ModelLoadError, ModelSpec, SpecError
from sparkinfer.engine import cache, runner
from sparkinfer.engine.cache import CacheStats, ProcessCache
from sparkinfer.engine.loading import LoadedModel, Weights, load_model, resolve_device
from sparkinfer.engine.placement import TaskResources, choose_device, resolve_host, shared_gpu_warning


def place(requested: str, addresses: tuple[str, ...] | None, visible: str | None = None, count: int = 4) -> str:
    resources = None if addresses is None else TaskResources(addresses)
    return choose_device(requested, resources, cuda_visible_devices=visible, cuda_device_count=count)


# ------------------------------------------------------------------------------------------ choose_device


@pytest.mark.parametrize(
    ("requested", "addresses", "visible", "count", "expected"),
    [
        pytest.param("auto", ("1",), None, 2, "cuda:1", id="spark-address-1-is-cuda-1"),
        pytest.param("auto", ("0",), None, 2, "cuda:0", id="spark-address-0"),
        pytest.param("cuda", ("3",), None, 4, "cuda:3", id="cuda-takes-the-assignment"),
        pytest.param("auto", ("1", "2"), None, 4, "cuda:1", id="several-addresses-first-one"),
        pytest.param("auto", ("3",), "2,3", 2, "cuda:1", id="address-listed-in-visible-devices"),
        pytest.param("auto", ("GPU-b",), "GPU-a,GPU-b", 2, "cuda:1", id="uuid-listed-in-visible-devices"),
        pytest.param("auto", ("0",), "5", 1, "cuda:0", id="renumbered-container"),
        pytest.param("auto", (), None, 0, "cpu", id="no-assignment-no-cuda-is-cpu"),
        pytest.param("auto", None, None, 0, "cpu", id="outside-spark-no-cuda-is-cpu"),
        pytest.param("auto", (), "1", 1, "cuda:0", id="no-assignment-first-visible-device"),
        pytest.param("auto", None, None, 2, "cuda:0", id="outside-spark-with-cuda"),
        pytest.param("cpu", ("1",), None, 2, "cpu", id="explicit-cpu-wins"),
        pytest.param("cuda:0", ("1",), None, 2, "cuda:0", id="explicit-index-wins"),
        pytest.param("mps", None, None, 0, "mps", id="mps"),
    ],
)
def test_choose_device(
    requested: str, addresses: tuple[str, ...] | None, visible: str | None, count: int, expected: str
) -> None:
    assert place(requested, addresses, visible, count) == expected


@pytest.mark.parametrize(
    ("requested", "addresses", "visible", "count", "error", "message"),
    [
        ("auto", ("1",), None, 0, ModelLoadError, r"Spark assigned GPU '1' to this task, but torch sees no CUDA"),
        ("auto", ("3",), None, 2, ModelLoadError, r"sees only 2 CUDA device\(s\)"),
        ("auto", ("GPU-x",), "GPU-a", 1, ModelLoadError, r"neither an index nor listed in CUDA_VISIBLE_DEVICES"),
        ("cuda", (), None, 0, SpecError, r"ModelSpec\.device is 'cuda' but this process sees no CUDA device"),
        ("cuda:2", (), None, 2, SpecError, r"ModelSpec\.device is 'cuda:2' but this process sees 2 CUDA"),
    ],
)
def test_impossible_placements_say_why(
    requested: str, addresses: tuple[str, ...], visible: str | None, count: int, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        place(requested, addresses, visible, count)


# ----------------------------------------------------------------------------------- fake TaskContext


class FakeResource:
    def __init__(self, addresses: list[str]) -> None:
        self.name = "gpu"
        self.addresses = addresses


class FakeTaskContext:
    """What `_run_task` reads from pyspark's TaskContext."""

    def __init__(self, resources: dict[str, FakeResource]) -> None:
        self._resources = resources

    def resources(self) -> dict[str, FakeResource]:
        return self._resources

    def cpus(self) -> int:
        return 1


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make torch report two CUDA devices and clear CUDA_VISIBLE_DEVICES, as a Spark standalone worker has."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_task_context_gpu_address_1_is_cuda_1(two_gpus: None) -> None:
    from pyspark.resource import ResourceInformation

    from sparkinfer.spark.udf import _task_resources

    real = FakeTaskContext({"gpu": ResourceInformation("gpu", ["1"])})
    resources = _task_resources(real, 0.5)
    assert resources == TaskResources(("1",), 0.5)
    assert resolve_device("auto", resources) == "cuda:1"
    assert resolve_device("auto", _task_resources(FakeTaskContext({"gpu": FakeResource(["0"])}), None)) == "cuda:0"


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make torch report no CUDA device, whatever this machine has."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_task_context_without_resources_is_cpu(no_cuda: None) -> None:
    from sparkinfer.spark.udf import _task_resources

    resources = _task_resources(FakeTaskContext({}), None)
    assert resources == TaskResources((), None)
    assert resolve_device("auto", resources) == "cpu"
    assert _task_resources(None, None) is None


# ------------------------------------------------------------------------------------ shared-GPU warning


def test_shared_gpu_warning_names_copies_and_memory() -> None:
    message = shared_gpu_warning(TaskResources(("1",), 0.25), device="cuda:1", model="/m/llama", model_bytes=3 * 2**30)
    assert message == (
        "spark.task.resource.gpu.amount=0.25 lets 4 tasks share cuda:1, each in its own Python worker with its own "
        "copy of /m/llama (3.00 GiB each, up to 12.00 GiB on that GPU); use host='executor' (or the default "
        "'auto') for one copy per GPU fed by every task, or set spark.task.resource.gpu.amount=1"
    )
    assert "3 tasks" in str(shared_gpu_warning(TaskResources(("0",), 0.33), device="cuda:0", model="m", model_bytes=1))


@pytest.mark.parametrize(
    ("resources", "device"),
    [
        (TaskResources(("0",), 1.0), "cuda:0"),
        (TaskResources((), 0.5), "cpu"),
        (TaskResources(("0",)), "cuda:0"),
        (None, "cuda:0"),
    ],
)
def test_no_shared_gpu_warning_for_a_whole_gpu_or_the_cpu(resources: TaskResources | None, device: str) -> None:
    assert shared_gpu_warning(resources, device=device, model="m", model_bytes=2**30) is None


@pytest.mark.parametrize(
    ("requested", "resources", "device", "expected"),
    [
        ("auto", TaskResources(("0",), 0.125), "cuda:0", "executor"),  # 8 slots share one GPU
        ("auto", TaskResources(("0",), 1.0), "cuda:0", "worker"),  # a whole GPU per task: nothing to share
        ("auto", TaskResources(("0",)), "cuda:0", "worker"),  # amount unknown
        ("auto", TaskResources((), 0.5), "cpu", "worker"),  # CPU: separate workers measured faster
        ("auto", None, "cpu", "worker"),
        ("worker", TaskResources(("0",), 0.125), "cuda:0", "worker"),
        ("executor", None, "cpu", "executor"),
    ],
)
def test_auto_takes_a_host_where_task_slots_share_a_gpu(
    requested: str, resources: TaskResources | None, device: str, expected: str
) -> None:
    assert resolve_host(requested, resources, device) == expected


@pytest.mark.parametrize(
    ("requested", "resources", "expected"),
    [
        ("auto", TaskResources(), "executor"),  # a Spark task: continuous decoding in the host
        ("auto", None, "worker"),  # no Spark task, no executor to share
        ("worker", TaskResources(), "worker"),
    ],
)
def test_auto_takes_a_host_for_generation_it_decodes_continuously(
    requested: str, resources: TaskResources | None, expected: str
) -> None:
    assert resolve_host(requested, resources, "cpu", continuous=True) == expected


# ---------------------------------------------------------------------------------------------- the cache


class FakeModel:
    """Holds a reference cycle, as real modules (and their hooks) do: only the garbage collector frees it."""

    def __init__(self) -> None:
        self.me = self


def fake_weights(spec: ModelSpec, device: str, memory_bytes: int = 2**30) -> Weights:
    return Weights(spec.load_key, FakeModel(), None, Path("/fake"), device, 0.01, memory_bytes)


def fake_bind(weights: Weights, spec: ModelSpec) -> LoadedModel:
    return LoadedModel(spec, weights, None, None, 8, 0)  # no head: these tests run nothing


@pytest.fixture
def fake_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[ModelSpec, str, bool]]]:
    """Replace the process cache with one whose loader records (spec, device, previous model still alive)."""
    loads: list[tuple[ModelSpec, str, bool]] = []
    alive: list[weakref.ref[Any]] = []

    def loader(spec: ModelSpec, device: str) -> Weights:
        loads.append((spec, device, any(ref() is not None for ref in alive)))
        weights = fake_weights(spec, device)
        alive.append(weakref.ref(weights.model))
        return weights

    monkeypatch.setattr(cache, "_CACHE", ProcessCache(loader, binder=fake_bind))
    yield loads


def test_eviction_frees_the_previous_model_before_loading_the_next(
    fake_cache: list[tuple[ModelSpec, str, bool]],
) -> None:
    gc.disable()  # so that only the cache's own collection can free the cycle
    try:
        cache.get_model(ModelSpec("a", task="embedding"), device="cpu")
        cache.get_model(ModelSpec("b", task="embedding"), device="cpu")
    finally:
        gc.enable()
    assert [(s.model, alive) for s, _, alive in fake_cache] == [("a", False), ("b", False)]


def test_eviction_empties_the_cuda_cache_only_for_a_cuda_model(
    monkeypatch: pytest.MonkeyPatch, fake_cache: list[tuple[ModelSpec, str, bool]]
) -> None:
    import torch

    emptied: list[bool] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    cache.get_model(ModelSpec("a", task="embedding"), device="cpu")
    cache.get_model(ModelSpec("b", task="embedding"), device="cuda:0")
    assert emptied == []  # evicting a CPU model
    cache.get_model(ModelSpec("c", task="embedding"), device="cpu")
    assert emptied == [True]


def test_the_same_spec_on_another_gpu_is_another_load(fake_cache: list[tuple[ModelSpec, str, bool]]) -> None:
    spec = ModelSpec("a", task="embedding", batch_tokens=512)
    for device in ("cuda:0", "cuda:0", "cuda:1", "cuda:1"):
        loaded, _ = cache.get_model(spec, device=device)
        assert loaded.device == device
    assert [d for _, d, _ in fake_cache] == ["cuda:0", "cuda:1"]
    assert cache.stats() == CacheStats(loads=2, hits=2)


def test_shared_gpu_warning_is_logged_once_per_load(
    monkeypatch: pytest.MonkeyPatch, fake_cache: list[tuple[ModelSpec, str, bool]], caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runner, "resolve_device", lambda requested, resources: "cuda:1")
    spec = ModelSpec("/m/model", task="embedding", host="worker")  # "auto" would take a host here
    shared = TaskResources(("1",), 0.5)
    with caplog.at_level(logging.WARNING, logger="sparkinfer"):
        _, first = runner._get_model(spec, shared)
        _, second = runner._get_model(spec, shared)
    warnings = [r.getMessage() for r in caplog.records if "gpu.amount" in r.getMessage()]
    assert warnings == [
        "sparkinfer: spark.task.resource.gpu.amount=0.5 lets 2 tasks share cuda:1, each in its own Python worker "
        "with its own copy of /m/model (1.00 GiB each, up to 2.00 GiB on that GPU); use host='executor' (or the "
        "default 'auto') for one copy per GPU fed by every task, or set spark.task.resource.gpu.amount=1"
    ]
    assert (first.model_loads, second.model_loads) == (1, 0)


# ------------------------------------------------------------------------------------------ on a real GPU


@pytest.mark.gpu
@pytest.mark.parametrize("quantization", [None, "8bit", "4bit"])
def test_models_load_onto_the_assigned_gpu(tiny_classifier: str, quantization: str | None) -> None:
    import torch

    index = torch.cuda.device_count() - 1  # the last GPU, so that cuda:0 would be wrong
    device = resolve_device("auto", TaskResources((str(index),)))
    assert device == f"cuda:{index}"
    loaded = load_model(ModelSpec(tiny_classifier, task="classification", quantization=quantization), device)
    assert {str(p.device) for p in loaded.model.parameters()} == {device}


@pytest.mark.parametrize("quantization", [None, "8bit", "4bit"])
def test_models_load_onto_the_cpu_without_an_assignment(
    no_cuda: None, tiny_classifier: str, quantization: str | None
) -> None:
    """The CPU twin of the GPU test above: no assignment here means the CPU, for every kind of model."""
    device = resolve_device("auto", TaskResources(()))
    assert device == "cpu"
    loaded = load_model(ModelSpec(tiny_classifier, task="classification", quantization=quantization), device)
    assert {str(p.device) for p in loaded.model.parameters()} == {"cpu"}
