"""The per-process model cache: the only module-level mutable state in sparkinfer.

Spark reuses Python workers between tasks (spark.python.worker.reuse=true, the default), so a model
loaded here serves every later task of the same worker. A worker that is not reused starts empty.

The runner only needs the `ModelCache` protocol: `ProcessCache` keeps one model per Python worker; a
model host shared by all the workers of an executor (one copy per GPU, whatever the task's GPU share) can
implement the same three methods later.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sparkinfer.engine import faults
from sparkinfer.engine.loading import LoadedModel, load_model, resolve_device
from sparkinfer.spec import ModelSpec


@dataclass(frozen=True)
class CacheStats:
    """How often this process loaded a model, and how often the cache already had it."""

    loads: int
    hits: int


class ModelCache(Protocol):
    """Where the runner gets loaded models from."""

    def get(self, spec: ModelSpec, device: str) -> tuple[LoadedModel, bool]:
        """The model for `spec` (a cache key) on `device`, and whether this call loaded it."""

    def stats(self) -> CacheStats:
        """Loads and hits so far."""

    def clear(self) -> None:
        """Drop every model, free its memory and reset the counters."""


class ProcessCache:
    """One resident model per process: loading another first evicts it and frees its memory.

    One model at a time keeps the memory of a worker bounded: on a GPU, the evicted model's tensors are
    garbage-collected and torch's cached blocks returned to the driver *before* the next model loads.

    Args:
        loader: Loads a spec onto a device (`load_model`; tests pass fakes).
    """

    def __init__(self, loader: Callable[[ModelSpec, str], LoadedModel] = load_model) -> None:
        self._loader = loader
        self._models: dict[tuple[ModelSpec, str], LoadedModel] = {}
        self._lock = threading.Lock()
        self._loads = 0
        self._hits = 0

    def get(self, spec: ModelSpec, device: str) -> tuple[LoadedModel, bool]:
        key = (spec, device)
        with self._lock:
            if key in self._models:
                self._hits += 1
                return self._models[key], False
            self._evict()
            loaded = self._loader(spec, device)
            self._models[key] = loaded
            self._loads += 1
            return loaded, True

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._loads, self._hits)

    def clear(self) -> None:
        with self._lock:
            self._evict()
            self._loads = self._hits = 0

    def _evict(self) -> None:
        on_cuda = any(m.device.startswith("cuda") for m in self._models.values())
        self._models.clear()
        # Models hold reference cycles (modules, hooks), so dropping the dict alone does not free them.
        gc.collect()
        if on_cuda and "torch" in sys.modules:
            import torch

            torch.cuda.empty_cache()  # give the cached blocks back, so the next load (or process) can use them


_CACHE: ModelCache = ProcessCache()


def get_model(spec: ModelSpec, *, device: str | None = None) -> tuple[LoadedModel, bool]:
    """Load the model for `spec` at most once per process (per device).

    Specs that differ only in batching fields share one entry (`ModelSpec.cache_key`). Loading a
    different model first evicts the resident one, so one worker holds one model at a time and GPU
    memory stays bounded.

    Args:
        spec: What to load.
        device: The resolved device (`loading.resolve_device`); ``None`` resolves ``spec.device`` here.

    Returns:
        The loaded model, and whether this call loaded it (False on a cache hit).
    """
    loaded, fresh = _CACHE.get(spec.cache_key, device if device is not None else resolve_device(spec.device))
    if fresh:
        faults.after_load(spec.model, loaded.model)
    return loaded, fresh


def stats() -> CacheStats:
    """Loads and hits of this process since it started (or since `clear`)."""
    return _CACHE.stats()


def clear() -> None:
    """Drop the resident model, free its memory and reset the counters (for tests)."""
    _CACHE.clear()
