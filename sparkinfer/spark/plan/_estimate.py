"""The arithmetic of a plan, Spark-free: token statistics, simulated padding, recommendations, the projection.

Everything here takes numpy arrays and plain numbers, so it is tested in milliseconds and reads the same
whatever gathered the numbers (see ``sparkinfer/spark/plan/__init__.py`` for the model it implements).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sparkinfer.engine.batching import IntArray, plan_batches

CANDIDATE_BUDGETS = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
EFFICIENCY_SLACK = 0.05  # a budget whose padding efficiency is this close to the best one's counts as efficient
CHUNK_SECONDS = 600.0  # a recommended chunk takes about this long on the cluster, so a crash loses at most that
INTERVAL = 0.90  # the projection's interval: its 5th to 95th bootstrap percentiles
BOOTSTRAPS = 400

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TokenStats:
    """Tokens per text after truncation (``numpy.quantile``'s default, linear interpolation).

    Attributes:
        p50: Median.
        p90: 90th percentile.
        p99: 99th percentile.
        max: Longest.
        mean: Mean.
    """

    p50: float
    p90: float
    p99: float
    max: int
    mean: float

    @classmethod
    def of(cls, lengths: IntArray) -> TokenStats:
        """The statistics of `lengths` (at least one)."""
        p50, p90, p99 = (float(q) for q in np.quantile(lengths, [0.5, 0.9, 0.99]))
        return cls(p50, p90, p99, int(lengths.max()), float(lengths.mean()))


@dataclass(frozen=True)
class Padding:
    """What one token budget does to the sampled texts, micro-batched as the runner does.

    Attributes:
        batch_tokens: The budget.
        efficiency: Real tokens over padded tokens (1.0: no padding).
        padded_per_text: Padded tokens sent to the model per text.
        micro_batches_per_1000: Forward passes per 1000 texts.
    """

    batch_tokens: int
    efficiency: float
    padded_per_text: float
    micro_batches_per_1000: float


def window_rows(task_texts: float, buffer_rows: int) -> int:
    """Texts the runner sorts together in a task of `task_texts` texts: even chunks of at most `buffer_rows`."""
    texts = max(1, math.ceil(task_texts))
    return max(1, math.ceil(texts / math.ceil(texts / buffer_rows)))


def windows(lengths: IntArray, window: int, rng: np.random.Generator) -> list[IntArray]:
    """Windows of `window` lengths as a task would sort them: disjoint pieces of the shuffled sample, or, for a
    window longer than the sample, one window drawn from it with replacement."""
    n = len(lengths)
    if window >= n:
        return [lengths if window == n else rng.choice(lengths, size=window, replace=True)]
    shuffled = lengths[rng.permutation(n)]
    return [shuffled[i : i + window] for i in range(0, n - window + 1, window)]


def simulate_padding(
    groups: Sequence[IntArray], *, batch_tokens: int, max_batch_size: int, new_tokens: int = 0
) -> Padding:
    """`Padding` of length windows micro-batched by `plan_batches`, padded as the runner pads.

    A batch is budgeted by its rows' costs (length plus `new_tokens`, as ``forward_rows`` does) and padded to
    its longest length; all-empty rows still take width 1 (`batching.pad`).
    """
    real = padded = batches = texts = 0
    for lengths in groups:
        for rows in plan_batches(lengths + new_tokens, batch_tokens=batch_tokens, max_batch_size=max_batch_size):
            padded += len(rows) * max(int(lengths[rows].max()), 1)
            batches += 1
        real += int(lengths.sum())
        texts += len(lengths)
    return Padding(batch_tokens, real / padded if padded else 1.0, padded / max(texts, 1),
                   1000 * batches / max(texts, 1))


def candidate_budgets(longest_cost: int) -> tuple[int, ...]:
    """`CANDIDATE_BUDGETS` that fit a full-length text (max_length plus new tokens), or the next power of two."""
    fitting = tuple(b for b in CANDIDATE_BUDGETS if b >= longest_cost)
    return fitting or (1 << max(longest_cost - 1, 1).bit_length(),)


def recommend_batch_tokens(paddings: Sequence[Padding], *, p90_cost: float, max_batch_size: int) -> int:
    """The largest efficient budget that still changes the batches.

    Efficient: padding efficiency within `EFFICIENCY_SLACK` of the best candidate's. Changing the batches: no
    larger than the first candidate that holds ``max_batch_size`` texts of the 90th-percentile cost; past it
    nearly every micro-batch is capped by ``max_batch_size``, so a larger budget only raises the worst-case
    memory (a batch of long texts). Larger batches keep a GPU busier, so among efficient budgets the largest
    wins; measure its peak memory with ``notebook.probe_token_budgets`` on one executor's GPU.
    """
    best = max(p.efficiency for p in paddings)
    budgets = sorted(p.batch_tokens for p in paddings)
    efficient = [p.batch_tokens for p in paddings if p.efficiency >= best - EFFICIENCY_SLACK]
    saturated = next((b for b in budgets if b >= max_batch_size * p90_cost), budgets[-1])
    useful = [b for b in efficient if b <= saturated]
    return max(useful) if useful else min(efficient)


def recommend_chunk_rows(rows_per_second: float | None, *, slots: int, buffer_rows: int, default: int) -> int:
    """Rows per chunk: about `CHUNK_SECONDS` of the cluster's time, rounded down to two significant digits,
    and at least a full buffer per slot; `default` (the job's) without a measured rate."""
    if rows_per_second is None or rows_per_second <= 0:
        return default
    target = CHUNK_SECONDS * rows_per_second
    digits = max(0, int(math.floor(math.log10(max(target, 1.0)))) - 1)
    rounded = int(target // 10**digits * 10**digits)
    return max(slots * buffer_rows, rounded, 1)


@dataclass(frozen=True)
class Steady:
    """The per-slot cost of computing, from the calibration chunks after the first (warm-up) one.

    Attributes:
        seconds_per_padded_token: Tokenizing plus forward seconds per padded token, in one task slot.
        warmup_seconds: The first chunk's excess over that rate (first-call costs of the framework).
        chunks: The chunks the rate is taken from.
    """

    seconds_per_padded_token: float
    warmup_seconds: float
    chunks: tuple[int, ...]


def steady_rate(seconds: FloatArray, padded: IntArray) -> Steady:
    """The steady rate of calibration chunks (``seconds[i]`` for ``padded[i]`` padded tokens).

    With three chunks or more the first is left out of the rate and its excess is the warm-up; with fewer,
    every chunk counts and there is no warm-up.
    """
    chunks = tuple(range(1, len(seconds))) if len(seconds) >= 3 else tuple(range(len(seconds)))
    idx = list(chunks)
    rate = float(seconds[idx].sum()) / max(int(padded[idx].sum()), 1)
    warmup = max(0.0, float(seconds[0]) - rate * int(padded[0])) if len(seconds) >= 3 else 0.0
    return Steady(rate, warmup, chunks)


def compute_seconds(texts: float, *, chunks: int, partitions: int, slots: int, per_text_seconds: float) -> float:
    """Wall seconds of predicting `texts` texts in `chunks` chunks of `partitions` tasks each on `slots` slots.

    Tasks of a chunk get about equal texts (a round-robin repartition), so a chunk takes as many task lengths
    as it has waves (``ceil(partitions / slots)``).
    """
    waves = math.ceil(partitions / max(slots, 1))
    return chunks * waves * (texts / chunks / partitions) * per_text_seconds


def cost_factors(
    seconds: FloatArray,
    padded: IntArray,
    steady: Steady,
    lengths: IntArray,
    *,
    window: int,
    point_padded_per_text: float,
    batch_tokens: int,
    max_batch_size: int,
    new_tokens: int,
    rng: np.random.Generator,
    draws: int = BOOTSTRAPS,
) -> FloatArray:
    """Bootstrap draws of the cost per text over its point estimate: the steady calibration chunks resampled
    (the rate), times the sampled lengths resampled (the padded tokens per text in `window`-text windows)."""
    idx = np.array(steady.chunks)
    point = steady.seconds_per_padded_token * point_padded_per_text
    factors = np.ones(draws)
    if point <= 0:
        return factors
    for d in range(draws):
        pick = rng.choice(idx, size=len(idx), replace=True)
        rate = float(seconds[pick].sum()) / max(int(padded[pick].sum()), 1)
        resampled = lengths[rng.integers(0, len(lengths), size=len(lengths))]
        ppt = simulate_padding(windows(resampled, window, rng), batch_tokens=batch_tokens,
                               max_batch_size=max_batch_size, new_tokens=new_tokens).padded_per_text
        factors[d] = rate * ppt / point
    return factors


def interval(fixed: float, compute: float, factors: FloatArray) -> tuple[float, float]:
    """The `INTERVAL` range of ``fixed + compute x factor`` over the bootstrap `factors`."""
    tail = (1 - INTERVAL) / 2
    low, high = np.quantile(fixed + compute * factors, [tail, 1 - tail])
    mid = fixed + compute
    return min(float(low), mid), max(float(high), mid)
