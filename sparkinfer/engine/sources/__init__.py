"""Models kept elsewhere: object storage (any fsspec URL) and the MLflow registry (``models:/``).

A remote model takes two steps, both Spark-free:

1. `pin`, where the Column or job is built (the driver): the source's current revision (a digest of the
   store's listing, each file's path, size and ETag or version id; or the registry's model version) goes
   into ``ModelSpec.revision``. It is part of the spec's load key and of the job's fingerprint, so a changed
   model loads afresh and counts as a model change. `pin` also reads ``config.json``: an unknown scheme, a
   missing package, an unreachable store or an unreadable config fails here, before any task.
2. `fetch`, where the weights load (an executor, or its model host): the pinned revision is downloaded once
   per node into the node cache (`_node`) and its local directory returned.

Credentials come from each filesystem's or MLflow's own provider chain (environment variables, profiles,
instance metadata); nothing here reads, logs or stores them, and `ModelSpec` refuses a URI that holds one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

from sparkinfer.engine.sources import _node
from sparkinfer.engine.sources._base import Listing, Source
from sparkinfer.errors import ModelLoadError
from sparkinfer.spec import ModelSpec

log = logging.getLogger("sparkinfer")

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
REGISTRY_PREFIX = "models:/"

__all__ = ["Listing", "Source", "cache_root", "describe", "fetch", "is_remote", "open_source", "pin"]
cache_root = _node.cache_root


def is_remote(model: str) -> bool:
    """Whether `model` names a remote source: a URL with a scheme (``s3://``) or an MLflow ``models:/`` URI."""
    return model.startswith(REGISTRY_PREFIX) or bool(_URL.match(model))


def open_source(model: str) -> Source:
    """The `Source` for a remote model name (see `is_remote`).

    Raises:
        MissingDependencyError: When the scheme's filesystem package (s3fs, gcsfs, adlfs) or mlflow is missing.
        SpecError: When the URI cannot name a model (an unknown scheme, a registry URI without a version).
    """
    if model.startswith(REGISTRY_PREFIX):
        from sparkinfer.engine.sources._registry import Registry

        return Registry(model)
    from sparkinfer.engine.sources._store import Store

    return Store(model)


def pin(spec: ModelSpec) -> ModelSpec:
    """`spec` with the current revision of its remote model in ``revision``; other specs as they are.

    A spec pinned already keeps its revision, which must still be the store's (a registry version must still
    exist). ``config.json`` is read, so a model that cannot load fails here rather than in every task.

    Raises:
        ModelLoadError: When the model cannot be listed or read, holds no config.json, or no longer has the
            pinned revision.
        MissingDependencyError, SpecError: As `open_source`.
    """
    if not is_remote(spec.model):
        return spec
    source = open_source(spec.model)
    listing = source.resolve(spec.revision)
    _read_config(source, listing)
    if spec.revision is None:
        log.debug("sparkinfer: %s is at revision %s (%d files, %.1f MiB)", spec.model, listing.revision,
                  len(listing.files), listing.bytes / 2**20)
    return dataclasses.replace(spec, revision=listing.revision)


def describe(spec: ModelSpec) -> tuple[str, list[str], dict[str, Any]]:
    """What the driver's checks read of a remote model: where it is, its file names and its config.

    Returns:
        The URI (for messages), the names of the files transformers loads from (the model directory's entries,
        subdirectories included), and the parsed ``config.json``.
    """
    source = open_source(spec.model)
    listing = source.resolve(spec.revision)
    return spec.model, listing.names(), _read_config(source, listing)


def fetch(spec: ModelSpec) -> Path:
    """The local directory of `spec`'s remote model at its pinned revision, downloaded once per node.

    An unpinned spec (the engine used without the Spark layer) is pinned here first.

    Raises:
        ModelLoadError: When the download fails or does not verify, or the model changed since it was pinned.
    """
    pinned = spec if spec.revision is not None else pin(spec)
    assert pinned.revision is not None
    return _node.fetch(open_source(pinned.model), pinned.revision)


def _read_config(source: Source, listing: Listing) -> dict[str, Any]:
    name = listing.layout.config
    try:
        config = json.loads(source.read(name, listing))
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"{source.uri}/{name} cannot be read as JSON ({type(exc).__name__}: {exc}); save the model again with "
            "save_pretrained and upload the directory"
        ) from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{source.uri}/{name} must hold a JSON object (got {type(config).__name__})")
    return config

