"""The Task protocol: what each task module provides to the one batching loop in runner.py.

A task module holds an ``auto_class``, an ``arrow_type(spec)`` and a ``build_head(spec, model, tokenizer,
model_dir)``. The head it builds does the three task-specific steps of the loop:

1. ``prepare(texts)``: turn the chunk's valid texts into token encodings (chat templates, prompt
   truncation side and special tokens are the head's business);
2. ``forward(input_ids, attention_mask)``: one padded micro-batch in, one output per row out;
3. ``to_arrow(outputs, valid, inputs)``: the outputs of the whole chunk, in input order, into the
   task's Arrow column, with the texts and encodings at hand (offsets, decoding).

Everything else (length sorting, token budgets, padding, overlap, out-of-memory splits, order
restoration, metrics) is the runner's, shared by every task.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

if TYPE_CHECKING:
    import torch

    from sparkinfer.spec import ModelSpec

PaddingSide = Literal["right", "left"]


@dataclass(frozen=True)
class Inputs:
    """The valid rows of one chunk, in input order, as `Head.prepare` saw and encoded them.

    Attributes:
        texts: The input strings (nulls removed).
        encodings: One ``tokenizers.Encoding`` per text: ids, offsets, special-token mask, word ids.
    """

    texts: list[str]
    encodings: list[Any]


class Head(Protocol):
    """A task head bound to a loaded model and its tokenizer.

    Attributes:
        padding_side: Where the runner pads a micro-batch: ``"right"``, or ``"left"`` for decoder-only
            generation, which appends new tokens after the last real one.
        new_tokens: Tokens each row grows by inside `forward` (generation's ``max_new_tokens``); the runner
            counts them in the micro-batch token budget.
    """

    padding_side: PaddingSide
    new_tokens: int

    def prepare(self, texts: list[str]) -> list[Any]:
        """Tokenize the valid texts of a chunk (truncated, unpadded): one ``tokenizers.Encoding`` each."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> npt.NDArray[Any]:
        """Run the model on one padded micro-batch; return one output row per input row (numpy)."""

    def to_arrow(self, outputs: npt.NDArray[Any], valid: npt.NDArray[np.bool_], inputs: Inputs) -> pa.Array:
        """Turn the outputs of the valid rows (in input order) into the task's Arrow column.

        ``valid`` has one entry per input row; rows where it is False come out null. ``inputs`` holds the
        valid rows' texts and encodings, in the same order as ``outputs``.
        """


class Task(Protocol):
    """A task module: its model class, its output type, and how to build its head."""

    auto_class: str  # the transformers Auto class that loads the model, e.g. "AutoModel"

    def arrow_type(self, spec: ModelSpec) -> pa.DataType:
        """The Arrow type of the output column (the Spark type is derived from it)."""

    def build_head(self, spec: ModelSpec, model: Any, tokenizer: Any, model_dir: Path) -> Head:
        """Bind the task's pre- and post-processing to a loaded model.

        ``tokenizer`` is the transformers fast tokenizer; its backing ``tokenizers.Tokenizer`` already
        truncates at the resolved max length, without padding.
        """


class EncoderHead:
    """What the encoder-only heads share: right padding, no new tokens, plain tokenization."""

    padding_side: PaddingSide = "right"
    new_tokens: int = 0

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer

    def prepare(self, texts: list[str]) -> list[Any]:
        """The backing Rust tokenizer on the whole list at once (it releases the GIL)."""
        encodings: list[Any] = self.tokenizer.backend_tokenizer.encode_batch(texts)
        return encodings
