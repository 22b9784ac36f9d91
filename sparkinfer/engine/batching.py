"""Length-sorted, token-budget micro-batches with dynamic padding (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


def plan_batches(lengths: IntArray, *, batch_tokens: int, max_batch_size: int) -> list[IntArray]:
    """Cut rows into micro-batches, longest first, each within a token budget.

    Rows are sorted by length, longest first (as sentence-transformers does, so that an out-of-memory
    shows on the first batch, not the last). A batch is padded to its first, longest row, so it holds
    ``min(max_batch_size, batch_tokens // longest)`` rows: padded tokens never exceed ``batch_tokens``,
    except for a single row longer than the budget, which runs alone.

    Args:
        lengths: Token count of each row.
        batch_tokens: Most padded tokens (rows x longest length) in one micro-batch.
        max_batch_size: Most rows in one micro-batch.

    Returns:
        Row indices of each micro-batch, in execution order; together a permutation of the rows.
    """
    order = np.argsort(-lengths, kind="stable")
    batches: list[IntArray] = []
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, min(max_batch_size, batch_tokens // longest))
        batches.append(order[start : start + size])
        start += size
    return batches


def pad(
    ids: Sequence[Sequence[int]], rows: IntArray, *, pad_id: int, side: str = "right"
) -> tuple[IntArray, IntArray]:
    """Pad the token ids of `rows` to the longest of them.

    Args:
        ids: Token ids of every row.
        rows: Indices of the rows to pad, as planned by `plan_batches`.
        pad_id: Token id used for padding (masked out by the attention mask).
        side: ``"right"``, or ``"left"`` for decoder-only generation (new tokens follow the last real one).

    Returns:
        ``(input_ids, attention_mask)``, both int64 of shape ``(len(rows), longest)``; a batch whose rows
        are all empty gets length 1, fully masked.
    """
    lengths = [len(ids[r]) for r in rows]
    width = max(max(lengths, default=0), 1)
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, (r, n) in enumerate(zip(rows, lengths)):
        start = width - n if side == "left" else 0
        input_ids[i, start : start + n] = ids[r]
        mask[i, start : start + n] = 1
    return input_ids, mask
