"""The per-process model cache: the only module-level mutable state in sparkinfer.

Spark reuses Python workers between tasks (spark.python.worker.reuse=true, the default), so a model
loaded here serves every later task of the same worker. A worker that is not reused starts empty.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sparkinfer.engine.loading import LoadedModel, load_model
from sparkinfer.spec import ModelSpec


@dataclass(frozen=True)
class CacheStats:
    """How often this process loaded a model, and how often the cache already had it."""

    loads: int
    hits: int


_MODELS: dict[ModelSpec, LoadedModel] = {}
_LOCK = threading.Lock()
_counts = {"loads": 0, "hits": 0}


def get_model(spec: ModelSpec) -> tuple[LoadedModel, bool]:
    """Load the model for `spec` at most once per process.

    Specs that differ only in batching fields share one entry (`ModelSpec.cache_key`). Loading a
    different model first evicts the resident one, so one worker holds one model at a time and GPU
    memory stays bounded.

    Returns:
        The loaded model, and whether this call loaded it (False on a cache hit).
    """
    key = spec.cache_key
    with _LOCK:
        if key in _MODELS:
            _counts["hits"] += 1
            return _MODELS[key], False
        _MODELS.clear()
        _MODELS[key] = load_model(key)
        _counts["loads"] += 1
        return _MODELS[key], True


def stats() -> CacheStats:
    """Loads and hits of this process since it started (or since `clear`)."""
    with _LOCK:
        return CacheStats(**_counts)


def clear() -> None:
    """Drop the resident model and reset the counters (for tests)."""
    with _LOCK:
        _MODELS.clear()
        _counts.update(loads=0, hits=0)
