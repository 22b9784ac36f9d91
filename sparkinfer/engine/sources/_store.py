"""A model directory in object storage or a remote filesystem, through fsspec (s3fs, gcsfs, adlfs, pyarrow's HDFS).

The filesystem is built with no arguments, so it takes its credentials from its own provider chain: for S3 the
AWS environment variables (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ...), the profile, then the instance
or pod role; for GCS and Azure their equivalents.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sparkinfer.engine.sources._base import Listing, RemoteFile, digest, layout
from sparkinfer.errors import MissingDependencyError, ModelLoadError, SpecError

log = logging.getLogger("sparkinfer")

# The package and sparkinfer extra behind each protocol that needs one.
_PACKAGES = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
             "abfs": ("adlfs", "azure"), "abfss": ("adlfs", "azure"), "az": ("adlfs", "azure")}
# What tells one version of an object from the next, by store: the first one present is taken.
_VERSION_KEYS = ("VersionId", "ETag", "etag", "generation", "md5Hash", "LastModified", "last_modified", "mtime",
                 "modified", "created")
_MD5 = re.compile(r"[0-9a-f]{32}")
_CHUNK = 8 << 20
_THREADS = 8


class Store:
    """A model directory under an fsspec URL, e.g. ``s3://bucket/models/minilm``."""

    def __init__(self, uri: str) -> None:
        import fsspec
        from fsspec.core import split_protocol

        self.uri = uri.rstrip("/")
        protocol, _ = split_protocol(self.uri)
        self.protocol = str(protocol)
        try:
            fsspec.get_filesystem_class(self.protocol)
        except ValueError as exc:
            raise SpecError(
                f"ModelSpec.model must be a local directory, a hub id, a models:/ URI or a URL of a filesystem "
                f"fsspec knows (got {uri!r}: {exc}); use e.g. s3://, gs://, abfss:// or hdfs://"
            ) from exc
        except ImportError as exc:
            package, extra = _PACKAGES.get(self.protocol, (f"the fsspec filesystem for {self.protocol}://", ""))
            fix = f"pip install 'sparkinfer[{extra}]'" if extra else "install the package fsspec names"
            raise MissingDependencyError(
                f"ModelSpec.model {uri!r} needs {package}, which is not installed; install it with: {fix} "
                f"(on every executor too)"
            ) from exc
        self.fs: Any = fsspec.filesystem(self.protocol)
        self.root = str(self.fs._strip_protocol(self.uri)).rstrip("/")

    def key(self, revision: str) -> str:
        return self.uri

    def resolve(self, revision: str | None) -> Listing:
        try:
            found: dict[str, dict[str, Any]] = self.fs.find(self.root, detail=True)
        except Exception as exc:
            raise ModelLoadError(
                f"ModelSpec.model {self.uri!r} cannot be listed ({type(exc).__name__}: {exc}); check the URL and "
                "that this machine's credentials for the store (its standard provider chain: environment "
                "variables, profile, instance role) may read it"
            ) from exc
        prefix = self.root + "/"
        infos = {name[len(prefix):]: info for name, info in found.items()
                 if name.startswith(prefix) and info.get("type", "file") == "file" and not name.endswith("/")}
        if not infos:
            raise ModelLoadError(
                f"ModelSpec.model {self.uri!r} holds no files (nothing under that prefix, or a single object); "
                "upload the model directory save_pretrained wrote, and name its prefix"
            )
        files = tuple(RemoteFile(path, _size(info), _md5(info)) for path, info in sorted(infos.items()))
        versions = [[path, _size(info), _version(info)] for path, info in sorted(infos.items())]
        listing = Listing(digest(versions), files, layout(infos, self.uri))
        if revision is not None and revision != listing.revision:
            raise ModelLoadError(
                f"ModelSpec.model {self.uri!r} changed: it was pinned at revision {revision}, and the store now holds "
                f"revision {listing.revision}; rerun to take the new model (the job's --on-model-change decides what "
                "happens to rows predicted with the old one)"
            )
        return listing

    def read(self, path: str, listing: Listing) -> bytes:
        data: bytes = self.fs.cat_file(f"{self.root}/{path}")
        return data

    def download(self, listing: Listing, into: Path, each_file: Callable[[], None]) -> None:
        def one(f: RemoteFile) -> None:
            local = into / f.path
            local.parent.mkdir(parents=True, exist_ok=True)
            md5 = hashlib.md5(usedforsecurity=False)
            with self.fs.open(f"{self.root}/{f.path}", "rb", block_size=_CHUNK) as src, open(local, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    md5.update(chunk)
                    dst.write(chunk)
            if f.md5 is not None and md5.hexdigest() != f.md5 and not self._md5_not_content(f.path):
                raise ModelLoadError(
                    f"the download of {self.uri}/{f.path} did not verify: the store gives MD5 {f.md5}, the bytes "
                    f"received have {md5.hexdigest()}; rerun (the object may have changed during the download)"
                )
            each_file()

        with ThreadPoolExecutor(min(_THREADS, len(listing.files))) as pool:
            list(pool.map(one, listing.files))

    def _md5_not_content(self, path: str) -> bool:
        """Whether an S3 object's ETag is not the MD5 of its bytes: SSE-KMS and SSE-C objects' ETags are not."""
        if self.protocol not in ("s3", "s3a"):
            return False
        bucket, _, key = f"{self.root}/{path}".partition("/")
        head = self.fs.call_s3("head_object", Bucket=bucket, Key=key)
        encrypted = str(head.get("ServerSideEncryption", "")).startswith("aws:kms") or "SSECustomerAlgorithm" in head
        if encrypted:
            log.debug("sparkinfer: %s/%s is encrypted with a KMS or customer key; its ETag is not an MD5", self.uri,
                      path)
        return encrypted


def _size(info: dict[str, Any]) -> int | None:
    size = info.get("size", info.get("Size"))
    return int(size) if size is not None else None


def _version(info: dict[str, Any]) -> str | None:
    for key in _VERSION_KEYS:
        value = info.get(key)
        if value not in (None, "", "null"):
            return str(value)
    return None


def _md5(info: dict[str, Any]) -> str | None:
    """The MD5 of the object's bytes where the store lists one (S3 single-part ETag, GCS md5Hash, Azure)."""
    etag = str(info.get("ETag", "")).strip('"').lower()
    if _MD5.fullmatch(etag):
        return etag
    for encoded in (info.get("md5Hash"), (info.get("content_settings") or {}).get("content_md5")):
        if isinstance(encoded, (bytes, bytearray)) and len(encoded) == 16:
            return bytes(encoded).hex()
        if isinstance(encoded, str) and encoded:
            try:
                return base64.b64decode(encoded).hex()
            except (binascii.Error, ValueError):
                continue
    return None
