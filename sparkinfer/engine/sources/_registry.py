"""A model in the MLflow model registry: ``models:/name/3``, ``models:/name@alias``, ``models:/name/latest``.

The registry is the one MLflow's environment names (``MLFLOW_TRACKING_URI`` and ``MLFLOW_REGISTRY_URI``, or a
Databricks runtime's own), with MLflow's own credentials (``DATABRICKS_TOKEN``, ``MLFLOW_TRACKING_TOKEN``, a
profile); Unity Catalog names (``models:/catalog.schema.model/1``) need ``MLFLOW_REGISTRY_URI=databricks-uc``
where that is not the default. The revision is the model version the alias, stage or number names when the
spec is pinned: executors download that version, whatever the alias names by then.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sparkinfer._optional import require
from sparkinfer.engine.sources._base import Listing, RemoteFile, layout
from sparkinfer.errors import ModelLoadError, SpecError

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))/?$")
_PROGRESS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


class Registry:
    """A registered model version, named by version number, alias, stage or ``latest``."""

    def __init__(self, uri: str) -> None:
        match = _URI.match(uri)
        if match is None:
            raise SpecError(
                f"ModelSpec.model must be a registry URI models:/<name>/<version>, models:/<name>@<alias> or "
                f"models:/<name>/latest (got {uri!r}); e.g. models:/minilm/3 or models:/main.ml.minilm@champion"
            )
        self.uri = uri.rstrip("/")
        self.name = match["name"]
        self.version, self.alias = match["version"], match["alias"]
        self._mlflow = require("mlflow", extra="mlflow", purpose=f"ModelSpec.model {uri!r}")

    def key(self, revision: str) -> str:
        return f"models:/{self.name}/{revision}"  # an alias and the version it names share one download

    def resolve(self, revision: str | None) -> Listing:
        client = self._mlflow.MlflowClient()
        try:
            version = str(revision if revision is not None else self._version(client))
            client.get_model_version(self.name, version)
            files = tuple(self._files(self.key(version), ""))
        except ModelLoadError:
            raise
        except Exception as exc:
            pinned = f" at version {revision}, as pinned" if revision is not None else ""
            raise ModelLoadError(
                f"ModelSpec.model {self.uri!r}{pinned} cannot be resolved in the MLflow registry "
                f"({type(exc).__name__}: {exc}); check the name, the version or "
                "alias, and MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI on the driver and the executors"
            ) from exc
        if not files:
            raise ModelLoadError(f"ModelSpec.model {self.uri!r} (version {version}) holds no artifacts; log the model "
                                 "directory as its artifacts")
        return Listing(version, files, layout((f.path for f in files), self.uri))

    def read(self, path: str, listing: Listing) -> bytes:
        import tempfile

        with tempfile.TemporaryDirectory() as scratch, _quiet():
            local = self._mlflow.artifacts.download_artifacts(
                artifact_uri=f"{self.key(listing.revision)}/{path}", dst_path=scratch)
            return Path(local).read_bytes()

    def download(self, listing: Listing, into: Path, each_file: Callable[[], None]) -> None:
        with _quiet():
            self._mlflow.artifacts.download_artifacts(artifact_uri=self.key(listing.revision), dst_path=str(into))
        each_file()

    def _version(self, client: Any) -> str:
        if self.alias is not None:
            return str(client.get_model_version_by_alias(self.name, self.alias).version)
        assert self.version is not None
        if self.version.isdigit():
            return self.version
        stages = None if self.version.lower() == "latest" else [self.version]
        found = client.get_latest_versions(self.name, stages=stages)
        if not found:
            raise ModelLoadError(f"ModelSpec.model {self.uri!r}: the registry has no version of {self.name!r} "
                                 f"in stage {self.version!r}; name a version number or an alias")
        return str(max(int(v.version) for v in found))

    def _files(self, root: str, path: str) -> Iterator[RemoteFile]:
        from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

        repository: Any = ModelsArtifactRepository(root)
        stack = [path]
        while stack:
            for entry in repository.list_artifacts(stack.pop()):
                if entry.is_dir:
                    stack.append(entry.path)
                else:
                    yield RemoteFile(entry.path, entry.file_size)


@contextmanager
def _quiet() -> Iterator[None]:
    """No artifact progress bar (one per download would flood executor logs)."""
    before = os.environ.get(_PROGRESS)
    os.environ[_PROGRESS] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_PROGRESS, None)
        else:
            os.environ[_PROGRESS] = before
