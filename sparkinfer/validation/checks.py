"""Checks: a threshold on one metric of one column, with a severity.

Metric names, per column (``<field>`` is a field of the column's kind, see `partial.fields_of`):

- every kind: ``null_rate``, ``error_rate``, ``truncation_rate`` (and ``empty_rate`` for text kinds, ``invalid_rate``
  for extraction): shares of all rows, no reference needed;
- each categorical field: ``<field>.psi``, ``<field>.js`` (Jensen-Shannon distance), ``<field>.chi2``,
  ``<field>.chi2_pvalue``;
- each numeric field: ``<field>.wasserstein`` (normalised by the reference's standard deviation),
  ``<field>.ks``, ``<field>.ks_pvalue``;
- embeddings: ``centroid_cosine`` (cosine distance of the centroids), ``domain_auc`` (ROC AUC of a classifier
  told to separate a sample of the reference from a sample of the current rows; 0.5 = indistinguishable) and
  ``domain_auc_pvalue`` (its one-sided p-value under no drift).

The default drift checks fail only when a metric is beyond its threshold AND its test says the shift is
significant (``alpha=0.01``; see `Check`): distances alone are noisy on small tables.

`default_checks` gives the zero-configuration set; a user check on the same (column, metric) replaces the
default one. A YAML file (`load_checks`) holds the same:

.. code-block:: yaml

    defaults: true            # keep the default checks (false: only those below)
    checks:
      - {column: prediction, metric: label.psi, max: 0.1}
      - {column: "*", metric: error_rate, max: 0.0, severity: warn}
      - {column: embedding, metric: domain_auc, max: 0.6, alpha: 0.001}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sparkinfer.errors import SpecError
from sparkinfer.validation.partial import fields_of

Severity = Literal["error", "warn"]
_Rule = tuple[str, Literal["max", "min"], float, Severity]  # (metric, op, threshold, severity)

# (metric suffix or name, op, threshold, severity) per field type: the defaults, after Evidently's thresholds
# (0.1 for the normalised Wasserstein distance and JS, 0.55 for the domain classifier) and the usual PSI rule
# (above 0.2: a significant shift). A p-value alone gates nothing (on a million rows every tiny shift is
# "significant"); it only keeps a drift check from failing on noise (`Check.alpha`).
_CATEGORICAL_DEFAULTS: tuple[_Rule, ...] = (("psi", "max", 0.2, "error"), ("js", "max", 0.1, "warn"))
_NUMERIC_DEFAULTS: tuple[_Rule, ...] = (("wasserstein", "max", 0.1, "error"), ("ks", "max", 0.1, "warn"))
_RATE_DEFAULTS: tuple[_Rule, ...] = (("error_rate", "max", 0.01, "error"), ("null_rate", "max", 0.05, "warn"),
                  ("truncation_rate", "max", 0.1, "warn"), ("empty_rate", "max", 0.05, "warn"),
                  ("invalid_rate", "max", 0.05, "error"))
_EMBEDDING_DEFAULTS: tuple[_Rule, ...] = (("domain_auc", "max", 0.55, "error"), ("centroid_cosine", "max", 0.05, "warn"))
_TEXT_KINDS = ("generation", "extraction", "text")


@dataclass(frozen=True, kw_only=True)
class Check:
    """Fail when `metric` of `column` is above `max` (or below `min`).

    Args:
        column: A profiled column, or ``"*"`` for every profiled column that has the metric.
        metric: A metric name (see this module's docstring), e.g. ``"label.psi"`` or ``"error_rate"``.
        max: The largest passing value.
        min: The smallest passing value (give exactly one of `max` and `min`).
        severity: ``"error"`` blocks publishing; ``"warn"`` is reported only.
        alpha: For a drift metric: fail only when the breach is also statistically significant, i.e. the
            metric's two-sample test (`PVALUE_OF`) gives a p-value below `alpha`. The default drift checks
            use 0.01, so that on small tables sampling noise alone does not block a run, while on large ones
            (where any shift is significant) the threshold decides. None: the threshold alone decides.

    Raises:
        SpecError: For a missing or doubled threshold or an unknown severity.
    """

    column: str
    metric: str
    max: float | None = None
    min: float | None = None
    severity: Severity = "error"
    alpha: float | None = None

    def __post_init__(self) -> None:
        for name in ("column", "metric"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise SpecError(f"Check.{name} must be a non-empty string (got {getattr(self, name)!r})")
        if (self.max is None) == (self.min is None):
            raise SpecError(f"Check on {self.column}.{self.metric} needs exactly one of max= and min= "
                            f"(got max={self.max!r}, min={self.min!r})")
        threshold = self.threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
            raise SpecError(f"Check on {self.column}.{self.metric}: the threshold must be a number (got {threshold!r})")
        if self.alpha is not None and (isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float))
                                       or not 0 < self.alpha <= 1):
            raise SpecError(f"Check.alpha must be a probability in (0, 1] or None (got {self.alpha!r})")
        if self.alpha is not None and pvalue_of(self.metric) is None:
            raise SpecError(f"Check on {self.metric!r}: alpha= needs a drift metric with a test "
                            "(psi, js, chi2, wasserstein, ks or domain_auc)")
        if self.severity not in get_args(Severity):
            raise SpecError(f"Check.severity must be one of {get_args(Severity)} (got {self.severity!r})")

    @property
    def op(self) -> Literal["max", "min"]:
        return "max" if self.max is not None else "min"

    @property
    def threshold(self) -> float:
        return self.max if self.max is not None else self.min  # type: ignore[return-value]

    def passes(self, value: float) -> bool:
        return value <= self.threshold if self.op == "max" else value >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "metric": self.metric, "op": self.op, "threshold": float(self.threshold),
                "severity": self.severity, "alpha": self.alpha}


PVALUE_OF = {"psi": "chi2_pvalue", "js": "chi2_pvalue", "chi2": "chi2_pvalue", "wasserstein": "ks_pvalue",
             "ks": "ks_pvalue", "domain_auc": "domain_auc_pvalue"}
DEFAULT_ALPHA = 0.01


def pvalue_of(metric: str) -> str | None:
    """The p-value metric of a drift metric's two-sample test (``label.psi`` → ``label.chi2_pvalue``)."""
    field, _, name = metric.rpartition(".")
    test = PVALUE_OF.get(name)
    return None if test is None else (f"{field}.{test}" if field else test)


def metric_names(kind: str) -> tuple[str, ...]:
    """Every metric a column of `kind` has."""
    numeric, categorical = fields_of(kind)
    rates = ["null_rate", "error_rate", "truncation_rate"]
    rates += ["empty_rate"] if kind in _TEXT_KINDS else []
    rates += ["invalid_rate"] if kind == "extraction" else []
    drift = [f"{f}.{m}" for f in categorical for m in ("psi", "js", "chi2", "chi2_pvalue")]
    drift += [f"{f}.{m}" for f in numeric for m in ("wasserstein", "ks", "ks_pvalue")]
    drift += ["centroid_cosine", "domain_auc", "domain_auc_pvalue"] if kind == "embedding" else []
    return (*rates, *drift)


def default_checks(kinds: Mapping[str, str]) -> tuple[Check, ...]:
    """The zero-configuration checks for columns of these kinds (column → kind)."""
    checks = []
    for column, kind in kinds.items():
        numeric, categorical = fields_of(kind)
        names = set(metric_names(kind))
        rules: list[_Rule] = [(m, op, t, s) for m, op, t, s in _RATE_DEFAULTS if m in names]
        rules += [(f"{f}.{m}", op, t, s) for f in categorical for m, op, t, s in _CATEGORICAL_DEFAULTS]
        # Token counts of generation repeat its length in characters; one length check is enough.
        rules += [(f"{f}.{m}", op, t, s) for f in numeric if f != "completion_tokens" for m, op, t, s in _NUMERIC_DEFAULTS]
        rules += list(_EMBEDDING_DEFAULTS) if kind == "embedding" else []
        checks += [Check(column=column, metric=m, severity=s, alpha=DEFAULT_ALPHA if pvalue_of(m) else None,
                         **{op: t}) for m, op, t, s in rules]
    return tuple(checks)


def resolve(kinds: Mapping[str, str], checks: Sequence[Check] | str | None, *, defaults: bool = True) -> tuple[Check, ...]:
    """The checks to run: the defaults (unless turned off) with the user's on top, ``"*"`` expanded.

    `checks` is a sequence of `Check`, a YAML file's path (`load_checks`), or None.

    Raises:
        SpecError: For a check on a column that is not profiled, or a metric its kind does not have.
    """
    if isinstance(checks, str):
        user, defaults = load_checks(checks)
    else:
        user = tuple(checks or ())
    for check in user:
        if not isinstance(check, Check):
            raise SpecError(f"checks must be sparkinfer Check objects (got {type(check).__name__}: {check!r})")
    chosen: dict[tuple[str, str], Check] = {(c.column, c.metric): c for c in default_checks(kinds)} if defaults else {}
    for check in user:
        targets = list(kinds) if check.column == "*" else [check.column]
        if check.column != "*" and check.column not in kinds:
            raise SpecError(f"a check names column {check.column!r}, which is not profiled (got {sorted(kinds)}); "
                            "profile it with columns=, or fix the name")
        matched = False
        for column in targets:
            if check.metric in metric_names(kinds[column]):
                chosen[(column, check.metric)] = dataclasses.replace(check, column=column)
                matched = True
        if not matched:
            known = sorted({m for c in targets for m in metric_names(kinds[c])})
            raise SpecError(f"no profiled column {'has' if check.column == '*' else f'{check.column!r} has'} metric "
                            f"{check.metric!r} (metrics: {', '.join(known)})")
    return tuple(chosen.values())


def load_checks(path: str) -> tuple[tuple[Check, ...], bool]:
    """The checks of a YAML file, and whether it keeps the defaults (``defaults:``, true when absent).

    Raises:
        SpecError: For a file that is not a mapping with a ``checks`` list of check mappings.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise SpecError(f"cannot read the checks file {path!r}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"the checks file {path!r} is not valid YAML: {exc}") from exc
    data = {} if data is None else data
    if not isinstance(data, dict) or set(data) - {"checks", "defaults"}:
        raise SpecError(f"the checks file {path!r} must be a mapping with keys 'checks' and 'defaults' "
                        f"(got {type(data).__name__}{': ' + str(sorted(data)) if isinstance(data, dict) else ''})")
    entries, defaults = data.get("checks") or [], data.get("defaults", True)
    if not isinstance(entries, list) or not isinstance(defaults, bool):
        raise SpecError(f"in {path!r}, 'checks' must be a list and 'defaults' true or false "
                        f"(got checks: {type(entries).__name__}, defaults: {defaults!r})")
    checks = []
    for index, entry in enumerate(entries):
        allowed = {"column", "metric", "max", "min", "severity", "alpha"}
        if not isinstance(entry, dict) or set(entry) - allowed or not {"column", "metric"} <= set(entry):
            raise SpecError(f"in {path!r}, check {index + 1} must be a mapping of {sorted(allowed)} with at least "
                            f"'column' and 'metric' (got {entry!r})")
        checks.append(Check(**entry))
    return tuple(checks), defaults
