"""Remote models without Spark (issue 18): pinning, the node cache, verification, revisions, errors.

The store is a real S3 API (moto's server on loopback, see tests/sources.py) reached through s3fs with the
standard AWS environment variables. Outputs are checked against sentence-transformers run on each row alone
from the bundled model's local directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import sparkinfer as si
from sparkinfer.engine import run, sources
from sparkinfer.engine.sources import _node
from sparkinfer.engine.sources._base import Layout, Listing, RemoteFile, layout
from sparkinfer.errors import MissingDependencyError, ModelLoadError, SpecError
from tests.unit.helpers import SentenceTransformerOracle

ROOT = Path(__file__).resolve().parents[2]
URI = "s3://models/minilm"


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty node cache for the test (``SPARKINFER_CACHE_DIR``)."""
    monkeypatch.setenv(_node.ENV, str(tmp_path / "node-cache"))
    return tmp_path / "node-cache"


def _digests(directory: Path) -> dict[str, str]:
    """relative path → MD5 of every file under `directory` (the node cache's manifest left out)."""
    return {str(p.relative_to(directory)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != _node.MANIFEST}


def _trace(directory: Path) -> list[list[str]]:
    return [line.split() for f in sorted(directory.glob("fetches-*.txt")) for line in f.read_text().splitlines()]


def test_a_model_in_s3_is_pinned_downloaded_once_and_embeds_as_sentence_transformers(
    s3: Any, cache: Path, minilm_path: str, docs: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    trace = tmp_path / "trace"
    trace.mkdir()
    monkeypatch.setenv("SPARKINFER_FAULTS", f"trace_fetches={trace}")
    pinned = sources.pin(si.ModelSpec(URI, task="embedding"))
    assert pinned.revision is not None and len(pinned.revision) == 16
    assert sources.pin(pinned) == pinned  # still the store's revision

    directory = sources.fetch(pinned)
    assert directory.is_relative_to(cache)
    assert _digests(directory) == _digests(Path(minilm_path))  # every file, byte for byte
    assert sources.fetch(pinned) == directory
    assert [event for event, *_ in _trace(trace)] == ["download", "done", "reuse"]

    texts = docs[:24]
    out, _ = run(pinned, pa.array(texts))
    oracle = SentenceTransformerOracle(minilm_path)
    np.testing.assert_allclose(np.asarray(out.to_pylist()), [oracle(t) for t in texts], rtol=0, atol=1e-4)


def test_a_download_killed_midway_is_redone(s3: Any, cache: Path, minilm_path: str, tmp_path: Path) -> None:
    """A process downloading the model is SIGKILLed after its first files; the next fetch starts over."""
    pinned = sources.pin(si.ModelSpec(URI, task="embedding"))
    script = "import sys, sparkinfer as si; from sparkinfer.engine import sources; " \
             f"sources.fetch(si.ModelSpec({URI!r}, task='embedding', revision={pinned.revision!r}))"
    env = {**os.environ, "SPARKINFER_FAULTS": "slow_download_ms=2000"}
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    partial: list[Path] = []
    while time.monotonic() < deadline and not any(p.is_file() for d in partial for p in d.rglob("*")):
        partial = list(cache.glob("*/*.partial-*"))
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert partial, "the child never started its download"
    left = [p for d in partial for p in d.rglob("*") if p.is_file()]
    assert 0 < len(left) < 13 and not list(cache.glob(f"*/{pinned.revision}")), left  # half-written, not in place

    directory = sources.fetch(pinned)
    assert _digests(directory) == _digests(Path(minilm_path))
    assert not any(p.exists() for p in partial)  # the unfinished download was cleared


def test_a_cache_whose_files_no_longer_match_is_downloaded_again(s3: Any, cache: Path, minilm_path: str) -> None:
    pinned = sources.pin(si.ModelSpec(URI, task="embedding"))
    directory = sources.fetch(pinned)
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, as a full disk leaves it
    again = sources.fetch(pinned)
    assert again == directory and _digests(again) == _digests(Path(minilm_path))


def test_a_changed_object_is_a_new_revision_and_a_new_fingerprint(s3: Any, cache: Path, minilm_path: str,
                                                                  tmp_path: Path) -> None:
    from sparkinfer.spark.job import Job, fingerprint
    from sparkinfer.spark.preflight import pin

    copy = "s3://models/changing"
    s3.upload(minilm_path, copy)
    job = Job(input=str(tmp_path / "in"), output=str(tmp_path / "out"), spec=si.ModelSpec(copy, task="embedding"))
    first = pin(job)
    assert fingerprint(first).fields["revision"] == first.spec.revision
    assert pin(job) == first  # nothing changed: the same revision, the same fingerprint

    s3.fs.pipe(f"{copy.removeprefix('s3://')}/README.md", b"a new model card\n")  # a new ETag
    s3.fs.invalidate_cache()
    second = pin(job)
    assert second.spec.revision != first.spec.revision
    assert fingerprint(second).id != fingerprint(first).id
    with pytest.raises(ModelLoadError, match=f"pinned at revision {first.spec.revision}.*now holds revision "
                                             f"{second.spec.revision}"):
        sources.fetch(first.spec)  # an executor never loads other bytes than the driver pinned


def test_a_download_that_does_not_match_the_stores_checksum_fails(s3: Any, cache: Path, tmp_path: Path) -> None:
    source = sources.open_source(URI)
    listing = source.resolve(None)
    wrong = tuple(RemoteFile(f.path, f.size, "0" * 32 if f.path == "config.json" else f.md5) for f in listing.files)
    assert all(f.md5 is not None for f in listing.files)  # moto gives single-part ETags: each is checked
    with pytest.raises(ModelLoadError, match="config.json did not verify: the store gives MD5 0{32}"):
        source.download(Listing(listing.revision, wrong, listing.layout), tmp_path / "into", lambda: None)


def test_the_driver_fails_fast_on_a_store_that_cannot_serve_the_model(s3: Any, cache: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="'s3://models/absent' holds no files"):
        sources.pin(si.ModelSpec("s3://models/absent", task="embedding"))
    with pytest.raises(ModelLoadError, match="'s3://no-such-bucket/minilm' cannot be listed"):
        sources.pin(si.ModelSpec("s3://no-such-bucket/minilm", task="embedding"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    s3.upload(str(tmp_path / "broken"), "s3://models/broken")
    with pytest.raises(ModelLoadError, match="s3://models/broken/config.json cannot be read as JSON"):
        sources.pin(si.ModelSpec("s3://models/broken", task="embedding"))
    assert not cache.exists()  # the driver downloads nothing


def test_unknown_schemes_and_missing_packages_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SpecError, match="a URL of a filesystem fsspec knows .*'nosuch://x/y'"):
        sources.pin(si.ModelSpec("nosuch://x/y", task="embedding"))
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as if not installed (importing it raises ImportError)
    with pytest.raises(MissingDependencyError, match=r"needs gcsfs.*pip install 'sparkinfer\[gcs\]'"):
        sources.pin(si.ModelSpec("gs://bucket/model", task="embedding"))
    with pytest.raises(SpecError, match="models:/<name>/<version>"):
        sources.pin(si.ModelSpec("models:/a/b/c", task="embedding"))


@pytest.mark.parametrize("uri", ["s3://AKIA123:secret@bucket/model", "https://acct.blob.core.windows.net/m?sig=x"])
def test_a_uri_holding_credentials_is_refused(uri: str) -> None:
    with pytest.raises(SpecError, match="must not hold credentials") as raised:
        si.ModelSpec(uri, task="embedding")
    assert "secret" not in str(raised.value) and "sig=x" not in str(raised.value)


def test_layouts_find_the_model_directory() -> None:
    assert layout(["config.json", "model.safetensors", "1_Pooling/config.json"], "u") == Layout(("",))
    flavor = ["MLmodel", "model/config.json", "model/model.safetensors", "components/tokenizer/tokenizer.json"]
    found = layout(flavor, "u")
    assert found == Layout(("model", "components/tokenizer")) and found.config == "model/config.json"
    assert Listing("1", tuple(RemoteFile(p, 1) for p in flavor), found).names() == [
        "config.json", "model.safetensors", "tokenizer.json"]
    assert layout(["MLmodel", "artifacts/minilm/config.json", "artifacts/minilm/x/config.json"], "u") == Layout(
        ("artifacts/minilm",))
    with pytest.raises(ModelLoadError, match=r"several model directories \(a, b\)"):
        layout(["a/config.json", "b/config.json"], "u")
    with pytest.raises(ModelLoadError, match="no config.json"):
        layout(["README.md"], "u")


def test_the_manifest_records_every_file(s3: Any, cache: Path) -> None:
    directory = sources.fetch(si.ModelSpec(URI, task="embedding"))  # an unpinned spec is pinned here
    manifest = json.loads((directory / _node.MANIFEST).read_text())
    assert manifest["key"] == URI and len(manifest["files"]) == 13 and manifest["model_dir"] == "."
