"""The plan's Spark-free arithmetic: simulated padding against the engine itself, the recommendation rules,
the projection's waves and its bootstrap interval."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sparkinfer.spark.plan import _estimate
from sparkinfer.spark.plan._estimate import Padding
from sparkinfer.spec import ModelSpec


@pytest.mark.parametrize("batch_tokens", [512, 2048, 16384])
def test_simulated_padding_is_what_the_engine_pads(tiny_classifier: str, docs: list[str], batch_tokens: int) -> None:
    import transformers

    from sparkinfer.engine import run

    texts = docs[:300]
    spec = ModelSpec(tiny_classifier, task="classification", device="cpu", batch_tokens=batch_tokens,
                     max_batch_size=64)
    _, metrics = run(spec, pa.array(texts))
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_classifier)
    lengths = np.array([len(tokenizer(t, truncation=True, max_length=512)["input_ids"]) for t in texts])

    got = _estimate.simulate_padding([lengths], batch_tokens=batch_tokens, max_batch_size=64)

    assert got.padded_per_text * len(texts) == pytest.approx(metrics.padded_tokens)
    assert got.efficiency == pytest.approx(metrics.padding_efficiency)
    assert got.micro_batches_per_1000 * len(texts) / 1000 == pytest.approx(metrics.micro_batches)


def test_windows_are_disjoint_pieces_or_one_draw() -> None:
    rng = np.random.default_rng(0)
    lengths = np.arange(10)
    pieces = _estimate.windows(lengths, 3, rng)
    assert [len(p) for p in pieces] == [3, 3, 3] and len(set(np.concatenate(pieces))) == 9
    assert list(_estimate.windows(lengths, 10, rng)[0]) == list(lengths)
    (drawn,) = _estimate.windows(lengths, 25, rng)
    assert len(drawn) == 25 and set(drawn) <= set(lengths)
    # The runner splits a task into even chunks of at most buffer_rows.
    assert [_estimate.window_rows(n, 4096) for n in (100, 4096, 4097, 4861, 20_000)] == [100, 4096, 2049, 2431, 4000]


def test_the_recommended_budget_is_the_largest_efficient_one_short_of_max_batch_size() -> None:
    def paddings(*efficiencies: float) -> list[Padding]:
        return [Padding(b, e, 0.0, 0.0) for b, e in zip(_estimate.CANDIDATE_BUDGETS, efficiencies)]

    # 1024 .. 65536: the best is 0.95; within 0.05 of it are 1024 .. 8192.
    efficient = paddings(0.95, 0.94, 0.93, 0.91, 0.85, 0.8, 0.7)
    assert _estimate.recommend_batch_tokens(efficient, p90_cost=100, max_batch_size=256) == 8192
    # 64 texts of 50 tokens fill 4096: larger budgets are capped by max_batch_size anyway.
    assert _estimate.recommend_batch_tokens(efficient, p90_cost=50, max_batch_size=64) == 4096
    assert _estimate.recommend_batch_tokens(efficient, p90_cost=5, max_batch_size=64) == 1024
    assert _estimate.candidate_budgets(512) == _estimate.CANDIDATE_BUDGETS
    assert _estimate.candidate_budgets(4096)[0] == 4096 and _estimate.candidate_budgets(100_000) == (131072,)


def test_chunk_rows_take_about_ten_minutes_of_the_cluster() -> None:
    assert _estimate.recommend_chunk_rows(None, slots=4, buffer_rows=4096, default=100_000) == 100_000
    assert _estimate.recommend_chunk_rows(123.4, slots=4, buffer_rows=4096, default=100_000) == 74_000  # 74040
    assert _estimate.recommend_chunk_rows(1.0, slots=4, buffer_rows=4096, default=100_000) == 4 * 4096


def test_compute_counts_waves_and_the_steady_rate_leaves_out_the_first_chunk() -> None:
    # 4 tasks of 250 texts on 3 slots: two waves of one task length each.
    assert _estimate.compute_seconds(1000, chunks=1, partitions=4, slots=3, per_text_seconds=0.01) == pytest.approx(5)
    # Two chunks of two tasks of 250 texts on 2 slots: one wave each.
    assert _estimate.compute_seconds(1000, chunks=2, partitions=2, slots=2, per_text_seconds=0.01) == pytest.approx(5)
    steady = _estimate.steady_rate(np.array([3.0, 1.0, 1.0, 2.0]), np.array([100, 100, 100, 200]))
    assert steady.seconds_per_padded_token == pytest.approx(4 / 400) and steady.warmup_seconds == pytest.approx(2)
    assert _estimate.steady_rate(np.array([3.0, 1.0]), np.array([100, 100])).warmup_seconds == 0


def test_the_interval_holds_the_estimate_and_widens_with_the_spread() -> None:
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 200, size=500)
    padded = np.full(9, 1000)

    point = _estimate.simulate_padding([lengths], batch_tokens=4096, max_batch_size=256).padded_per_text

    def width(seconds: np.ndarray) -> float:
        steady = _estimate.steady_rate(seconds, padded)
        factors = _estimate.cost_factors(seconds, padded, steady, lengths, window=500, point_padded_per_text=point,
                                         batch_tokens=4096, max_batch_size=256, new_tokens=0, rng=rng, draws=200)
        assert 0.8 < float(np.median(factors)) < 1.2
        low, high = _estimate.interval(10.0, 100.0, factors)
        assert low <= 110.0 <= high
        return high - low

    assert width(np.full(9, 1.0) + rng.normal(0, 0.3, 9)) > width(np.full(9, 1.0) + rng.normal(0, 0.01, 9))
