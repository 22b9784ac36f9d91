"""Validate a prediction table before it is published: `validate`, `profile`, `review_sample`.

A profile is built in ONE pass over the profiled columns: a ``mapInArrow`` reduces each partition to a
partial (``sparkinfer.validation.partial``), and the driver collects and merges the partials (every
partition in parallel; a partial is bounded by bins), so driver memory is bounded by partitions x bins, not by
rows. Nothing is collected
but the partials and a capped embedding sample. The table's row count is read first (from file metadata
for Delta and Parquet), to size that sample.

The reference is another profile: ``"previous"`` (the version before the current one of the same Delta
table, or of the table being published), a Delta path with a version (``"path@v3"``), a DataFrame, a table
path, or a stored profile (``*.json``). Each version a job publishes gets its profile stored beside the
table (`stored_profile_path`), so later comparisons read that instead of the old rows.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkinfer.errors import SpecError, TableError
from sparkinfer.spark import tables
from sparkinfer.validation import checks as _checks
from sparkinfer.validation.checks import Check
from sparkinfer.validation.partial import Accumulator, Settings, merge
from sparkinfer.validation.profile import KINDS, Profile
from sparkinfer.validation.report import ValidationReport, compare

log = logging.getLogger("sparkinfer")

REFERENCE_VERSION = re.compile(r"^(?P<path>.+)@v?(?P<version>\d+)$")
_SKIPPED = ("sparkinfer_fingerprint",)


def infer_kind(data_type: T.DataType) -> tuple[str, bool] | None:
    """(kind, unwrap) for a sparkinfer prediction type, None for a type a prediction does not have.

    ``unwrap`` is true for ``struct<result, error>`` (``on_error="column"``), whose ``result`` is profiled.
    Plain strings and numbers are not inferred (an id or an input text would be mistaken for one): name
    them in ``columns=`` with a kind.
    """
    if isinstance(data_type, T.StructType) and set(data_type.names) == {"result", "error"}:
        inner = _kind_of(data_type["result"].dataType, plain=True)
        return None if inner is None else (inner, True)
    kind = _kind_of(data_type, plain=False)
    return None if kind is None else (kind, False)


def _kind_of(data_type: T.DataType, *, plain: bool) -> str | None:
    if isinstance(data_type, T.ArrayType) and isinstance(data_type.elementType, (T.FloatType, T.DoubleType)):
        return "embedding"
    if isinstance(data_type, T.ArrayType) and isinstance(data_type.elementType, T.StructType) \
            and "entity" in data_type.elementType.names:
        return "token_classification"
    if isinstance(data_type, T.StructType):
        names = set(data_type.names)
        if {"label", "score"} <= names:
            return "classification"
        if {"text", "finish_reason", "completion_tokens"} <= names:
            return "generation"
        if {"value", "status", "raw"} <= names:
            return "extraction"
    if plain and isinstance(data_type, T.StringType):
        return "text"
    if plain and isinstance(data_type, (T.FloatType, T.DoubleType, T.IntegerType, T.LongType, T.ShortType)):
        return "scores"
    return None


_KIND_TYPES = {
    "scores": (T.FloatType, T.DoubleType, T.IntegerType, T.LongType, T.ShortType, T.ByteType),
    "labels": (T.StringType, T.BooleanType, T.IntegerType, T.LongType),
    "text": (T.StringType,),
}


def resolve_columns(df: DataFrame, columns: Sequence[str] | Mapping[str, str] | None) -> tuple[dict[str, str], frozenset[str]]:
    """(column → kind, columns to unwrap) for `columns`: names (kinds inferred), a name → kind mapping, or
    None for every column whose type is a sparkinfer prediction type.

    Raises:
        SpecError: For a missing column, an unknown kind, a kind the type cannot have, or nothing to profile.
    """
    schema = df.schema
    if columns is None:
        found = {f.name: infer_kind(f.dataType) for f in schema.fields if f.name not in _SKIPPED}
        chosen = {name: value for name, value in found.items() if value is not None}
        if not chosen:
            raise SpecError(
                f"no column of {schema.simpleString()} looks like a sparkinfer prediction (embedding, "
                "classification, token classification, generation details or extraction); name the columns and "
                "their kinds, e.g. columns={'summary': 'text', 'label': 'labels'}"
            )
        return {n: k for n, (k, _) in chosen.items()}, frozenset(n for n, (_, u) in chosen.items() if u)
    requested = dict(columns) if isinstance(columns, Mapping) else dict.fromkeys(columns)
    kinds: dict[str, str] = {}
    unwrap: set[str] = set()
    for name, kind in requested.items():
        if name not in schema.names:
            raise SpecError(f"columns names {name!r}, which the table does not have (got {schema.names})")
        data_type = schema[name].dataType
        inferred = infer_kind(data_type) or (None if isinstance(data_type, T.StructType)
                                             else (_kind_of(data_type, plain=True), False))
        if kind is None:
            if inferred is None or inferred[0] is None:
                raise SpecError(f"cannot tell what column {name!r} ({data_type.simpleString()}) holds; give its kind, "
                                f"one of {KINDS}, as columns={{{name!r}: kind}}")
            kinds[name] = inferred[0]
            unwrap |= {name} if inferred[1] else set()
            continue
        if kind not in KINDS:
            raise SpecError(f"column {name!r}: kind must be one of {KINDS} (got {kind!r})")
        wrapped = isinstance(data_type, T.StructType) and set(data_type.names) == {"result", "error"}
        inner = data_type["result"].dataType if wrapped else data_type
        fits = isinstance(inner, _KIND_TYPES[kind]) if kind in _KIND_TYPES else _kind_of(inner, plain=False) == kind
        if not fits:
            raise SpecError(f"column {name!r} is {data_type.simpleString()}, which cannot be profiled as {kind!r}")
        kinds[name] = kind
        unwrap |= {name} if wrapped else set()
    return kinds, frozenset(unwrap)


def profile(
    df: DataFrame,
    columns: Sequence[str] | Mapping[str, str] | None = None,
    *,
    source: str = "",
    known: Mapping[str, Mapping[str, int]] | None = None,
    bins: int = 1000,
    exact_max: int = 10_000,
    sample_rows: int = 2000,
    seed: int = 0,
) -> Profile:
    """The profile of `df`'s prediction columns, in one pass over them (see the module docstring).

    Args:
        df: The predictions: read them from their table (or persist them), since a lazy frame that still
            predicts would predict again here.
        columns: Column names, a name → kind mapping, or None for every prediction-typed column.
        source: What the profile describes (a path, ``path@v3``), kept in it.
        known: Counts per column the table does not hold, e.g. the run's ``{"errors": n, "truncated": m}``.
        bins: Quantiles kept per numeric field beyond `exact_max` values.
        exact_max: Numeric fields with at most this many values are kept exactly (statistics then equal
            scipy's on the values).
        sample_rows: Embedding rows sampled for the domain classifier.
        seed: Seed of that sample.
    """
    from datetime import datetime, timezone

    kinds, unwrap = resolve_columns(df, columns)
    rows = df.count()
    fraction = 0.0 if rows == 0 else min(1.0, 1.1 * sample_rows / rows)  # overshoot a little; merge trims
    settings = Settings(kinds=kinds, unwrap=unwrap, bins=bins, exact_max=exact_max, sample_fraction=fraction,
                        seed=seed)

    def partials(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        context = TaskContext.get()
        accumulator = Accumulator(settings, context.partitionId() if context is not None else 0)
        for batch in batches:
            accumulator.update(batch)
        yield pa.RecordBatch.from_arrays([pa.array([accumulator.finish()], pa.binary())], names=["partial"])

    mapped = df.select(*kinds).mapInArrow(partials, "partial binary")
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return merge((bytes(row[0]) for row in mapped.collect()), settings, rows=rows, source=source,
                 created=created, sample_rows=sample_rows, known=known)


def stored_profile_path(table: str, version: int) -> str:
    """Where the profile of a Delta table's version is stored: inside the table directory, under
    ``_sparkinfer/`` (Delta and Spark ignore ``_``-prefixed paths, and VACUUM keeps them)."""
    return f"{table.rstrip('/')}/_sparkinfer/profiles/v{version}.json"


def store_profile(table: str, version: int, profiled: Profile) -> str:
    """Store `profiled` as the profile of `table`'s `version`; return its path."""
    path = stored_profile_path(table, version)
    profiled.save(path)
    return path


def _stored(table: str, version: int) -> Profile | None:
    try:
        return Profile.load(stored_profile_path(table, version))
    except (FileNotFoundError, OSError):
        return None


def validate(
    predictions: DataFrame | str,
    reference: DataFrame | Profile | str | None = None,
    checks: Sequence[Check] | str | None = None,
    *,
    columns: Sequence[str] | Mapping[str, str] | None = None,
    defaults: bool = True,
    known: Mapping[str, Mapping[str, int]] | None = None,
    sample_rows: int = 2000,
    seed: int = 0,
    spark: SparkSession | None = None,
    delta_engine: tables.DeltaEngine = "auto",
) -> ValidationReport:
    """Profile `predictions`, compare them with `reference`, and run the checks.

    Args:
        predictions: A DataFrame, or the path of a table (``"path@v3"`` for a Delta version).
        reference: None (rate checks only), ``"previous"`` (the Delta version before `predictions`'s, which
            must then be a Delta path), a table path or ``"path@v3"``, a stored profile (``*.json``), a
            `Profile`, or a DataFrame. A stored profile of a Delta version is used instead of its rows.
        checks: `Check` objects or a YAML file (see ``sparkinfer.validation.checks``); they replace the
            defaults on the same column and metric.
        columns: The prediction columns (names, or name → kind); None takes every prediction-typed column.
        defaults: Run the default checks (a YAML file's ``defaults:`` overrides this).
        known: Counts the table does not hold, per column (the job passes its run's errors and truncations).
        sample_rows: Embedding rows sampled per side for the domain classifier.
        seed: Seed of the samples and of the classifier's folds.
        spark: The session for path arguments; the active one by default.
        delta_engine: For Delta paths: ``"auto"``, ``"spark"`` or ``"delta-rs"``.

    Returns:
        The report: `ValidationReport.passed`, `failures`, `save_html`, `save_json`, `raise_if_failed`.

    Raises:
        SpecError: For bad columns, checks or reference.
        TableError: When a table or version does not exist.
    """
    session = spark or (predictions.sparkSession if isinstance(predictions, DataFrame) else SparkSession.active())
    current_df, current_source, table, version = _open(session, predictions, delta_engine)
    kinds, _ = resolve_columns(current_df, columns)
    options = {"sample_rows": sample_rows, "seed": seed}
    current = profile(current_df, kinds, source=current_source, known=known, **options)
    reference_profile = _reference(session, reference, table, version, kinds, delta_engine, options)
    resolved = _checks.resolve(kinds, checks, defaults=defaults)
    return compare(current, reference_profile, resolved, domain_classifier=domain_classifier(session, seed))


def _open(session: SparkSession, target: DataFrame | str, engine: tables.DeltaEngine
          ) -> tuple[DataFrame, str, str | None, int | None]:
    """(rows, source label, Delta table path, version) of a DataFrame or table path."""
    if isinstance(target, DataFrame):
        return target, "DataFrame", None, None
    if not isinstance(target, str):
        raise SpecError(f"expected a DataFrame or a table path (got {type(target).__name__})")
    match = REFERENCE_VERSION.match(target)
    path, version = (match["path"], int(match["version"])) if match else (target, None)
    is_delta = tables.table_exists(session, path, "delta", delta_engine=engine)
    if version is None and is_delta:
        version = tables.delta_version(session, path, delta_engine=engine)
    if version is not None and not is_delta:
        raise TableError(f"{target!r} names a version, but {path!r} is not a Delta table")
    try:
        frame = tables.read_table(session, path, "delta" if is_delta else "auto", delta_engine=engine, version=version)
    except AnalysisException as exc:
        if is_delta or not _path_not_found(exc):
            raise
        raise TableError(f"no table at {path!r}: not a Delta table, a Parquet directory or a catalog table; check the "
                         "path (a reference that is a stored profile must end in .json)") from None
    return frame, path if version is None else f"{path}@v{version}", path if is_delta else None, version


def _path_not_found(exc: Exception) -> bool:
    """Whether Spark refused a read because the path does not exist (Spark 4's condition, or 3.5's message)."""
    condition = getattr(exc, "getCondition", None) or getattr(exc, "getErrorClass", None)
    return "PATH_NOT_FOUND" in f"{condition() if condition else ''} {exc}" or "Path does not exist" in str(exc)


def _reference(
    session: SparkSession, reference: DataFrame | Profile | str | None, table: str | None, version: int | None,
    kinds: Mapping[str, str], engine: tables.DeltaEngine, options: Mapping[str, Any],
) -> Profile | None:
    if reference is None or isinstance(reference, Profile):
        return reference
    if isinstance(reference, DataFrame):
        return profile(reference, _present(reference, kinds), source="DataFrame", **options)
    if not isinstance(reference, str):
        raise SpecError(f"reference must be None, 'previous', a path, a Profile or a DataFrame "
                        f"(got {type(reference).__name__})")
    if reference == "previous":
        if table is None or version is None:
            raise SpecError("reference='previous' needs the predictions as a Delta table path (got a DataFrame or "
                            "a Parquet table); pass the path, or reference='path@vN'")
        if version == 0:
            log.warning("sparkinfer: %s has no version before 0; validating without a reference", table)
            return None
        reference = f"{table}@v{version - 1}"
    if reference.endswith(".json"):
        return Profile.load(reference)
    match = REFERENCE_VERSION.match(reference)
    if match and (stored := _stored(match["path"], int(match["version"]))) is not None:
        return stored
    frame, source, _, _ = _open(session, reference, engine)
    return profile(frame, _present(frame, kinds), source=source, **options)


def _present(frame: DataFrame, kinds: Mapping[str, str]) -> dict[str, str]:
    """The profiled columns the reference has (a column new in this run has no reference)."""
    present = {name: kind for name, kind in kinds.items() if name in frame.columns}
    if not present:
        raise SpecError(f"the reference has none of the profiled columns {sorted(kinds)} (got {frame.columns})")
    return present


def domain_classifier(spark: SparkSession, seed: int = 0) -> Any:
    """A function (reference sample, current sample) → (ROC AUC, note): a ``pyspark.ml`` logistic regression
    trained to tell a random half of each sample apart, scored on the other half. 0.5 means the samples are
    indistinguishable; with 2000 rows a side, its standard error there is about 0.013 (0.55 is ~4 of them)."""

    def auc(reference: np.ndarray, current: np.ndarray) -> tuple[float | None, str | None]:
        import pandas as pd
        from pyspark.ml.classification import LogisticRegression
        from pyspark.ml.evaluation import BinaryClassificationEvaluator
        from pyspark.ml.functions import array_to_vector

        rng = np.random.default_rng(seed)
        matrix = np.concatenate([reference, current]).astype(np.float64)
        labels = np.concatenate([np.zeros(len(reference)), np.ones(len(current))])
        folds = np.concatenate([rng.permutation(len(reference)) % 2, rng.permutation(len(current)) % 2])
        local = pd.DataFrame({"features": list(matrix), "label": labels, "fold": folds.astype(np.int32)})
        with _arrow_conversion(spark):
            frame = spark.createDataFrame(local, "features array<double>, label double, fold int")
        # One partition, cached: each optimizer iteration is a Spark job, over a few thousand rows.
        frame = frame.select(array_to_vector("features").alias("features"), "label", "fold").coalesce(1).cache()
        try:
            model = LogisticRegression(maxIter=20, regParam=0.01).fit(frame.where(F.col("fold") == 1))
            held_out = model.transform(frame.where(F.col("fold") == 0)).select("label", "rawPrediction")
            value = BinaryClassificationEvaluator(metricName="areaUnderROC").evaluate(held_out)
        finally:
            frame.unpersist()
        return float(value), (f"held-out ROC AUC of a pyspark.ml logistic regression trained on half of "
                              f"{len(reference)} + {len(current)} sampled rows")

    return auc


@contextlib.contextmanager
def _arrow_conversion(spark: SparkSession) -> Iterator[None]:
    """Arrow for pandas → Spark conversion in a classic session for the block (Connect always uses it)."""
    key = "spark.sql.execution.arrow.pyspark.enabled"
    try:
        before = spark.conf.get(key, None)
        spark.conf.set(key, "true")
    except Exception:  # a session that refuses the setting converts without Arrow, only slower
        yield
        return
    try:
        yield
    finally:
        spark.conf.unset(key) if before is None else spark.conf.set(key, before)


def _strata(name: str, kind: str, column: Column, edges: Mapping[str, np.ndarray]) -> Column:
    """A string naming each row's stratum for one column (label, status, finish reason, or value bin)."""
    def binned(value: Column, field: str) -> Column:
        bounds = edges.get(field)
        if bounds is None or len(bounds) == 0:
            return F.lit("all")
        index = sum((F.when(value > float(b), 1).otherwise(0) for b in bounds), F.lit(0))
        return F.concat(F.lit(f"{field} bin "), (index + 1).cast("string"), F.lit(f"/{len(bounds) + 1}"))

    if kind == "classification":
        return F.concat(F.lit("label="), column["label"], F.lit(", "), binned(column["score"], "score"))
    if kind == "labels":
        return F.concat(F.lit("value="), column.cast("string"))
    if kind == "scores":
        return binned(column, "value")
    if kind == "generation":
        return F.concat(F.lit("finish_reason="), column["finish_reason"])
    if kind == "extraction":
        return F.concat(F.lit("status="), column["status"])
    if kind == "token_classification":
        return binned(F.size(column), "entities")
    if kind == "text":
        return binned(F.length(column), "length")
    return F.lit("all")  # embeddings: a uniform sample


def review_sample(
    df: DataFrame,
    profiled: Profile | None = None,
    *,
    columns: Sequence[str] | Mapping[str, str] | None = None,
    per_stratum: int = 20,
    seed: int = 0,
) -> DataFrame:
    """Up to `per_stratum` random rows per stratum of each profiled column, for a person to read.

    `profiled` is `df`'s profile (``report.current`` of `validate`); None profiles `df` (its `columns`) first.

    Strata are the label (and score quintile) of classifications, the status of extractions, the finish
    reason of generations, and quintiles of scores, lengths and entity counts. A stratum with at least
    `per_stratum` rows gives exactly `per_stratum` of them (fewer by chance with probability below 1e-7).
    One aggregation counts the rows of every stratum (reading only the profiled columns); a second pass
    keeps a Bernoulli share of each stratum sized from its own count (a few times `per_stratum`), and a
    window keeps `per_stratum` of those. The result has `df`'s columns plus ``review_column`` and
    ``review_stratum``.
    """
    from pyspark.sql import Window

    profiled = profiled if profiled is not None else profile(df, columns, seed=seed)
    strata: list[tuple[str, Column, Column]] = []
    for name, column_profile in profiled.columns.items():
        column = F.col(name)
        if name in df.columns and isinstance(df.schema[name].dataType, T.StructType) \
                and set(df.schema[name].dataType.names) == {"result", "error"}:
            column = column["result"]
        edges = {field: _quintile_edges(d.points, d.weights) for field, d in column_profile.numeric.items() if d.count}
        strata.append((name, column, F.coalesce(_strata(name, column_profile.kind, column, edges), F.lit("null"))))
    if not strata:
        raise SpecError("the profile has no columns to sample")
    # Strata differ in size (a rare label, a label whose scores sit in one quintile): one share for all of a
    # column's strata, sized as if they were equal, gave a rare stratum a handful of rows out of hundreds.
    tagged = F.explode(F.array(*(F.when(column.isNotNull(), F.struct(F.lit(name).alias("review_column"),
                                                                      stratum.alias("review_stratum")))
                                 for name, column, stratum in strata))).alias("tag")
    counts = (df.select(tagged).where(F.col("tag").isNotNull()).select("tag.*")
              .groupBy("review_column", "review_stratum").count().collect())
    # A stratum of n rows keeps Binomial(n, target / n) of them: below per_stratum with probability < 1e-7
    # for every per_stratum (scipy's binom.cdf; 4.1e-8 at 1, 5.5e-9 at 20).
    target = per_stratum + 6.0 * float(np.sqrt(per_stratum)) + 10.0
    shares = df.sparkSession.createDataFrame(
        [(row["review_column"], row["review_stratum"], min(1.0, target / row["count"])) for row in counts],
        "review_column string, review_stratum string, _review_share double",
    )
    pieces = [df.where(column.isNotNull()).withColumn("review_column", F.lit(name))
              .withColumn("review_stratum", stratum) for name, column, stratum in strata]
    union = pieces[0]
    for piece in pieces[1:]:
        union = union.unionByName(piece)
    kept = (union.join(F.broadcast(shares), ["review_column", "review_stratum"])
            .where(F.rand(seed) < F.col("_review_share")).drop("_review_share"))
    window = Window.partitionBy("review_column", "review_stratum").orderBy(F.rand(seed + 1))
    return (kept.withColumn("_review_rank", F.row_number().over(window)).where(F.col("_review_rank") <= per_stratum)
            .drop("_review_rank").select(*df.columns, "review_column", "review_stratum"))


def _quintile_edges(points: Sequence[float], weights: Sequence[float]) -> np.ndarray:
    cumulative = np.cumsum(weights) / np.sum(weights)
    edges = np.asarray(points)[np.minimum(np.searchsorted(cumulative, [0.2, 0.4, 0.6, 0.8]), len(points) - 1)]
    return np.unique(edges)  # a value above k edges is in bin k + 1
