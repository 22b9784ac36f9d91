"""Two-sample statistics on profiles: mergeable summaries of a column, never its rows.

A numeric column is summarised as a `Distribution`: weighted points. On the exact path the points are the
column's distinct values and their counts, so every statistic here equals scipy's on the raw values
(``wasserstein_distance``, ``ks_2samp``); on the sketch path they are ``B`` quantiles of equal weight from
Spark's ``percentile_approx`` (rank error ``1/accuracy``), and the statistics are within `sketch_bounds`.
A categorical column is a mapping of value → count.

The formulas and default thresholds follow Evidently's (``stattests``): Jensen-Shannon distance with the
natural logarithm (scipy's ``jensenshannon`` default), PSI with zero proportions replaced by 1e-4, the
Wasserstein distance divided by the reference's standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PSI_EPSILON = 1e-4


@dataclass(frozen=True)
class Distribution:
    """A numeric column's summary: sorted weighted points plus exact moments.

    Attributes:
        points: Ascending values: the distinct values (exact) or ``B`` quantiles (sketch).
        weights: The rows each point stands for; they sum to `count`.
        count: Non-null values summarised.
        mean, std: Exact mean and population standard deviation (Spark's ``avg``, ``stddev_pop``).
        min, max: Exact extremes.
        exact: Whether `points` are the values themselves.
        rank_error: On the sketch path, the rank error of each quantile (``1/accuracy``); 0 when exact.
    """

    points: tuple[float, ...]
    weights: tuple[float, ...]
    count: int
    mean: float
    std: float
    min: float
    max: float
    exact: bool
    rank_error: float = 0.0

    @classmethod
    def from_values(cls, values: Sequence[float] | np.ndarray) -> Distribution:
        """The exact distribution of `values` (nulls already dropped)."""
        array = np.asarray(values, dtype=np.float64)
        if array.size == 0:
            return cls((), (), 0, math.nan, math.nan, math.nan, math.nan, True)
        points, counts = np.unique(array, return_counts=True)
        return cls(tuple(points.tolist()), tuple(counts.astype(float).tolist()), int(array.size), float(array.mean()),
                   float(array.std()), float(points[0]), float(points[-1]), True)

    @classmethod
    def from_quantiles(
        cls, quantiles: Sequence[float], count: int, *, mean: float, std: float, min: float, max: float,
        rank_error: float,
    ) -> Distribution:
        """A sketch: quantiles at probabilities ``(i + 0.5) / B``, each standing for ``count / B`` rows."""
        points = np.sort(np.asarray(quantiles, dtype=np.float64))
        weight = count / len(points) if len(points) else 0.0
        return cls(tuple(points.tolist()), (weight,) * len(points), int(count), mean, std, min, max, False, rank_error)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able data (`from_dict` reads it back). Equal weights are stored once."""
        equal = not self.exact
        # An empty distribution's moments are NaN, which JSON does not have: they are stored as null.
        moments = {k: v if math.isfinite(v) else None
                   for k, v in (("mean", self.mean), ("std", self.std), ("min", self.min), ("max", self.max))}
        return {
            "count": self.count, **moments,
            "exact": self.exact, "rank_error": self.rank_error, "points": list(self.points),
            "weights": None if equal else list(self.weights),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Distribution:
        points = tuple(float(p) for p in data["points"])
        if data.get("weights") is None:
            weights = (data["count"] / len(points),) * len(points) if points else ()
        else:
            weights = tuple(float(w) for w in data["weights"])
        mean, std, low, high = (math.nan if data[k] is None else float(data[k]) for k in ("mean", "std", "min", "max"))
        return cls(points, weights, int(data["count"]), mean, std, low, high, bool(data["exact"]),
                   float(data.get("rank_error", 0.0)))

    def histogram(self, edges: np.ndarray) -> np.ndarray:
        """Rows per bin of `edges` (numpy's convention: the last bin is closed)."""
        counts, _ = np.histogram(np.asarray(self.points), bins=edges, weights=np.asarray(self.weights))
        return counts

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """The weighted empirical CDF at `x` (right-continuous, as scipy's)."""
        cumulative = np.concatenate([[0.0], np.cumsum(self.weights)]) / max(self.count, 1)
        return cumulative[np.searchsorted(np.asarray(self.points), x, side="right")]

    @property
    def bins(self) -> int:
        return len(self.points)


def _check_nonempty(*distributions: Distribution) -> None:
    for d in distributions:
        if d.count == 0:
            raise ValueError("a statistic needs at least one value on each side (got an empty distribution)")


def wasserstein(reference: Distribution, current: Distribution) -> float:
    """The first Wasserstein distance; equals ``scipy.stats.wasserstein_distance`` on exact distributions."""
    from scipy.stats import wasserstein_distance

    _check_nonempty(reference, current)
    return float(wasserstein_distance(reference.points, current.points, reference.weights, current.weights))


def wasserstein_scale(reference: Distribution) -> float:
    """What `normed_wasserstein` divides by: the reference's standard deviation, floored at 0.1 % of the
    magnitude of its mean (so float noise on a near-constant value, such as unit embedding norms, is not
    drift), and at 1e-12."""
    return max(reference.std, 1e-3 * abs(reference.mean), 1e-12)


def normed_wasserstein(reference: Distribution, current: Distribution) -> float:
    """`wasserstein` divided by `wasserstein_scale` (Evidently's ``wasserstein`` test; threshold 0.1)."""
    return wasserstein(reference, current) / wasserstein_scale(reference)


def ks(reference: Distribution, current: Distribution) -> tuple[float, float]:
    """Two-sided Kolmogorov-Smirnov: (statistic, asymptotic p-value).

    The statistic is the largest gap between the two weighted CDFs; on exact distributions it equals
    ``scipy.stats.ks_2samp(...).statistic``, and the p-value equals ``ks_2samp(..., method="asymp")``'s.
    """
    from scipy.stats import kstwo

    _check_nonempty(reference, current)
    x = np.union1d(reference.points, current.points)
    statistic = float(np.max(np.abs(reference.cdf(x) - current.cdf(x))))
    n, m = reference.count, current.count
    pvalue = float(np.clip(kstwo.sf(statistic, np.round(n * m / (n + m))), 0.0, 1.0))
    return statistic, pvalue


def sketch_bounds(reference: Distribution, current: Distribution) -> dict[str, float]:
    """How far `ks`'s statistic and `normed_wasserstein` can be from their exact values (0 when both are exact).

    A sketch's weighted CDF is within ``1/B + rank_error`` of the column's CDF everywhere (each quantile
    stands for ``1/B`` of the rows and sits within ``rank_error`` of its rank), so the KS statistic is within
    the sum of both sides' errors, and the Wasserstein distance, the integral of the CDFs' gap, within that
    sum times the range of the values.
    """
    error = sum(0.0 if d.exact else 1.0 / max(d.bins, 1) + d.rank_error for d in (reference, current))
    span = max(reference.max, current.max) - min(reference.min, current.min)
    return {"ks": error, "wasserstein": error * span / wasserstein_scale(reference)}


def _proportions(reference: Mapping[str, float], current: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(set(reference) | set(current))
    ref = np.array([float(reference.get(k, 0)) for k in keys])
    cur = np.array([float(current.get(k, 0)) for k in keys])
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise ValueError("a statistic needs at least one value on each side (got an empty distribution)")
    return ref / ref.sum(), cur / cur.sum()


def psi(reference: Mapping[str, float], current: Mapping[str, float], epsilon: float = PSI_EPSILON) -> float:
    """Population stability index over the union of categories, zero proportions replaced by `epsilon`."""
    ref, cur = _proportions(reference, current)
    ref, cur = np.where(ref == 0, epsilon, ref), np.where(cur == 0, epsilon, cur)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def js_distance(reference: Mapping[str, float], current: Mapping[str, float]) -> float:
    """Jensen-Shannon distance (natural log, so at most sqrt(ln 2)); equals ``scipy.spatial.distance.jensenshannon``."""
    from scipy.spatial.distance import jensenshannon

    ref, cur = _proportions(reference, current)
    return float(jensenshannon(ref, cur))


def chi_square(reference: Mapping[str, float], current: Mapping[str, float]) -> tuple[float, float]:
    """Chi-square test of homogeneity on the 2 x k table of counts: (statistic, p-value), as
    ``scipy.stats.chi2_contingency(table, correction=False)``. A single category gives (0, 1)."""
    from scipy.stats import chi2_contingency

    keys = sorted(set(reference) | set(current))
    table = np.array([[float(reference.get(k, 0)) for k in keys], [float(current.get(k, 0)) for k in keys]])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    result = chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def cosine_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """1 - cosine similarity of two vectors (0 for identical directions, at most 2)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denominator = float(np.linalg.norm(x) * np.linalg.norm(y))
    return 1.0 - float(x @ y) / denominator if denominator > 0 else 0.0
