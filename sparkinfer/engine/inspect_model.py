"""Check a model directory against a spec without loading it: the driver's half of `loading.load_weights`.

Everything here reads file names and JSON (``config.json``, ``modules.json``): no torch, no transformers
import, no weights read. Whether a model loads and runs is still decided where it loads; what is caught here
is what would otherwise fail (or silently go wrong, as a randomly initialized head does) in every task:
a missing config, tokenizer or weights, pickle-only weights, and a task the architecture cannot do.
"""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path
from typing import Any

from sparkinfer.engine.loading import check_weights_format
from sparkinfer.errors import ModelLoadError, SpecError
from sparkinfer.spec import ModelSpec

# Files transformers builds a fast tokenizer from: tokenizer.json itself, or the vocabularies of the slow
# tokenizers it converts (WordPiece, BPE, SentencePiece, tiktoken).
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model",
                    "sentencepiece.bpe.model", "spm.model", "bpe.codes")
_TOKENIZER_SUFFIXES = (".tiktoken",)
_PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
# Architecture class names by what their checkpoint holds.
_CAUSAL = ("ForCausalLM", "LMHeadModel")
_ENCODER_HEADS = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering",
                  "ForMultipleChoice", "ForMaskedLM")
# Encoder-only model types (no causal variant worth generating with), for a bare ``*Model`` checkpoint.
_ENCODER_ONLY = frozenset({"albert", "bert", "camembert", "deberta", "deberta-v2", "distilbert", "electra",
                           "modernbert", "mpnet", "roberta", "xlm-roberta"})
_HEADS = {"classification": "ForSequenceClassification", "token-classification": "ForTokenClassification"}


def is_hub_id(name: str) -> bool:
    """Whether `name` can be a Hugging Face hub id (``name`` or ``org/name``), as opposed to a path or URI."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]

    if name.startswith(("~", ".")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def hub_offline() -> bool:
    """Whether this process may not reach the hub (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``): the loader
    then resolves hub ids from the local cache only."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("TRANSFORMERS_OFFLINE", "").upper() in ("1", "ON",
                                                                                                    "YES", "TRUE")


def cached_snapshot(spec: ModelSpec) -> Path | None:
    """The local Hugging Face cache's snapshot of the hub id ``spec.model`` (at ``spec.revision``), or None.

    Nothing is downloaded: this looks in the cache only, as the loader does with ``HF_HUB_OFFLINE=1``.
    """
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec.model, revision=spec.revision, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, HFValidationError, an unreadable cache, ...
        return None


def check_model_dir(model_dir: Path, spec: ModelSpec) -> None:
    """Check that `model_dir` holds what loading `spec` needs, and that its architecture can do the task.

    Args:
        model_dir: The resolved model directory (a local directory, or a Hugging Face cache snapshot).
        spec: The spec that will load it (its task, ``allow_pickle``, ``trust_remote_code``, ``pooling``).

    Raises:
        ModelLoadError: When the directory cannot be read, or lacks a config, a tokenizer or weights (or has
            only pickle weights without ``allow_pickle``), or a sentence-transformers module sparkinfer lacks.
        SpecError: When the architecture in ``config.json`` cannot do ``spec.task``.
    """
    names = _list(model_dir)
    check_files(str(model_dir), names, _read_config(model_dir, names), spec, local=model_dir)


def check_files(where: str, names: list[str], config: dict[str, Any], spec: ModelSpec, *,
                local: Path | None = None) -> None:
    """`check_model_dir` on what was read of a model directory: its entries' names and its parsed config.

    Args:
        where: The directory or URI, for messages.
        names: The directory's entries (file and subdirectory names).
        config: Its parsed ``config.json``.
        spec: The spec that will load it.
        local: The directory, when it is on this machine: its sentence-transformers modules are read too.

    Raises:
        As `check_model_dir`.
    """
    if not spec.trust_remote_code:  # repository code may build its tokenizer from files of its own
        _check_tokenizer(where, names)
    _check_weights(where, names, allow_pickle=spec.allow_pickle)
    check_architecture(config, spec, where, names)
    if spec.task == "embedding" and local is not None:
        from sparkinfer.engine.tasks.embedding import read_st_config

        read_st_config(local)  # a sentence-transformers module sparkinfer lacks fails here, not per task


def check_architecture(config: dict[str, Any], spec: ModelSpec, where: str, names: list[str]) -> None:
    """Refuse a task that the ``architectures`` and ``model_type`` of `config` (a parsed config.json) cannot do.

    Only clear mismatches are refused; a config naming no architectures, or one loaded with repository code,
    passes. A classifier must come with its head: a checkpoint without one would get a randomly initialized
    head and predict noise.

    Raises:
        SpecError: Naming the architecture and the task that fits it.
    """
    raw = config.get("architectures")
    if spec.trust_remote_code or not isinstance(raw, list) or not raw:
        return
    archs = [str(a) for a in raw]
    model_type = str(config.get("model_type", ""))
    encoder_decoder = config.get("is_encoder_decoder") is True
    causal = any(a.endswith(_CAUSAL) for a in archs)
    encoder = not causal and (model_type in _ENCODER_ONLY or any(a.endswith(_ENCODER_HEADS) for a in archs))
    found = f"{where!r}: its config.json names {archs} (model_type {model_type!r})"
    task = spec.task
    if task in _HEADS and not any(a.endswith(_HEADS[task]) for a in archs):
        raise SpecError(
            f"ModelSpec.task {task!r} needs a checkpoint with a *{_HEADS[task]} head, got {found}; without its "
            f"head the model would start a random one and predict noise. Use a fine-tuned *{_HEADS[task]} "
            f"model, or {_suggest(archs, encoder_decoder, causal)}"
        )
    if task == "embedding" and causal and spec.pooling == "auto" and "modules.json" not in names:
        raise SpecError(
            f"ModelSpec.task 'embedding' does not fit a causal language model, got {found}: its hidden states "
            "are not sentence embeddings. Use task='generation', an embedding model (e.g. one with a "
            "sentence-transformers modules.json), or pass pooling='lasttoken' for a decoder trained to embed"
        )
    if task in ("generation", "extraction") and (encoder_decoder or encoder):
        fix = "task='text2text'" if encoder_decoder else _suggest(archs, encoder_decoder, causal)
        raise SpecError(
            f"ModelSpec.task {task!r} needs a decoder-only causal language model (*ForCausalLM, *LMHeadModel), "
            f"got {found}; use {fix}, or a causal LM"
        )
    if task == "text2text" and not encoder_decoder:
        raise SpecError(
            f"ModelSpec.task 'text2text' needs an encoder-decoder model (is_encoder_decoder: true in config.json, "
            f"e.g. T5ForConditionalGeneration), got {found}; use {_suggest(archs, encoder_decoder, causal)}, "
            "or an encoder-decoder model"
        )


def _suggest(archs: list[str], encoder_decoder: bool, causal: bool) -> str:
    """The task that fits the architecture, as the end of a message."""
    if encoder_decoder:
        return "task='text2text'"
    if causal:
        return "task='generation'"
    for task, head in _HEADS.items():
        if any(a.endswith(head) for a in archs):
            return f"task={task!r}"
    return "task='embedding'"


def _list(model_dir: Path) -> list[str]:
    try:
        return sorted(os.listdir(model_dir))
    except OSError as exc:
        raise ModelLoadError(
            f"the model directory {str(model_dir)!r} cannot be read ({type(exc).__name__}: {exc.strerror or exc}); "
            "make it readable by the user running the job"
        ) from exc


def _read_config(model_dir: Path, names: list[str]) -> dict[str, Any]:
    if "config.json" not in names:
        raise ModelLoadError(
            f"the model directory {str(model_dir)!r} has no config.json (got {_shown(names)}); save the model "
            "with save_pretrained, which writes it"
        )
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{str(model_dir / 'config.json')!r} cannot be read as JSON ({type(exc).__name__}: {exc}); save the "
            "model again with save_pretrained"
        ) from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{str(model_dir / 'config.json')!r} must hold a JSON object (got {type(config).__name__})")
    return config


def _check_tokenizer(where: str, names: list[str]) -> None:
    if any(n in _TOKENIZER_FILES or n.endswith(_TOKENIZER_SUFFIXES) for n in names):
        return
    raise ModelLoadError(
        f"the model directory {where!r} has no tokenizer: expected tokenizer.json, or a vocabulary "
        f"transformers builds one from ({', '.join(_TOKENIZER_FILES[1:])}), got {_shown(names)}; save the "
        "tokenizer beside the weights with tokenizer.save_pretrained(model_dir)"
    )


def _check_weights(where: str, names: list[str], *, allow_pickle: bool) -> None:
    check_weights_format(where, names, allow_pickle=allow_pickle)  # pickle-only weights without allow_pickle
    if any(n.endswith(".safetensors") for n in names):
        return
    if allow_pickle and any(fnmatch.fnmatch(n, p) for n in names for p in _PICKLE_WEIGHTS):
        return
    expected = "model.safetensors (or its shards)" + (" or pytorch_model.bin" if allow_pickle else "")
    raise ModelLoadError(
        f"the model directory {where!r} has no weights: expected {expected}, got {_shown(names)}; save "
        "the model with save_pretrained, which writes model.safetensors"
    )


def _shown(names: list[str], most: int = 12) -> str:
    """A directory's file names for a message, cut after `most`."""
    if not names:
        return "an empty directory"
    more = f", ... ({len(names) - most} more)" if len(names) > most else ""
    return "[" + ", ".join(names[:most]) + more + "]"
