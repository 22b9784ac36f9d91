"""The per-process model cache: the only module-level mutable state in sparkinfer.

Spark reuses Python workers between tasks (spark.python.worker.reuse=true, the default), so a model
loaded here serves every later task of the same worker. A worker that is not reused starts empty.

Weights are keyed by what loads them (`ModelSpec.load_key`: model, task, revision, dtype, quantization,
trust and pickle settings) and the device; each spec's options (pooling, top_k, max_new_tokens,
max_length, ...) are bound on top of them in milliseconds (`loading.bind`), so a new head option never
reloads the weights. The runner only needs the `ModelCache` protocol: `ProcessCache` keeps one copy of
the weights per Python worker. With ``ModelSpec.host="executor"`` a worker's cache holds only skeletons
(tokenizer and head, no weights: `loading.META`) and the weights live in the executor's model host
(`host`), whose own cache is this one; `host` keeps this process's connections to hosts, the one other
piece of per-process state.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sparkinfer.engine import faults
from sparkinfer.engine.loading import META, LoadedModel, Weights, bind, load_weights, resolve_device
from sparkinfer.spec import LoadKey, ModelSpec

# Bindings kept per resident weights: each holds a tokenizer copy and a head, no weights.
_BINDINGS = 16
# Skeletons kept beside the resident weights (a worker feeding hosts holds these: no weights, a tokenizer).
_SKELETONS = 4


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
    """One resident copy of weights per process: loading other weights first evicts them and frees their memory.

    Skeletons (`loading.META`: the tokenizer and modules without weights, for a worker that feeds a model
    host) do not count: a few are kept beside the resident weights, so that a worker switching between
    ``host="worker"`` and ``host="executor"`` loads neither again.

    One copy at a time keeps the memory of a worker bounded: on a GPU, the evicted model's tensors are
    garbage-collected and torch's cached blocks returned to the driver *before* the next model loads.
    Specs of the resident weights' `LoadKey` are served from them, each bound once (`loading.bind`).

    Args:
        loader: Loads a spec's weights onto a device (`load_weights`; tests pass fakes).
        binder: Binds loaded weights to a spec (`bind`).
    """

    def __init__(
        self,
        loader: Callable[[ModelSpec, str], Weights] = load_weights,
        binder: Callable[[Weights, ModelSpec], LoadedModel] = bind,
    ) -> None:
        self._loader = loader
        self._binder = binder
        self._weights: dict[tuple[LoadKey, str], Weights] = {}
        self._bound: OrderedDict[tuple[ModelSpec, str], LoadedModel] = OrderedDict()  # by (spec, device)
        self._lock = threading.Lock()
        self._loads = 0
        self._hits = 0

    def get(self, spec: ModelSpec, device: str) -> tuple[LoadedModel, bool]:
        key = (spec.load_key, device)
        with self._lock:
            weights = self._weights.get(key)
            fresh = weights is None
            if weights is None:
                self._evict(skeletons=device == META)
                weights = self._loader(spec, device)
                self._weights[key] = weights
                self._loads += 1
            else:
                self._hits += 1
            bound = self._bound.get((spec, device))
            if bound is None:
                bound = self._binder(weights, spec)
                self._bound[spec, device] = bound
                if len(self._bound) > _BINDINGS:
                    self._bound.popitem(last=False)
            else:
                self._bound.move_to_end((spec, device))
            return bound, fresh

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._loads, self._hits)

    def clear(self) -> None:
        with self._lock:
            self._evict()
            self._weights.clear()
            self._bound.clear()
            self._loads = self._hits = 0

    def _evict(self, *, skeletons: bool = False) -> None:
        """Drop the resident weights (`skeletons`: the skeletons instead, which hold none, beyond a few)."""
        if skeletons:
            resident = [k for k in self._weights if k[1] == META]
            if len(resident) < _SKELETONS:
                return
        else:
            resident = [k for k in self._weights if k[1] != META]
        on_cuda = any(self._weights[k].device.startswith("cuda") for k in resident)
        for key in resident:
            del self._weights[key]
        for bound in [(spec, device) for spec, device in self._bound if (spec.load_key, device) in resident]:
            del self._bound[bound]
        # Models hold reference cycles (modules, hooks), so dropping the dicts alone does not free them.
        gc.collect()
        if on_cuda and "torch" in sys.modules:
            import torch

            torch.cuda.empty_cache()  # give the cached blocks back, so the next load (or process) can use them


_CACHE: ModelCache = ProcessCache()


def get_model(spec: ModelSpec, *, device: str | None = None) -> tuple[LoadedModel, bool]:
    """Load the weights for `spec` at most once per process (per device), bound to the spec's options.

    Specs of one `ModelSpec.load_key` share the weights, whatever their head options; specs that differ
    only in batching fields share the binding too (`ModelSpec.cache_key`). Loading other weights first
    evicts the resident ones, so one worker holds one model at a time and GPU memory stays bounded.

    Args:
        spec: What to load.
        device: The resolved device (`loading.resolve_device`); ``None`` resolves ``spec.device`` here;
            `loading.META` gives the tokenizer and head over a skeleton without weights (for a host's client).

    Returns:
        The model bound to `spec`, and whether this call loaded its weights (False when they were resident).
    """
    device = device if device is not None else resolve_device(spec.device)
    loaded, fresh = _CACHE.get(spec.cache_key, device)
    if fresh and device != META:
        faults.after_load(spec.model, loaded.model)
    return loaded, fresh


def stats() -> CacheStats:
    """Loads and hits of this process since it started (or since `clear`)."""
    return _CACHE.stats()


def clear() -> None:
    """Drop the resident model, free its memory and reset the counters (for tests)."""
    _CACHE.clear()
