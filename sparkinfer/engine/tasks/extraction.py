"""Typed extraction: a causal LM decodes compact JSON under ``ModelSpec.schema``, parsed into a struct.

The generation head does the decoding, constrained by the schema's grammar (`constrain`), so every row
that completes it is JSON of the schema's shape. Each row then gets a status:

* ``"ok"``: it completed the grammar, parsed and validated against the schema (`schema.parse_value`:
  the keywords a grammar does not enforce, such as date formats, are checked here) and converted to the
  value's Arrow type;
* ``"truncated"``: ``max_new_tokens`` ran out before the value closed; ``value`` is null;
* ``"invalid"``: it completed but did not validate or convert; ``value`` is null.

``raw`` is always the generated text. Parsing and validation run inside `forward`, so they are part of
the runner's per-row isolation: a row whose post-processing raises fails alone, as a forward pass does.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from sparkinfer.engine.tasks import generation
from sparkinfer.engine.tasks.base import Inputs
from sparkinfer.schema import parse_value, value_type

if TYPE_CHECKING:
    import torch

    from sparkinfer.spec import ModelSpec

auto_class = generation.auto_class
STATUSES = ("ok", "truncated", "invalid")


def arrow_type(spec: ModelSpec) -> pa.DataType:
    """struct<value: the schema's struct, status: string, raw: string>."""
    assert spec.schema is not None  # ModelSpec requires it for this task
    return pa.struct([("value", value_type(spec.schema)), ("status", pa.string()), ("raw", pa.string())])


def build_head(spec: ModelSpec, model: Any, tokenizer: Any, model_dir: Path) -> ExtractionHead:
    """The generation head of a causal LM, constrained by the schema, with extraction's outputs."""
    head = generation.build_head(spec, model, tokenizer, model_dir, head_class=ExtractionHead)
    assert isinstance(head, ExtractionHead)
    return head


class ExtractionHead(generation.GenerationHead):
    """`forward` gives one ``(value, status, raw, mask_seconds)`` per row (the row's share of the batch's
    mask time); `to_arrow` builds the struct, `tally` counts the statuses for the metrics."""

    @functools.cached_property
    def value_type(self) -> pa.DataType:
        return arrow_type(self.spec).field("value").type

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> npt.NDArray[Any]:
        schema = self.spec.schema
        assert schema is not None
        results, complete, seconds = self._generate(input_ids, attention_mask)
        assert complete is not None  # the head is constrained
        share = seconds / max(len(results), 1)
        out = np.empty(len(results), dtype=object)
        for row, ((raw, *_), done) in enumerate(zip(results, complete)):
            value, status = None, "truncated"
            if done:
                try:
                    value = parse_value(raw, schema)
                    pa.array([value], self.value_type)  # what to_arrow will do with it
                    status = "ok"
                except (ValueError, pa.ArrowException):
                    value, status = None, "invalid"
            out[row] = (value, status, raw, share)
        return out

    def to_arrow(self, outputs: npt.NDArray[Any], valid: npt.NDArray[np.bool_], inputs: Inputs) -> pa.Array:
        full: list[dict[str, Any] | None] = [None] * len(valid)
        for position, (value, status, raw, _) in zip(np.flatnonzero(valid), outputs):
            full[position] = {"value": value, "status": status, "raw": raw}
        return pa.array(full, arrow_type(self.spec))

    def tally(self, outputs: npt.NDArray[Any]) -> dict[str, float]:
        """Metrics counters of the rows' outputs: the constrained rows, by status, and the mask time."""
        statuses = [status for _, status, _, _ in outputs]
        return {
            "constrained_rows": len(statuses),
            "truncated_outputs": statuses.count("truncated"),
            "invalid_outputs": statuses.count("invalid"),
            "mask_seconds": sum(seconds for *_, seconds in outputs),
        }
