"""Compare a profile with a reference, run the checks, and report: `compare` → `ValidationReport`.

Spark-free: the domain classifier, the one statistic that needs an estimator, is passed in as a function of
the two embedding samples (``sparkinfer.spark.validate`` trains it with ``pyspark.ml``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from sparkinfer.errors import SparkInferError
from sparkinfer.validation import stats
from sparkinfer.validation import checks as _checks
from sparkinfer.validation.checks import Check
from sparkinfer.validation.profile import ColumnProfile, Profile, _write_text

# (reference sample, current sample) → (ROC AUC, note)
DomainClassifier = Callable[[np.ndarray, np.ndarray], tuple[float | None, str | None]]
MIN_SAMPLE = 50  # rows per side below which the domain classifier is not trained


class ValidationError(SparkInferError):
    """Raised by `ValidationReport.raise_if_failed` when an error-level check failed."""


@dataclass(frozen=True)
class Metric:
    """One statistic of one column: its value, its sketch error bound (None when exact), and a note."""

    column: str
    metric: str
    value: float | None
    bound: float | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "metric": self.metric, "value": _finite(self.value), "bound": self.bound,
                "note": self.note}


@dataclass(frozen=True)
class CheckResult:
    """A check and its outcome: ``"pass"``, ``"fail"``, or ``"skipped"`` (the metric has no value)."""

    check: Check
    value: float | None
    status: str
    message: str

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def to_dict(self) -> dict[str, Any]:
        return {**self.check.to_dict(), "value": _finite(self.value), "status": self.status, "message": self.message}


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of `sparkinfer.validate`: profiles, drift metrics, and check results.

    Attributes:
        current: The validated table's profile.
        reference: The reference's profile, or None (only rate checks then run).
        metrics: Every statistic computed.
        results: One result per check.
        created: When the report was made (ISO 8601, UTC).
    """

    current: Profile
    reference: Profile | None
    metrics: tuple[Metric, ...]
    results: tuple[CheckResult, ...]
    created: str

    @property
    def passed(self) -> bool:
        """True when no error-level check failed (warnings do not block)."""
        return not self.failures

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        """Failed error-level checks."""
        return tuple(r for r in self.results if r.failed and r.check.severity == "error")

    @property
    def warnings(self) -> tuple[CheckResult, ...]:
        """Failed warn-level checks."""
        return tuple(r for r in self.results if r.failed and r.check.severity == "warn")

    def metric(self, column: str, name: str) -> float | None:
        """The value of one metric (None when it could not be computed)."""
        for m in self.metrics:
            if m.column == column and m.metric == name:
                return m.value
        raise KeyError(f"no metric {name!r} for column {column!r}")

    def summary(self) -> str:
        """A few lines for a terminal: the verdict, then each failed check."""
        head = (f"validation {'passed' if self.passed else 'FAILED'}: {len(self.results)} check(s), "
                f"{len(self.failures)} error(s), {len(self.warnings)} warning(s)")
        return "\n".join([head, *(f"  {r.check.severity}: {r.message}" for r in (*self.failures, *self.warnings))])

    def __str__(self) -> str:
        return self.summary()

    def raise_if_failed(self) -> None:
        """Raise `ValidationError` listing the failed error-level checks, if any."""
        if not self.passed:
            raise ValidationError(self.summary())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able data: what `save_json` writes and what the HTML report renders."""
        reference = self.reference
        return {
            "passed": self.passed,
            "created": self.created,
            "current": {"source": self.current.source, "rows": self.current.rows},
            "reference": None if reference is None else {"source": reference.source, "rows": reference.rows},
            "columns": {
                name: {"kind": column.kind, "current": column.to_dict(),
                       "reference": _reference_column(reference, name, column)}
                for name, column in self.current.columns.items()
            },
            "metrics": [m.to_dict() for m in self.metrics],
            "checks": [r.to_dict() for r in self.results],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save_json(self, path: str) -> None:
        """Write `to_json` to a local path or any URI pyarrow can open."""
        _write_text(path, self.to_json())

    def to_html(self) -> str:
        """One self-contained HTML page (inline SVG plots, no JavaScript, no network)."""
        from sparkinfer.validation.html import render_html

        return render_html(self.to_dict())

    def save_html(self, path: str) -> None:
        """Write `to_html` to a local path or any URI pyarrow can open."""
        _write_text(path, self.to_html())


def _reference_column(reference: Profile | None, name: str, column: ColumnProfile) -> dict[str, Any] | None:
    other = None if reference is None else reference.columns.get(name)
    return None if other is None or other.kind != column.kind else other.to_dict()


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def compare(
    current: Profile, reference: Profile | None, checks: Sequence[Check], *,
    domain_classifier: DomainClassifier | None = None,
) -> ValidationReport:
    """Every metric of every column of `current` against `reference`, then `checks` on them."""
    metrics: list[Metric] = []
    for name, column in current.columns.items():
        metrics += _rates(name, column)
        other = None if reference is None else reference.columns.get(name)
        if other is None:
            continue
        if other.kind != column.kind:
            metrics.append(Metric(name, "kind", None, note=f"the reference's column is {other.kind}, not {column.kind}"))
            continue
        metrics += _drift(name, column, other, domain_classifier)
    results = tuple(_evaluate(check, metrics, reference is not None) for check in checks)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return ValidationReport(current, reference, tuple(metrics), results, created)


def _rates(name: str, column: ColumnProfile) -> list[Metric]:
    out = [Metric(name, rate, column.rate(rate), note=None if column.rate(rate) is not None else "not known")
           for rate in ("null_rate", "error_rate", "truncation_rate")]
    if column.empty is not None:
        out.append(Metric(name, "empty_rate", column.rate("empty_rate")))
    if column.kind == "extraction":
        invalid = column.categorical["status"].counts.get("invalid", 0)
        out.append(Metric(name, "invalid_rate", invalid / column.rows if column.rows else None))
    return out


def _drift(name: str, column: ColumnProfile, reference: ColumnProfile,
           domain_classifier: DomainClassifier | None) -> list[Metric]:
    out: list[Metric] = []
    for field, current in column.categorical.items():
        cur, ref = current.with_other(), reference.categorical[field].with_other()
        if not sum(cur.values()) or not sum(ref.values()):
            out += [Metric(name, f"{field}.{m}", None, note="no values on one side") for m in ("psi", "js", "chi2", "chi2_pvalue")]
            continue
        chi2, pvalue = stats.chi_square(ref, cur)
        out += [Metric(name, f"{field}.psi", stats.psi(ref, cur)), Metric(name, f"{field}.js", stats.js_distance(ref, cur)),
                Metric(name, f"{field}.chi2", chi2), Metric(name, f"{field}.chi2_pvalue", pvalue)]
    for field, current_d in column.numeric.items():
        reference_d = reference.numeric[field]
        if not current_d.count or not reference_d.count:
            out += [Metric(name, f"{field}.{m}", None, note="no values on one side") for m in ("wasserstein", "ks", "ks_pvalue")]
            continue
        bounds = stats.sketch_bounds(reference_d, current_d)
        exact = current_d.exact and reference_d.exact
        out.append(Metric(name, f"{field}.wasserstein", stats.normed_wasserstein(reference_d, current_d),
                          None if exact else bounds["wasserstein"]))
        if max(d.max - d.min for d in (reference_d, current_d)) < stats.wasserstein_scale(reference_d):
            # Near-constant values (unit embedding norms): KS, being scale-free, would rank float noise.
            note = "near-constant values: the Wasserstein distance decides"
            out += [Metric(name, f"{field}.ks", None, note=note), Metric(name, f"{field}.ks_pvalue", None, note=note)]
            continue
        statistic, pvalue = stats.ks(reference_d, current_d)
        out += [Metric(name, f"{field}.ks", statistic, None if exact else bounds["ks"]),
                Metric(name, f"{field}.ks_pvalue", pvalue, note=None if exact else "from the sketch")]
    if column.embedding is not None and reference.embedding is not None:
        if column.embedding.dim != reference.embedding.dim:
            note = f"dimensions differ: {reference.embedding.dim} in the reference, {column.embedding.dim} now"
            return [*out, Metric(name, "centroid_cosine", math.inf, note=note), Metric(name, "domain_auc", 1.0, note=note)]
        out.append(Metric(name, "centroid_cosine",
                          stats.cosine_distance(reference.embedding.centroid, column.embedding.centroid)))
        auc = _domain_auc(name, reference.embedding.sample, column.embedding.sample, domain_classifier)
        out += [auc, _auc_pvalue(name, auc, len(reference.embedding.sample), len(column.embedding.sample))]
    return out


def _domain_auc(name: str, reference: np.ndarray, current: np.ndarray,
                domain_classifier: DomainClassifier | None) -> Metric:
    if domain_classifier is None:
        return Metric(name, "domain_auc", None, note="no domain classifier given")
    if min(len(reference), len(current)) < MIN_SAMPLE:
        return Metric(name, "domain_auc", None,
                      note=f"samples too small ({len(reference)} and {len(current)} rows; at least {MIN_SAMPLE} each)")
    value, note = domain_classifier(reference, current)
    return Metric(name, "domain_auc", value, note=note or f"held-out ROC AUC on {len(reference)}+{len(current)} sampled rows")


def _auc_pvalue(name: str, auc: Metric, reference: int, current: int) -> Metric:
    """One-sided p-value of a held-out AUC this high under no drift: the Mann-Whitney normal approximation
    on the held-out halves (the classifier scores half of each sample)."""
    from scipy.stats import norm

    if auc.value is None:
        return Metric(name, "domain_auc_pvalue", None, note=auc.note)
    n, m = (reference + 1) // 2, (current + 1) // 2
    standard_error = math.sqrt((n + m + 1) / (12 * n * m))
    return Metric(name, "domain_auc_pvalue", float(norm.sf((auc.value - 0.5) / standard_error)))


def _evaluate(check: Check, metrics: Sequence[Metric], has_reference: bool) -> CheckResult:
    found = next((m for m in metrics if m.column == check.column and m.metric == check.metric), None)
    target = f"{check.column} {check.metric}"
    if found is None or found.value is None:
        # A column whose reference is of another kind has no drift metrics, only a "kind" metric saying why.
        note = found.note if found is not None else next(
            (m.note for m in metrics if m.column == check.column and m.metric == "kind"), None)
        why = note or ("no reference" if not has_reference else "not computed")
        return CheckResult(check, None, "skipped", f"{target}: skipped ({why})")
    bound = "≤" if check.op == "max" else "≥"
    if not check.passes(found.value) and check.alpha is not None:
        test = _checks.pvalue_of(check.metric)
        pvalue = next((m.value for m in metrics if m.column == check.column and m.metric == test), None)
        if pvalue is not None and pvalue >= check.alpha:
            return CheckResult(check, found.value, "pass", f"{target} = {found.value:.4g} is beyond {check.threshold:g} "
                               f"but not significant ({test} = {pvalue:.3g} ≥ {check.alpha:g}): sampling noise")
    if check.passes(found.value):
        return CheckResult(check, found.value, "pass", f"{target} = {found.value:.4g} (must be {bound} {check.threshold:g})")
    return CheckResult(check, found.value, "fail", f"{target} = {found.value:.4g}, must be {bound} {check.threshold:g}")
