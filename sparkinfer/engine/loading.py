"""spec → LoadedModel: resolve the model directory, load tokenizer and weights, bind the task head.

torch and transformers are imported inside the functions, so importing sparkinfer stays light on the
driver.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkinfer.engine.tasks import Head, get_task
from sparkinfer.engine.tasks.embedding import read_st_config
from sparkinfer.errors import ModelLoadError, SpecError
from sparkinfer.spec import ModelSpec

log = logging.getLogger("sparkinfer")

# Tokenizers that report no real limit use a huge sentinel (int(1e30)).
_NO_LIMIT = 1_000_000


@dataclass(frozen=True)
class LoadedModel:
    """Everything the runner needs for one spec, loaded once per process.

    Attributes:
        spec: The spec it was loaded for (its cache key).
        model: The transformers model, in eval mode, on `device`.
        tokenizer: The backing ``tokenizers.Tokenizer``, set to truncate at `max_length`, no padding.
        head: The task head bound to the model.
        max_length: Tokens per row after truncation.
        pad_id: Token id used for padding.
        device: The torch device string the model lives on.
        load_seconds: Wall time the load took.
    """

    spec: ModelSpec
    model: Any
    tokenizer: Any
    head: Head
    max_length: int
    pad_id: int
    device: str
    load_seconds: float


def resolve_model_dir(spec: ModelSpec) -> Path:
    """A local directory as is; otherwise a hub id resolved through the Hugging Face cache.

    With ``HF_HUB_OFFLINE=1`` the hub is never contacted: an id missing from the cache fails here.

    Raises:
        ModelLoadError: When the directory does not exist and the id cannot be resolved.
    """
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


def resolve_device(requested: str) -> str:
    """The torch device for a spec's ``device`` field: "auto" picks CUDA when present."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError(
            f"ModelSpec.device is {requested!r} but this process sees no CUDA device; "
            "use device='auto' or 'cpu', or run on GPU executors"
        )
    return requested


def resolve_dtype(requested: str, device: str) -> Any:
    """The torch dtype: "auto" is float32 on CPU, bfloat16 (or float16 where unsupported) on CUDA."""
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load tokenizer, weights and task head for `spec` (no caching: see cache.get_model).

    Raises:
        ModelLoadError: When the model or tokenizer cannot be loaded.
        SpecError: When the spec asks for more than the model can do (max_length, device).
    """
    import transformers

    started = time.perf_counter()
    model_dir = resolve_model_dir(spec)
    device = resolve_device(spec.device)
    task = get_task(spec.task)
    common: dict[str, Any] = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
    # A progress bar per load would flood executor logs; restore the caller's setting afterwards.
    progress_bar = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, **common)
        model_class = getattr(transformers, task.auto_class)
        kwargs = {**common, "dtype": resolve_dtype(spec.dtype, device)}
        try:
            model = model_class.from_pretrained(model_dir, attn_implementation="sdpa", **kwargs)
        except (ValueError, ImportError):  # the architecture has no SDPA attention: take its default
            model = model_class.from_pretrained(model_dir, **kwargs)
    except Exception as exc:
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
    model = model.to(device).eval()
    max_length = _max_length(spec, tokenizer, model.config, model_dir)
    backend = tokenizer.backend_tokenizer
    backend.no_padding()
    backend.enable_truncation(max_length=max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    head = task.build_head(spec, model, model_dir)
    seconds = time.perf_counter() - started
    log.info("sparkinfer loaded %s (%s) on %s in %.2fs", spec.model, spec.task, device, seconds)
    return LoadedModel(spec, model, backend, head, max_length, int(pad_id), device, seconds)


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
