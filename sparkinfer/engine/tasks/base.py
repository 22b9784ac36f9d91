"""The Task protocol: what each task module provides to the one batching loop in runner.py."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

if TYPE_CHECKING:
    import torch

    from sparkinfer.spec import ModelSpec


class Head(Protocol):
    """A task head bound to a loaded model."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> npt.NDArray[Any]:
        """Run the model on one padded micro-batch; return one output row per input row (numpy)."""

    def to_arrow(self, outputs: npt.NDArray[Any], valid: npt.NDArray[np.bool_]) -> pa.Array:
        """Turn the outputs of the valid rows (in input order) into the task's Arrow column.

        ``valid`` has one entry per input row; rows where it is False come out null.
        """


class Task(Protocol):
    """A task module: its model class, its output type, and how to build its head."""

    auto_class: str  # the transformers Auto class that loads the model, e.g. "AutoModel"

    def arrow_type(self, spec: ModelSpec) -> pa.DataType:
        """The Arrow type of the output column (the Spark type is derived from it)."""

    def build_head(self, spec: ModelSpec, model: Any, model_dir: Path) -> Head:
        """Bind the task's post-processing to a loaded model."""
