"""Safe loading: safetensors only unless allow_pickle, no repository code unless trust_remote_code, offline.

A pickle checkpoint and a repository with its own model code are built here from the tiny classifier;
the code files would leave a marker file behind if they ever ran.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from sparkinfer import ModelLoadError, ModelSpec
from sparkinfer.engine import run
from tests.unit.helpers import ClassifierOracle, assert_classification_matches

pytestmark = pytest.mark.usefixtures("empty_cache")


def _pickle_only_copy(model_dir: str, target: Path) -> Path:
    """The same model with its weights in ``pytorch_model.bin`` (torch.save) instead of safetensors."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(model_dir, target)
    weights = target / "model.safetensors"
    torch.save(load_file(str(weights)), target / "pytorch_model.bin")
    weights.unlink()
    return target


def test_a_pickle_checkpoint_is_refused_by_default_and_loads_with_allow_pickle(
    tiny_classifier: str, classifier_oracle: Callable[[str], ClassifierOracle], docs: list[str], tmp_path: Path
) -> None:
    pickled = _pickle_only_copy(tiny_classifier, tmp_path / "pickled")
    texts = pa.array(docs[:8], pa.string())

    with pytest.raises(ModelLoadError, match=r"pytorch_model\.bin.*allow_pickle=True"):
        run(ModelSpec(str(pickled), task="classification"), texts)

    allowed, _ = run(ModelSpec(str(pickled), task="classification", allow_pickle=True), texts)
    # The pickled weights are the original's: each row gets what transformers gives the safetensors copy.
    assert_classification_matches(allowed, texts.to_pylist(), classifier_oracle(tiny_classifier))


def test_safetensors_win_over_a_pickle_beside_them(tiny_classifier: str, docs: list[str], tmp_path: Path) -> None:
    """A directory with both loads the safetensors without allow_pickle, and never reads the pickle."""
    both = tmp_path / "both"
    shutil.copytree(tiny_classifier, both)
    (both / "pytorch_model.bin").write_bytes(b"not a checkpoint: reading it would fail")
    out, _ = run(ModelSpec(str(both), task="classification"), pa.array(docs[:4], pa.string()))
    assert out.null_count == 0


_CUSTOM_CODE = """
from pathlib import Path
Path(__file__).with_name("CODE_RAN").write_text("{name}")
from transformers import BertConfig, BertModel
class CustomConfig(BertConfig):
    model_type = "sparkinfer-custom"
class CustomModel(BertModel):
    config_class = CustomConfig
"""


def test_a_repository_with_its_own_code_is_refused_and_the_code_never_runs(
    tiny_classifier: str, docs: list[str], tmp_path: Path
) -> None:
    repo = tmp_path / "custom"
    shutil.copytree(tiny_classifier, repo)
    config = json.loads((repo / "config.json").read_text())
    config.update(
        model_type="sparkinfer-custom",
        auto_map={"AutoConfig": "configuration_custom.CustomConfig", "AutoModel": "modeling_custom.CustomModel"},
    )
    (repo / "config.json").write_text(json.dumps(config))
    for name in ("configuration_custom", "modeling_custom"):
        (repo / f"{name}.py").write_text(_CUSTOM_CODE.format(name=name))

    with pytest.raises(ModelLoadError, match=r"configuration_custom\.py.*trust_remote_code=True"):
        run(ModelSpec(str(repo), task="embedding", max_length=32), pa.array(docs[:2], pa.string()))
    assert not (repo / "CODE_RAN").exists()


def test_offline_mode_resolves_a_missing_hub_id_without_any_network_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert __import__("os").environ["HF_HUB_OFFLINE"] == "1"  # set by tests/conftest.py before any import
    attempts: list[Any] = []

    def no_network(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise AssertionError(f"network attempt to {address}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(ModelLoadError, match="hub lookup failed"):
        run(ModelSpec("sparkinfer-tests/not-in-any-cache", task="embedding"), pa.array(["x"], pa.string()))
    assert attempts == []
