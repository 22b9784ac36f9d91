"""What every source gives: a listing (revision, files, layout), small reads, and a download."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sparkinfer.errors import ModelLoadError

# The directory entries transformers reads a model from, per MLflow's transformers flavor: the weights and
# config under model/, the tokenizer (and any other pipeline component) under components/<name>/.
_FLAVOR_MODEL = "model"
_FLAVOR_COMPONENTS = "components/"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a remote model.

    Attributes:
        path: Relative to the model's root, ``/``-separated.
        size: Bytes, as the store lists them (``None`` where it does not say).
        md5: The content's MD5 in hex, where the store gives one (an S3 single-part ETag, GCS's md5Hash, Azure's
            Content-MD5); the download is checked against it.
    """

    path: str
    size: int | None
    md5: str | None = None


@dataclass(frozen=True)
class Layout:
    """Where transformers' files lie in a model's tree.

    Attributes:
        parts: Directories (``""`` is the root) whose entries together make the model directory: one for a plain
            ``save_pretrained`` directory, ``model`` and ``components/*`` for an MLflow transformers-flavor model.
    """

    parts: tuple[str, ...]

    @property
    def config(self) -> str:
        """The path of ``config.json``."""
        return _join(self.parts[0], "config.json")


@dataclass(frozen=True)
class Listing:
    """A remote model at one revision.

    Attributes:
        revision: What identifies this content: a digest of the files' paths, sizes and ETags or version ids
            (object storage), or the model version (MLflow registry).
        files: Every file under the model's root.
        layout: Where transformers' files lie among them.
    """

    revision: str
    files: tuple[RemoteFile, ...]
    layout: Layout

    @property
    def bytes(self) -> int:
        """The listed sizes' total."""
        return sum(f.size or 0 for f in self.files)

    def names(self) -> list[str]:
        """The entries of the model directory the layout makes: file names and first-level directory names."""
        names = set()
        for part in self.layout.parts:
            prefix = _join(part, "")
            for f in self.files:
                if f.path.startswith(prefix):
                    names.add(f.path[len(prefix):].split("/", 1)[0])
        return sorted(names)


class Source(Protocol):
    """A remote model: an object-store prefix (`_store.Store`) or a registry model (`_registry.Registry`)."""

    uri: str  # as the spec names it, for messages and logs (it holds no credentials: ModelSpec refuses those)

    def key(self, revision: str) -> str:
        """What names this content in the node cache: equal for every URI of the same content."""

    def resolve(self, revision: str | None) -> Listing:
        """The listing now, checked against `revision` when one is pinned.

        Raises:
            ModelLoadError: When the model cannot be listed, is empty, or is no longer at `revision`.
        """

    def read(self, path: str, listing: Listing) -> bytes:
        """The bytes of one small file of the listing (``config.json``)."""

    def download(self, listing: Listing, into: Path, each_file: Callable[[], None]) -> None:
        """Write every file of `listing` under `into` at its relative path, calling `each_file` after each."""


def layout(paths: Iterable[str], uri: str) -> Layout:
    """Find transformers' files among a model's `paths`.

    A ``config.json`` at the root makes the root the model directory; an MLflow transformers-flavor model
    (``MLmodel``, ``model/config.json``) merges ``model/`` with its components; otherwise the one shallowest
    directory holding a ``config.json`` (an artifact directory logged inside a pyfunc model, say).

    Raises:
        ModelLoadError: When no directory, or more than one at the same depth, holds a config.json.
    """
    every = set(paths)
    if "config.json" in every:
        return Layout(("",))
    if "MLmodel" in every and f"{_FLAVOR_MODEL}/config.json" in every:
        components = sorted({p[len(_FLAVOR_COMPONENTS):].split("/", 1)[0] for p in every
                             if p.startswith(_FLAVOR_COMPONENTS) and p.count("/") >= 2})
        return Layout((_FLAVOR_MODEL, *(f"{_FLAVOR_COMPONENTS}{c}" for c in components)))
    configs = sorted((p.count("/"), p.rsplit("/", 1)[0]) for p in every if p.endswith("/config.json"))
    shallowest = [d for depth, d in configs if depth == configs[0][0]] if configs else []
    if len(shallowest) == 1:
        return Layout((shallowest[0],))
    shown = ", ".join(sorted(every)[:12]) + (", ..." if len(every) > 12 else "")
    found = f"several model directories ({', '.join(shallowest)})" if shallowest else f"no config.json (got {shown})"
    raise ModelLoadError(
        f"ModelSpec.model must name a model directory holding a config.json, as save_pretrained writes it (got "
        f"{uri!r}: {found}); point it at the directory itself"
    )


def digest(items: object) -> str:
    """A short, stable hash of JSON-able `items`."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name
