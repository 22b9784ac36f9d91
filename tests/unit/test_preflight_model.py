"""The driver's model checks (`engine.inspect_model`): files and architectures, without torch or weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sparkinfer import ModelLoadError, ModelSpec, SpecError
from sparkinfer.engine import inspect_model


def _model_dir(path: Path, *, files: tuple[str, ...] = ("tokenizer.json", "model.safetensors"),
               **config: Any) -> Path:
    """A directory that looks like a saved model: config.json plus empty stand-ins for `files`."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    for name in files:
        (path / name).write_bytes(b"")
    return path


BERT_CLASSIFIER: dict[str, Any] = {"architectures": ["BertForSequenceClassification"], "model_type": "bert"}
GPT2: dict[str, Any] = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}


def test_a_complete_model_directory_passes(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m", **BERT_CLASSIFIER)
    inspect_model.check_model_dir(model, ModelSpec(str(model), task="classification"))  # raises nothing


def test_importing_the_checks_imports_neither_torch_nor_transformers() -> None:
    code = ("import sys; import sparkinfer.engine.inspect_model; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("files", "config", "message"),
    [
        (("tokenizer.json", "model.safetensors"), None,
         r"has no config.json \(got \[model.safetensors, tokenizer.json\]\); save the model with save_pretrained"),
        (("model.safetensors",), BERT_CLASSIFIER,
         r"has no tokenizer: expected tokenizer.json, or a vocabulary .*got \[config.json, model.safetensors\]; "
         r"save the tokenizer beside the weights"),
        (("tokenizer.json",), BERT_CLASSIFIER,
         r"has no weights: expected model.safetensors \(or its shards\), got \[config.json, tokenizer.json\]"),
        (("tokenizer.json", "pytorch_model.bin"), BERT_CLASSIFIER,
         r"holds its weights only as pickle checkpoints \(pytorch_model.bin\).*allow_pickle=True"),
    ],
)
def test_a_missing_part_is_named_with_the_files_found(
    tmp_path: Path, files: tuple[str, ...], config: dict[str, Any] | None, message: str
) -> None:
    model = tmp_path / "m"
    model.mkdir()
    for name in files:
        (model / name).write_bytes(b"")
    if config is not None:
        (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=message):
        inspect_model.check_model_dir(model, ModelSpec(str(model), task="classification"))


def test_vocabulary_files_count_as_a_tokenizer_and_pickles_as_weights_when_allowed(tmp_path: Path) -> None:
    wordpiece = _model_dir(tmp_path / "wordpiece", files=("vocab.txt", "model.safetensors"), **BERT_CLASSIFIER)
    inspect_model.check_model_dir(wordpiece, ModelSpec(str(wordpiece), task="classification"))
    pickled = _model_dir(tmp_path / "pickled", files=("tokenizer.json", "pytorch_model.bin"), **BERT_CLASSIFIER)
    inspect_model.check_model_dir(pickled, ModelSpec(str(pickled), task="classification", allow_pickle=True))
    with pytest.raises(ModelLoadError, match=r"expected model.safetensors \(or its shards\) or pytorch_model.bin"):
        empty = _model_dir(tmp_path / "none", files=("tokenizer.json",), **BERT_CLASSIFIER)
        inspect_model.check_model_dir(empty, ModelSpec(str(empty), task="classification", allow_pickle=True))


def test_an_unreadable_config_is_named(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    (model / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"config.json' cannot be read as JSON \(JSONDecodeError"):
        inspect_model.check_model_dir(model, ModelSpec(str(model), task="embedding"))


ENCODER: dict[str, Any] = {"architectures": ["BertModel"], "model_type": "bert"}
T5: dict[str, Any] = {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "is_encoder_decoder": True}
NER: dict[str, Any] = {"architectures": ["BertForTokenClassification"], "model_type": "bert"}


@pytest.mark.parametrize(
    ("config", "task", "message"),
    [
        (GPT2, "embedding", r"ModelSpec.task 'embedding' does not fit a causal language model, got '.*': its "
                            r"config.json names \['GPT2LMHeadModel'\] \(model_type 'gpt2'\).*task='generation'"),
        (ENCODER, "classification", r"needs a checkpoint with a \*ForSequenceClassification head, got .*\['BertModel'\]"
                                    r".*predict noise.*or task='embedding'"),
        (GPT2, "classification", r"\*ForSequenceClassification head.*or task='generation'"),
        (BERT_CLASSIFIER, "token-classification", r"\*ForTokenClassification head.*or task='classification'"),
        (T5, "generation", r"needs a decoder-only causal language model .*\['T5ForConditionalGeneration'\].*use "
                           r"task='text2text'"),
        (NER, "extraction", r"'extraction' needs a decoder-only causal language model.*task='token-classification'"),
        (ENCODER, "generation", r"needs a decoder-only causal language model.*use task='embedding'"),
        (GPT2, "text2text", r"'text2text' needs an encoder-decoder model.*\['GPT2LMHeadModel'\].*task='generation'"),
    ],
)
def test_a_task_the_architecture_cannot_do_is_refused(
    tmp_path: Path, config: dict[str, Any], task: str, message: str
) -> None:
    model = _model_dir(tmp_path / "m", **config)
    options = {"schema": "name string"} if task == "extraction" else {}
    with pytest.raises(SpecError, match=message):
        inspect_model.check_model_dir(model, ModelSpec(str(model), task=task, **options))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("config", "task", "options"),
    [
        (ENCODER, "embedding", {}),
        (BERT_CLASSIFIER, "classification", {}),
        (NER, "token-classification", {}),
        (GPT2, "generation", {}),
        ({**GPT2, "architectures": ["LlamaForCausalLM"], "model_type": "llama"}, "extraction", {"schema": "a int"}),
        (T5, "text2text", {}),
        (GPT2, "embedding", {"pooling": "lasttoken"}),  # a decoder trained to embed
        ({"model_type": "bert"}, "classification", {}),  # no architectures: nothing to go by
        ({"architectures": ["MyModel"], "auto_map": {"AutoModel": "m.MyModel"}}, "classification",
         {"trust_remote_code": True}),  # the repository's code decides
    ],
)
def test_a_task_the_architecture_can_do_passes(
    tmp_path: Path, config: dict[str, Any], task: str, options: dict[str, Any]
) -> None:
    model = _model_dir(tmp_path / "m", **config)
    inspect_model.check_model_dir(model, ModelSpec(str(model), task=task, **options))  # type: ignore[arg-type]


def test_a_causal_lm_with_a_sentence_transformers_layout_embeds(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m", files=("tokenizer.json", "model.safetensors", "modules.json"), **GPT2)
    (model / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    (model / "1_Pooling").mkdir()
    (model / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_lasttoken": True}))
    inspect_model.check_model_dir(model, ModelSpec(str(model), task="embedding"))
    (model / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "2_Dense",
                                                     "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(ModelLoadError, match=r"modules.json lists \['Dense'\]"):
        inspect_model.check_model_dir(model, ModelSpec(str(model), task="embedding"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [("gpt2", True), ("org/model-1.5", True), ("/models/x", False), ("./x", False), ("~/x", False),
     ("a/b/c", False), ("dbfs:/models/x", False)],
)
def test_hub_ids_are_told_from_paths(name: str, expected: bool) -> None:
    assert inspect_model.is_hub_id(name) is expected


def test_a_hub_id_resolves_from_the_local_cache_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = _model_dir(repo / "snapshots" / commit, **BERT_CLASSIFIER)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert inspect_model.cached_snapshot(ModelSpec("org/tiny", task="classification")) == snapshot
    assert inspect_model.cached_snapshot(ModelSpec("org/absent", task="classification")) is None
    assert inspect_model.cached_snapshot(ModelSpec("org/tiny", task="classification", revision="v2")) is None
