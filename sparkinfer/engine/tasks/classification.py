"""Text classification: label + score, optionally every label's score.

The score function follows transformers' text-classification pipeline: sigmoid for multi-label
models and single-logit models, softmax otherwise, raw logits for regression; ``function_to_apply``
overrides it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from sparkinfer.engine.tasks.base import EncoderHead, Inputs

if TYPE_CHECKING:
    import torch

    from sparkinfer.spec import ModelSpec

auto_class = "AutoModelForSequenceClassification"

_LABEL_SCORE = pa.struct([("label", pa.string()), ("score", pa.float64())])


def arrow_type(spec: ModelSpec) -> pa.DataType:
    """struct<label, score>, plus ``scores: array<struct<label, score>>`` with return_all_scores/top_k."""
    return pa.struct(_fields(with_scores=spec.return_all_scores or spec.top_k is not None))


def _fields(*, with_scores: bool) -> list[pa.Field]:
    fields = list(_LABEL_SCORE)
    return [*fields, pa.field("scores", pa.list_(_LABEL_SCORE))] if with_scores else fields


def score_function(config: Any, requested: str) -> str:
    """The function turning logits into scores, as transformers' pipeline picks it."""
    if requested != "auto":
        return requested
    if config.problem_type == "regression":
        return "none"
    if config.problem_type == "multi_label_classification" or config.num_labels == 1:
        return "sigmoid"
    return "softmax"


class ClassificationHead(EncoderHead):
    """Logits → scores (float64) per row; labels are attached in `to_arrow`."""

    def __init__(
        self, model: Any, tokenizer: Any, function: str, labels: list[str], top_k: int | None, all_scores: bool
    ) -> None:
        super().__init__(model, tokenizer)
        self.function = function
        self.labels = labels
        self.top_k = top_k
        self.all_scores = all_scores

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> npt.NDArray[np.float64]:
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits.double()
        if self.function == "softmax":
            scores = logits.softmax(dim=-1)
        elif self.function == "sigmoid":
            scores = logits.sigmoid()
        else:
            scores = logits
        result: npt.NDArray[np.float64] = scores.cpu().numpy()
        return result

    def to_arrow(self, outputs: npt.NDArray[Any], valid: npt.NDArray[np.bool_], inputs: Inputs) -> pa.Array:
        scores = outputs.reshape(len(outputs), len(self.labels))
        labels = np.asarray(self.labels, dtype=object)
        best = scores.argmax(axis=1)
        mask = pa.array(~valid)
        label = _scatter(labels[best], valid, pa.string())
        score = _scatter(scores[np.arange(len(scores)), best], valid, pa.float64())
        if not (self.all_scores or self.top_k is not None):
            return pa.StructArray.from_arrays([label, score], fields=_fields(with_scores=False), mask=mask)
        if self.all_scores:
            order = np.broadcast_to(np.arange(len(labels)), scores.shape)
        else:
            order = np.argsort(-scores, axis=1, kind="stable")[:, : self.top_k]
        width = order.shape[1]
        entries = pa.StructArray.from_arrays(
            [pa.array(labels[order].reshape(-1), pa.string()),
             pa.array(np.take_along_axis(scores, order, axis=1).reshape(-1), pa.float64())],
            fields=list(_LABEL_SCORE),
        )
        offsets = np.zeros(len(valid) + 1, dtype=np.int32)
        np.cumsum(np.where(valid, width, 0), out=offsets[1:])
        listed = pa.ListArray.from_arrays(pa.array(offsets), entries)
        return pa.StructArray.from_arrays(
            [label, score, listed], fields=_fields(with_scores=True), mask=mask
        )


def _scatter(values: npt.NDArray[Any], valid: npt.NDArray[np.bool_], type_: pa.DataType) -> pa.Array:
    """Values of the valid rows spread over all rows, nulls elsewhere."""
    full = np.empty(len(valid), dtype=object)
    full[valid] = values
    full[~valid] = None
    return pa.array(full, type_)


def build_head(spec: ModelSpec, model: Any, tokenizer: Any, model_dir: Path) -> ClassificationHead:
    """Labels from ``config.id2label`` in id order; the score function as the pipeline picks it."""
    config = model.config
    labels = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]
    return ClassificationHead(
        model, tokenizer, score_function(config, spec.function_to_apply), labels, spec.top_k, spec.return_all_scores
    )
