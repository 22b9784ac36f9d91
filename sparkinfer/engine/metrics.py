"""Counters of what the engine did, as plain data (picklable, JSON-able, mergeable)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


# Counters that add up as a maximum, not a sum.
MAXIMA = frozenset({"host_clients"})


def _plus(a: Any, b: Any) -> Any:
    return a + b


@dataclass
class Metrics:
    """What one engine call (or a sum of them) did.

    Attributes:
        rows: Input rows, nulls included.
        null_rows: Null inputs, answered with null and never sent to the model.
        real_tokens: Tokens of the rows themselves, after truncation (duplicates included).
        padded_tokens: Tokens sent to the model, padding included (rows x padded length, per micro-batch).
        duplicate_rows: Rows answered from another row's result, never sent to the model: their token ids
            equal those of a row of the same chunk, or of one of the task's last ``buffer_rows`` distinct rows.
        duplicate_tokens: Their tokens (part of `real_tokens`).
        truncated_rows: Rows cut to ``max_length``.
        micro_batches: Forward passes run: a micro-batch of generation counts once, a decoding step of a model
            host's continuous batch (which mixes rows of several tasks) counts once for each task in it.
        model_loads: Models loaded by this call (0 when the per-process cache already held it).
        model_load_seconds: Seconds spent loading them (and a model host's load, in the first call it served).
        tokenize_seconds: Seconds spent tokenizing.
        forward_seconds: Seconds spent in forward passes and post-processing.
        oom_splits: Micro-batches that ran out of device memory and were split in half to retry.
        error_rows: Rows whose prediction failed (``on_error="null"`` or ``"column"`` answers them).
        host_loads: Weight loads an executor's model host made to serve this call (``host="executor"``).
        host_requests: Requests this call sent to a model host (0 with ``host="worker"``).
        host_clients: The most tasks connected to the host while it served this call (a maximum: sums
            keep the largest).
        cross_task_batches: Micro-batches (or decode steps) in which this call's rows ran beside rows of
            another task.
        queue_wait_seconds: Seconds this call's requests waited in the host's queue before computing.
        constrained_rows: Rows decoded under a grammar (extraction, or generation with choices/regex).
        truncated_outputs: Of those, rows that ran out of ``max_new_tokens`` before completing it.
        invalid_outputs: Extraction rows that completed the grammar but failed validation (status
            "invalid"); the rest of the constrained rows are "ok".
        mask_seconds: Extraction: seconds spent feeding grammar matchers and computing and applying token
            masks (part of ``forward_seconds``).
    """

    rows: int = 0
    null_rows: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    duplicate_rows: int = 0
    duplicate_tokens: int = 0
    truncated_rows: int = 0
    micro_batches: int = 0
    model_loads: int = 0
    model_load_seconds: float = 0.0
    tokenize_seconds: float = 0.0
    forward_seconds: float = 0.0
    oom_splits: int = 0
    error_rows: int = 0
    host_loads: int = 0
    host_requests: int = 0
    host_clients: int = 0
    cross_task_batches: int = 0
    queue_wait_seconds: float = 0.0
    constrained_rows: int = 0
    truncated_outputs: int = 0
    invalid_outputs: int = 0
    mask_seconds: float = 0.0

    @property
    def computed_tokens(self) -> int:
        """Real tokens of the rows sent to the model: `real_tokens` less the duplicates' tokens."""
        return self.real_tokens - self.duplicate_tokens

    @property
    def padding_efficiency(self) -> float:
        """Share of the tokens sent to the model that were real (1.0 means no padding at all)."""
        return self.computed_tokens / self.padded_tokens if self.padded_tokens else 1.0

    def __add__(self, other: Metrics) -> Metrics:
        return Metrics(**{
            f.name: (max if f.name in MAXIMA else _plus)(getattr(self, f.name), getattr(other, f.name))
            for f in dataclasses.fields(self)
        })

    def to_dict(self) -> dict[str, Any]:
        """The counters plus ``padding_efficiency``, as a JSON-able dict."""
        return {**dataclasses.asdict(self), "padding_efficiency": self.padding_efficiency}
