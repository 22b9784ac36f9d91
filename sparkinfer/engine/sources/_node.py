"""The node cache: a remote model's revision downloaded once per machine, atomically, and checked.

Layout under `cache_root()` (``SPARKINFER_CACHE_DIR``, else ``$XDG_CACHE_HOME/sparkinfer/models``, else
``~/.cache/sparkinfer/models``)::

    <name>-<hash of the source's key>/
        <revision>/                   a complete download, with .sparkinfer-manifest.json
        <revision>.lock               flock'ed by the one process downloading; the others wait on it
        <revision>.partial-XXXX/      a download under way (or left by a killed one: removed by the next)

Every executor and model host of a node shares the directory, so the node downloads once: the first process
takes the lock and downloads into a temporary directory, checks every file's size against the listing (the
store checks checksums where it gives them), then renames the directory into place; the others wait on the
lock and find it complete. A complete directory is one that the rename made and whose files still have the
sizes its manifest lists; anything else is downloaded again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sparkinfer.engine import faults
from sparkinfer.engine.sources._base import Layout, Listing, Source, digest
from sparkinfer.errors import ModelLoadError

log = logging.getLogger("sparkinfer")

ENV = "SPARKINFER_CACHE_DIR"
MANIFEST = ".sparkinfer-manifest.json"
# Where an MLflow transformers-flavor model's parts are merged into one directory (relative symlinks).
VIEW = ".sparkinfer-view"
_POLL_SECONDS = 0.2
_TELL_EVERY_SECONDS = 60.0
_SPARE = 1.05  # free disk wanted, as a multiple of the model's size


def cache_root() -> Path:
    """Where this node keeps downloaded models (see the module docstring)."""
    configured = os.environ.get(ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sparkinfer" / "models"


def fetch(source: Source, revision: str) -> Path:
    """The local model directory of `source` at `revision`, downloaded by one process of the node.

    Raises:
        ModelLoadError: When the cache cannot be written, the disk is too small, the download fails or does
            not verify, or the source is no longer at `revision`.
    """
    key = source.key(revision)
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", key.rstrip("/").rsplit("/", 1)[-1])[:40] or "model"
    home = cache_root() / f"{tail}-{digest(key)}"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", revision)
    final = home / name
    found = _complete(final)
    if found is not None:
        faults.trace_fetch("reuse", key)
        return found
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(
            f"the node cache {str(home)!r} cannot be created for {source.uri} ({type(exc).__name__}: {exc}); set "
            f"{ENV} to a writable local directory on every executor (spark.executorEnv.{ENV})"
        ) from exc
    with _locked(home / f"{name}.lock", source.uri, key):
        found = _complete(final)
        if found is not None:  # another process downloaded it while this one waited
            faults.trace_fetch("reuse", key)
            return found
        if final.exists():
            log.warning("sparkinfer: the node cache %s of %s does not match its manifest; downloading it again",
                        final, source.uri)
            shutil.rmtree(final)
        for stale in home.glob(f"{name}.partial-*"):  # left by a download that was killed: only we write here
            log.info("sparkinfer: removing %s, an unfinished download of %s", stale, source.uri)
            shutil.rmtree(stale, ignore_errors=True)
        listing = source.resolve(revision)
        _check_space(home, listing, source.uri)
        partial = Path(tempfile.mkdtemp(prefix=f"{name}.partial-", dir=home))
        faults.trace_fetch("download", key)
        started = time.perf_counter()
        try:
            source.download(listing, partial, faults.after_download_file)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"downloading {source.uri} (revision {revision}) into {str(partial)!r} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        _check_sizes(listing, partial, source.uri)
        model_dir = _view(partial, listing.layout)
        manifest = {"key": key, "revision": revision, "model_dir": model_dir,
                    "files": [[f.path, f.size] for f in listing.files]}
        (partial / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        os.rename(partial, final)
        faults.trace_fetch("done", key)
        log.info("sparkinfer: downloaded %s (revision %s, %.1f MiB) into %s in %.1fs", source.uri, revision,
                 listing.bytes / 2**20, final, time.perf_counter() - started)
    found = _complete(final)
    assert found is not None
    return found


def _complete(final: Path) -> Path | None:
    """The model directory inside `final` if the download there is complete and its files have their sizes."""
    try:
        manifest = json.loads((final / MANIFEST).read_text(encoding="utf-8"))
        for path, size in manifest["files"]:
            if not (final / path).is_file() or (size is not None and (final / path).stat().st_size != size):
                return None
        return final / str(manifest["model_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextmanager
def _locked(path: Path, uri: str, key: str) -> Iterator[None]:
    """Hold an exclusive flock on `path`; while another process holds it, wait (and say so now and then).

    The kernel drops a killed holder's lock, so a download killed midway never blocks the node.
    """
    import fcntl

    with open(path, "a+b") as handle:
        told = None
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if told is None:
                    faults.trace_fetch("wait", key)
                if told is None or now - told > _TELL_EVERY_SECONDS:
                    log.info("sparkinfer: waiting for another process of this node to download %s", uri)
                    told = now
                time.sleep(_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_space(home: Path, listing: Listing, uri: str) -> None:
    free = shutil.disk_usage(home).free
    if free < listing.bytes * _SPARE:
        raise ModelLoadError(
            f"the node cache {str(home)!r} has {free / 2**30:.1f} GiB free, and {uri} needs "
            f"{listing.bytes / 2**30:.1f} GiB; set {ENV} to a local disk with room (spark.executorEnv.{ENV})"
        )


def _check_sizes(listing: Listing, root: Path, uri: str) -> None:
    """Every listed file is there with the listed size (a truncated or missing file fails the download)."""
    for f in listing.files:
        local = root / f.path
        got = local.stat().st_size if local.is_file() else None
        if got is None or (f.size is not None and got != f.size):
            raise ModelLoadError(
                f"the download of {uri} did not verify: {f.path} should be {f.size} bytes, got "
                f"{'no file' if got is None else f'{got} bytes'}; the store may have changed during the download, "
                "rerun the job"
            )


def _view(root: Path, layout: Layout) -> str:
    """The model directory, relative to `root`: the layout's one part, or a directory merging its parts."""
    if len(layout.parts) == 1:
        return layout.parts[0] or "."
    view = root / VIEW
    view.mkdir()
    for part in layout.parts:  # the first part's entries win (model/config.json over a component's)
        for entry in sorted((root / part).iterdir()):
            link = view / entry.name
            if not link.exists():
                link.symlink_to(os.path.relpath(entry, view))
    return VIEW
