"""plan_batches and pad: invariants over random lengths and budgets (hypothesis), plus worked examples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkinfer.engine.batching import pad, plan_batches

lengths_st = st.lists(
    st.one_of(st.integers(0, 8), st.integers(0, 600)), max_size=300
).map(lambda xs: np.asarray(xs, dtype=np.int64))


@settings(max_examples=300, deadline=None)
@given(lengths=lengths_st, batch_tokens=st.integers(1, 5000), max_batch_size=st.integers(1, 300))
def test_plan_batches_invariants(lengths: np.ndarray, batch_tokens: int, max_batch_size: int) -> None:
    batches = plan_batches(lengths, batch_tokens=batch_tokens, max_batch_size=max_batch_size)

    # Together a permutation of every row.
    flat = np.concatenate(batches) if batches else np.array([], dtype=np.int64)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert all(len(b) >= 1 for b in batches)

    for b in batches:
        assert len(b) <= max_batch_size
        # Padded tokens (rows x padded width; pad() never makes a width below 1) fit the budget,
        # unless the batch is a single row, which may exceed it alone.
        width = max(int(lengths[b].max()), 1)
        assert len(b) == 1 or len(b) * width <= batch_tokens

    # Longest first, across and within batches.
    ordered = lengths[flat]
    assert np.all(ordered[:-1] >= ordered[1:])

    # Documented fill: every batch but the last holds min(max_batch_size, batch_tokens // longest) rows.
    for b in batches[:-1]:
        longest = max(int(lengths[b[0]]), 1)
        assert len(b) == max(1, min(max_batch_size, batch_tokens // longest))


def test_plan_batches_worked_example() -> None:
    lengths = np.array([3, 10, 1, 10, 5, 0], dtype=np.int64)
    batches = plan_batches(lengths, batch_tokens=20, max_batch_size=8)
    # Longest (10, 10) fill the budget exactly; then 5 x 4 rows = 20 covers 5, 3, 1, 0.
    assert [b.tolist() for b in batches] == [[1, 3], [4, 0, 2, 5]]


def test_plan_batches_row_longer_than_budget_runs_alone() -> None:
    lengths = np.array([50, 2, 2], dtype=np.int64)
    batches = plan_batches(lengths, batch_tokens=10, max_batch_size=8)
    assert [b.tolist() for b in batches] == [[0], [1, 2]]


def test_plan_batches_empty() -> None:
    assert plan_batches(np.array([], dtype=np.int64), batch_tokens=10, max_batch_size=2) == []


ids_st = st.lists(st.lists(st.integers(1, 30000), max_size=20), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(ids=ids_st, data=st.data(), pad_id=st.integers(0, 5), side=st.sampled_from(["right", "left"]))
def test_pad_matches_rowwise_construction(ids: list[list[int]], data: st.DataObject, pad_id: int, side: str) -> None:
    rows = np.asarray(
        data.draw(st.lists(st.integers(0, len(ids) - 1), min_size=1, max_size=len(ids), unique=True)), dtype=np.int64
    )
    input_ids, mask = pad(ids, rows, pad_id=pad_id, side=side)

    width = max(max(len(ids[r]) for r in rows), 1)
    assert input_ids.shape == mask.shape == (len(rows), width)
    assert input_ids.dtype == mask.dtype == np.int64
    for i, r in enumerate(rows):
        n = len(ids[r])
        padding = [pad_id] * (width - n)
        assert input_ids[i].tolist() == (ids[r] + padding if side == "right" else padding + ids[r])
        unmasked = [1] * n + [0] * (width - n)
        assert mask[i].tolist() == (unmasked if side == "right" else unmasked[::-1])


def test_pad_worked_example() -> None:
    ids = [[101, 7, 102], [101, 102], [101, 5, 6, 7, 102]]
    input_ids, mask = pad(ids, np.array([2, 0], dtype=np.int64), pad_id=0)
    assert input_ids.tolist() == [[101, 5, 6, 7, 102], [101, 7, 102, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    input_ids, mask = pad(ids, np.array([2, 0], dtype=np.int64), pad_id=0, side="left")
    assert input_ids.tolist() == [[101, 5, 6, 7, 102], [0, 0, 101, 7, 102]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]


@pytest.mark.parametrize("n_rows", [1, 3])
def test_pad_all_empty_rows_gives_width_one_fully_masked(n_rows: int) -> None:
    input_ids, mask = pad([[]] * n_rows, np.arange(n_rows, dtype=np.int64), pad_id=9)
    assert input_ids.tolist() == [[9]] * n_rows
    assert mask.tolist() == [[0]] * n_rows
