"""Sentence embeddings: attention-mask-aware pooling over the last hidden state.

Follows the sentence-transformers layout when the model directory has one: ``modules.json`` lists the
modules, the Pooling module's ``config.json`` gives the pooling mode, and a Normalize module turns on
L2 normalization. Modules that change the vectors in other ways (Dense, ...) are refused rather than
silently skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from sparkinfer.engine.tasks.base import EncoderHead, Inputs
from sparkinfer.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

    from sparkinfer.spec import ModelSpec

auto_class = "AutoModel"

# Up to v5 modules are "sentence_transformers.models.Pooling"; v6 writes e.g.
# "sentence_transformers.sentence_transformer.modules.pooling.Pooling". Both are known by the class name.
_ST_PACKAGE = "sentence_transformers."
_SUPPORTED_MODULES = {"Transformer", "Pooling", "Normalize"}
_ST_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_lasttoken": "lasttoken",
}


def arrow_type(spec: ModelSpec) -> pa.DataType:
    """array<float>: one float32 vector per row."""
    return pa.list_(pa.float32())


@dataclass(frozen=True)
class SentenceTransformersConfig:
    """What sparkinfer reads from a sentence-transformers model directory."""

    pooling: str | None = None
    normalize: bool = False
    max_seq_length: int | None = None


def read_st_config(model_dir: Path) -> SentenceTransformersConfig:
    """Read pooling, normalization and max_seq_length from a sentence-transformers layout.

    Returns:
        The config; all defaults when the directory has no ``modules.json``.

    Raises:
        ModelLoadError: When ``modules.json`` lists a module sparkinfer does not implement.
    """
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return SentenceTransformersConfig()
    modules = json.loads(modules_file.read_text())
    kinds = {
        m["type"].rsplit(".", 1)[-1] if m["type"].startswith(_ST_PACKAGE) else m["type"]: m.get("path", "")
        for m in modules
    }
    unsupported = sorted(set(kinds) - _SUPPORTED_MODULES)
    if unsupported:
        raise ModelLoadError(
            f"{model_dir}/modules.json lists {unsupported}; sparkinfer implements {sorted(_SUPPORTED_MODULES)} "
            "(got a model whose vectors need the others); export the model without them or run it with "
            "sentence-transformers"
        )
    pooling = None
    if "Pooling" in kinds:
        config = json.loads((model_dir / kinds["Pooling"] / "config.json").read_text())
        # v6 names the mode ("pooling_mode": "mean"); earlier releases turn on one pooling_mode_* flag.
        named = config.get("pooling_mode")
        if isinstance(named, list) and len(named) == 1:
            named = named[0]
        flagged = [mode for key, mode in _ST_POOLING_KEYS.items() if config.get(key)]
        chosen = [named] if named is not None else flagged
        supported = chosen[0] in _ST_POOLING_KEYS.values() if len(chosen) == 1 else False
        if not supported or config.get("pooling_mode_weightedmean_tokens"):
            raise ModelLoadError(
                f"{model_dir}/{kinds['Pooling']}/config.json must set one pooling_mode of "
                f"{sorted(_ST_POOLING_KEYS.values())}, or turn on exactly one of {sorted(_ST_POOLING_KEYS)} "
                f"(got {config}); set ModelSpec.pooling explicitly"
            )
        pooling = chosen[0]
    max_seq_length = None
    bert_config = model_dir / "sentence_bert_config.json"
    if bert_config.is_file():
        max_seq_length = json.loads(bert_config.read_text()).get("max_seq_length")
    return SentenceTransformersConfig(pooling, "Normalize" in kinds, max_seq_length)


class EmbeddingHead(EncoderHead):
    """Pools token states into one vector per row, optionally L2-normalized."""

    def __init__(self, model: Any, tokenizer: Any, pooling: str, normalize: bool) -> None:
        super().__init__(model, tokenizer)
        self.pooling = pooling
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> npt.NDArray[np.float32]:
        import torch

        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "lasttoken":
            # Right padding: the last real token sits at (length - 1).
            last = attention_mask.sum(dim=1).clamp(min=1) - 1
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        elif self.pooling == "max":
            pooled = hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
        else:
            counts = mask.sum(dim=1).clamp(min=1e-9)
            pooled = (hidden * mask).sum(dim=1)
            pooled = pooled / (counts.sqrt() if self.pooling == "mean_sqrt_len_tokens" else counts)
        pooled = pooled.float()
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        result: npt.NDArray[np.float32] = pooled.cpu().numpy()
        return result

    def to_arrow(self, outputs: npt.NDArray[Any], valid: npt.NDArray[np.bool_], inputs: Inputs) -> pa.Array:
        dim = outputs.shape[1] if outputs.ndim == 2 else 0
        offsets = np.zeros(len(valid) + 1, dtype=np.int32)
        np.cumsum(np.where(valid, dim, 0), out=offsets[1:])
        values = pa.array(np.ascontiguousarray(outputs, dtype=np.float32).reshape(-1))
        return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~valid))


def build_head(spec: ModelSpec, model: Any, tokenizer: Any, model_dir: Path) -> EmbeddingHead:
    """Pooling and normalization from the spec, else the sentence-transformers config, else mean."""
    st = read_st_config(model_dir)
    pooling = spec.pooling if spec.pooling != "auto" else (st.pooling or "mean")
    normalize = spec.normalize if spec.normalize is not None else st.normalize
    return EmbeddingHead(model, tokenizer, pooling, normalize)
