"""spec → LoadedModel: resolve the model directory, load tokenizer and weights, bind the task head.

torch and transformers are imported inside the functions, so importing sparkinfer stays light on the
driver.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkinfer._optional import require
from sparkinfer.engine import sources
from sparkinfer.engine.placement import TaskResources, choose_device
from sparkinfer.engine.quantize import bitsandbytes_config, keep_narrow_layers
from sparkinfer.engine.tasks import Head, get_task
from sparkinfer.engine.tasks.embedding import read_st_config
from sparkinfer.errors import ModelLoadError, SpecError
from sparkinfer.spec import LoadKey, ModelSpec

log = logging.getLogger("sparkinfer")

# The device of a skeleton: a model's modules and config without weights, for a worker that feeds a host.
META = "meta"
# Tokenizers that report no real limit use a huge sentinel (int(1e30)).
_NO_LIMIT = 1_000_000


@dataclass(frozen=True)
class Weights:
    """A model's weights and tokenizer as loaded for one `LoadKey`, before any spec's options apply.

    Attributes:
        key: What was loaded.
        model: The transformers model, in eval mode, on `device`.
        tokenizer: The transformers fast tokenizer as saved (no truncation set): `bind` works on a copy.
        model_dir: The resolved model directory.
        device: The torch device string the model lives on.
        load_seconds: Wall time the load took.
        memory_bytes: Bytes of the model's parameters and buffers (quantized weights at their packed size).
    """

    key: LoadKey
    model: Any
    tokenizer: Any
    model_dir: Path
    device: str
    load_seconds: float
    memory_bytes: int


@dataclass(frozen=True)
class LoadedModel:
    """Everything the runner needs for one spec: shared weights (`Weights`) bound to the spec's options.

    Attributes:
        spec: The spec it was bound for (its cache key).
        weights: The loaded weights it shares with every spec of the same `LoadKey`.
        tokenizer: The backing ``tokenizers.Tokenizer`` (this binding's copy), set to truncate at
            `max_length`, no padding.
        head: The task head bound to the model.
        max_length: Tokens per row after truncation.
        pad_id: Token id used for padding.
    """

    spec: ModelSpec
    weights: Weights
    tokenizer: Any
    head: Head
    max_length: int
    pad_id: int

    @property
    def model(self) -> Any:
        """The transformers model, in eval mode, on `device`."""
        return self.weights.model

    @property
    def device(self) -> str:
        """The torch device string the model lives on."""
        return self.weights.device

    @property
    def load_seconds(self) -> float:
        """Wall time the weights' load took."""
        return self.weights.load_seconds

    @property
    def memory_bytes(self) -> int:
        """Bytes of the model's parameters and buffers (quantized weights at their packed size)."""
        return self.weights.memory_bytes


def resolve_model_dir(spec: ModelSpec) -> Path:
    """A local directory as is; a remote model (``s3://``, ``models:/``, ...) from the node cache, downloaded
    once per node (`sources.fetch`); otherwise a hub id resolved through the Hugging Face cache.

    With ``HF_HUB_OFFLINE=1`` the hub is never contacted: an id missing from the cache fails here.

    Raises:
        ModelLoadError: When the directory does not exist and the id cannot be resolved, or a remote model
            cannot be downloaded.
    """
    if sources.is_remote(spec.model):
        return sources.fetch(spec)
    local = Path(spec.model).expanduser()
    if local.is_dir():
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec.model, revision=spec.revision))
    except Exception as exc:
        raise ModelLoadError(
            f"ModelSpec.model must be a model directory or a hub id in the local Hugging Face cache "
            f"(got {spec.model!r}: no such directory, and the hub lookup failed: {exc}); "
            "pass a directory that exists on every executor, or download the model beforehand"
        ) from exc


def resolve_device(requested: str, resources: TaskResources | None = None) -> str:
    """The torch device for a spec's ``device`` field in this process (see `placement.choose_device`).

    Args:
        requested: ``ModelSpec.device``.
        resources: The task's GPU assignment; ``None`` outside a scheduler.

    Raises:
        SpecError: When the spec asks for a CUDA device this process does not have.
        ModelLoadError: When the scheduler assigned a GPU this process cannot use.
    """
    import torch

    return choose_device(
        requested,
        resources,
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        cuda_device_count=torch.cuda.device_count() if torch.cuda.is_available() else 0,
    )


def resolve_dtype(requested: str, device: str) -> Any:
    """The torch dtype: "auto" is float32 on CPU, bfloat16 (or float16 where unsupported) on CUDA."""
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_model(spec: ModelSpec, device: str | None = None) -> LoadedModel:
    """Load tokenizer, weights and task head for `spec` (no caching: see cache.get_model).

    Args:
        spec: What to load.
        device: A resolved torch device (`resolve_device`); ``None`` resolves ``spec.device``.

    Raises:
        As `load_weights` and `bind`.
    """
    return bind(load_weights(spec, device), spec)


def load_weights(spec: ModelSpec, device: str | None = None) -> Weights:
    """Load the tokenizer and weights of ``spec.load_key`` (the spec's other options are `bind`'s business).

    A quantized model is loaded straight onto its device (``device_map``) and never moved: bitsandbytes
    weights are quantized as they land on the device, and moving them afterwards is not supported.

    Args:
        spec: A spec with the key to load.
        device: A resolved torch device (`resolve_device`); ``None`` resolves ``spec.device``. `META`
            loads the tokenizer and a skeleton of the model (see `_skeleton`), no weights.

    Raises:
        ModelLoadError: When the model or tokenizer cannot be loaded.
        MissingDependencyError: When quantization needs bitsandbytes/accelerate and they are missing.
        SpecError: When the spec asks for a device this process does not have.
    """
    import transformers

    started = time.perf_counter()
    quantization = spec.quantization_spec
    if quantization is not None:
        purpose = f"ModelSpec.quantization={spec.quantization!r}"
        require("bitsandbytes", extra="quant", purpose=purpose)
        require("accelerate", extra="quant", purpose=purpose)  # transformers' bitsandbytes loader needs it
    model_dir = resolve_model_dir(spec)
    check_weights_format(str(model_dir), os.listdir(model_dir), allow_pickle=spec.allow_pickle)
    device = device if device is not None else resolve_device(spec.device)
    task = get_task(spec.task)
    # A remote model's revision is the node cache's business: transformers gets a plain local directory.
    revision = None if sources.is_remote(spec.model) else spec.revision
    common: dict[str, Any] = {"revision": revision, "trust_remote_code": spec.trust_remote_code}
    # A progress bar per load would flood executor logs; restore the caller's setting afterwards.
    progress_bar = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, **common)
        model_class = getattr(transformers, task.auto_class)
        if device == META:
            model = _skeleton(model_class, model_dir, common)
        else:
            model = _from_pretrained(spec, model_class, model_dir, device, common)
    except Exception as exc:
        if not spec.trust_remote_code and "trust_remote_code" in str(exc):
            code = sorted(p.name for p in model_dir.glob("*.py")) or "code named in its config's auto_map"
            raise ModelLoadError(
                f"{str(model_dir)!r} needs to run model code shipped in the repository ({code}); sparkinfer "
                "runs no such code unless asked (got trust_remote_code=False). Read that code, pin it with "
                "revision=<commit>, then pass trust_remote_code=True"
            ) from exc
        raise ModelLoadError(
            f"could not load {task.auto_class} and tokenizer from {str(model_dir)!r} for task {spec.task!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        if progress_bar:
            transformers.utils.logging.enable_progress_bar()
    if not tokenizer.is_fast:
        raise ModelLoadError(
            f"sparkinfer needs a fast (Rust) tokenizer, got {type(tokenizer).__name__} for {str(model_dir)!r}; "
            "save the model with a tokenizer.json (AutoTokenizer.from_pretrained(..., use_fast=True))"
        )
    model = (model if quantization is not None or device == META else model.to(device)).eval()
    seconds = time.perf_counter() - started
    memory = model_bytes(model) if device != META else 0
    log.log(
        logging.DEBUG if device == META else logging.INFO,
        "sparkinfer loaded %s (%s) on %s in %.2fs: %.1f MiB, dtype %s, quantization %s",
        spec.model, spec.task, device, seconds, memory / 2**20, model.dtype, quantization,
    )
    return Weights(spec.load_key, model, tokenizer, model_dir, device, seconds, memory)


def _from_pretrained(spec: ModelSpec, model_class: Any, model_dir: Path, device: str, common: dict[str, Any]) -> Any:
    """The model's weights on `device`, in the spec's dtype and quantization."""
    dtype = resolve_dtype(spec.dtype, device)
    # Without allow_pickle, transformers must not fall back to a pickle checkpoint it finds beside.
    kwargs = {**common, "dtype": dtype, "use_safetensors": None if spec.allow_pickle else True}
    quantization = spec.quantization_spec
    if quantization is not None:
        keep = keep_narrow_layers(quantization, model_class, model_dir, device, **common)
        kwargs["quantization_config"] = bitsandbytes_config(quantization, dtype, keep)
        kwargs["device_map"] = {"": device}
    try:
        return model_class.from_pretrained(model_dir, attn_implementation="sdpa", **kwargs)
    except (ValueError, ImportError):  # the architecture has no SDPA attention: take its default
        return model_class.from_pretrained(model_dir, **kwargs)


def _skeleton(model_class: Any, model_dir: Path, common: dict[str, Any]) -> Any:
    """The model built from its config on the meta device: its modules and config, no weights read or held.

    A worker feeding a model host (``ModelSpec.host="executor"``) binds its task head to this: the head
    tokenizes and builds the output column, and the host runs the forward passes.
    """
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(model_dir, **common)
    with torch.device(META):
        return model_class.from_config(config, trust_remote_code=common["trust_remote_code"])


def bind(weights: Weights, spec: ModelSpec) -> LoadedModel:
    """Bind loaded weights to a spec of the same `LoadKey`: its max length, truncation and task head.

    The tokenizer is copied, so specs sharing the weights truncate each at their own length (a causal LM's
    head also changes the truncation side). Nothing here reads weights: binding takes milliseconds.

    Raises:
        SpecError: When the spec asks for more than the model can do (max_length, a chat template,
            max_new_tokens beyond the positions).
        ModelLoadError: When the tokenizer lacks what the task needs (offsets).
    """
    import copy

    if spec.load_key != weights.key:
        raise ValueError(f"bind: weights loaded for {weights.key} cannot serve a spec of {spec.load_key}")
    tokenizer = copy.deepcopy(weights.tokenizer)
    model = weights.model
    max_length = _max_length(spec, tokenizer, model.config, weights.model_dir)
    backend = tokenizer.backend_tokenizer
    backend.no_padding()
    backend.enable_truncation(max_length=max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    head = get_task(spec.task).build_head(spec, model, tokenizer, weights.model_dir)
    return LoadedModel(spec, weights, backend, head, max_length, int(pad_id))


_PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def check_weights_format(where: str, names: Iterable[str], *, allow_pickle: bool) -> None:
    """Refuse a model whose only weights are pickle checkpoints, unless `allow_pickle`.

    Unpickling a checkpoint runs any code its author put in it, so a model from an untrusted source must
    come as safetensors (plain tensors, nothing executable).

    Args:
        where: The model directory or URI, for the message.
        names: The entries of the model directory.
        allow_pickle: ``ModelSpec.allow_pickle``.

    Raises:
        ModelLoadError: When the directory has pickle checkpoints and no safetensors weights.
    """
    every = list(names)
    if allow_pickle or any(n.endswith(".safetensors") for n in every):
        return
    pickles = sorted({n for n in every if any(fnmatch.fnmatch(n, pattern) for pattern in _PICKLE_PATTERNS)})
    if pickles:
        raise ModelLoadError(
            f"{where!r} holds its weights only as pickle checkpoints ({', '.join(pickles)}); loading "
            "them runs any code the file contains, so sparkinfer loads only safetensors by default (got "
            "allow_pickle=False). Convert it once where you trust it (from_pretrained, then save_pretrained writes "
            "model.safetensors), or, "
            "for a source you trust, pass allow_pickle=True"
        )


def model_bytes(model: Any) -> int:
    """Bytes of a model's parameters and buffers, quantized weights at their packed size plus their scales."""
    tensors = [*model.parameters(), *model.buffers()]
    for param in model.parameters():
        # bitsandbytes keeps the scales beside the packed weight: int8 row scales (SCB), 4-bit block absmax
        # (itself quantized, with its own absmax, under double quantization).
        state = getattr(param, "quant_state", None)
        extras = [getattr(param, "SCB", None), getattr(state, "absmax", None)]
        extras.append(getattr(getattr(state, "state2", None), "absmax", None))
        tensors.extend(t for t in extras if t is not None)
    return sum(int(t.numel()) * t.element_size() for t in tensors)


def _max_length(spec: ModelSpec, tokenizer: Any, config: Any, model_dir: Path) -> int:
    """The spec's max_length, else sentence-transformers' max_seq_length, else the model's limit."""
    limits = [
        n for n in (tokenizer.model_max_length, getattr(config, "max_position_embeddings", None))
        if isinstance(n, int) and 0 < n < _NO_LIMIT
    ]
    model_limit = min(limits) if limits else None
    if spec.max_length is not None:
        if model_limit is not None and spec.max_length > model_limit:
            raise SpecError(
                f"ModelSpec.max_length must be at most {model_limit}, the model's limit "
                f"(got {spec.max_length}); lower max_length"
            )
        return spec.max_length
    st_length = read_st_config(model_dir).max_seq_length
    length = st_length or model_limit
    if length is None:
        raise SpecError(
            f"{str(model_dir)!r} states no maximum length; set ModelSpec.max_length (e.g. max_length=512)"
        )
    return min(length, model_limit) if model_limit else length
