"""Profiles in one pass: a partial per partition from Arrow batches, merged on the driver.

`Accumulator` runs where the rows are (one per Spark partition, inside ``mapInArrow``): it reads Arrow
batches of the profiled columns and keeps, per column, counts, per-value counts, the values of each numeric
field, an embedding sum and a Bernoulli sample. `Accumulator.finish` reduces the values to at most ``bins``
quantiles (or keeps them all while there are at most ``exact_max``) and returns one small partial; `merge`
turns the partials of every partition into a `Profile`. Driver memory is bounded by partitions x bins,
never by rows.

Every field a kind profiles is listed in `fields_of`: the checks, the report and the tests read it too.
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sparkinfer.validation.profile import Categorical, ColumnProfile, Embeddings, Profile
from sparkinfer.validation.stats import Distribution

# kind → (numeric fields, categorical fields); embedding kinds also get a centroid and a sample.
_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "classification": (("score",), ("label",)),
    "scores": (("value",), ()),
    "labels": ((), ("value",)),
    "embedding": (("norm",), ()),
    "token_classification": (("entities",), ("entity",)),
    "generation": (("length", "completion_tokens"), ("finish_reason",)),
    "extraction": (("length",), ("status",)),
    "text": (("length",), ()),
}
MAX_CATEGORIES = 1000  # distinct values kept per categorical field; the rest is counted as other


def fields_of(kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(numeric fields, categorical fields) that a column of `kind` is profiled by."""
    return _FIELDS[kind]


@dataclass(frozen=True)
class Settings:
    """How a profile summarises. Picklable: it travels to the executors.

    Attributes:
        kinds: Column name → kind, for the columns to profile.
        unwrap: Columns holding ``struct<result, error>`` (``on_error="column"``): profile ``result``, count
            non-null ``error`` as errors.
        bins: Quantiles kept per numeric field on the sketch path.
        exact_max: A numeric field with at most this many values in all is kept exactly.
        sample_fraction: Share of embedding rows kept for the domain classifier (from the row count).
        seed: Seed of the sample.
    """

    kinds: Mapping[str, str]
    unwrap: frozenset[str] = frozenset()
    bins: int = 1000
    exact_max: int = 10_000
    sample_fraction: float = 0.0
    seed: int = 0


@dataclass
class _Column:
    rows: int = 0
    nulls: int = 0
    errors: int | None = None
    truncated: int | None = None
    empty: int | None = None
    values: dict[str, list[np.ndarray]] = field(default_factory=dict)
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    vector_sum: np.ndarray | None = None
    vectors: int = 0
    sample: list[np.ndarray] = field(default_factory=list)


class Accumulator:
    """The partial profile of one partition. `update` with each Arrow batch, then `finish`."""

    def __init__(self, settings: Settings, partition: int = 0) -> None:
        self.settings = settings
        self.columns = {name: _Column() for name in settings.kinds}
        self._random = np.random.default_rng([settings.seed, partition])

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        for name, kind in self.settings.kinds.items():
            array = batch.column(name)
            if isinstance(array, pa.ChunkedArray):
                array = array.combine_chunks()
            self._column(self.columns[name], kind, array, name in self.settings.unwrap)

    def _column(self, state: _Column, kind: str, array: pa.Array, unwrap: bool) -> None:
        state.rows += len(array)
        if unwrap:
            parts = dict(zip((f.name for f in array.type), array.flatten()))  # flatten keeps the struct's nulls
            state.errors = (state.errors or 0) + len(array) - parts["error"].null_count
            array = parts["result"]
        state.nulls += array.null_count
        valid = array.drop_null() if array.null_count else array
        numeric, categorical, flags = _extract(kind, valid)
        for name, values in numeric.items():
            state.values.setdefault(name, []).append(values)
        for name, keys in categorical.items():
            counter = state.counts.setdefault(name, Counter())
            if len(keys):
                counted = pc.value_counts(keys)  # in Arrow: one Python object per distinct value, not per row
                counter.update(dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist())))
        for name, count in flags.items():
            setattr(state, name, (getattr(state, name) or 0) + count)
        if kind == "embedding" and len(valid):
            self._vectors(state, valid)

    def _vectors(self, state: _Column, valid: pa.Array) -> None:
        lengths = pc.list_value_length(valid).to_numpy(zero_copy_only=False)
        dim = int(lengths[0])
        if not np.all(lengths == dim) or (state.vector_sum is not None and len(state.vector_sum) != dim):
            raise ValueError(
                f"an embedding column must hold vectors of one length to be profiled (got lengths "
                f"{sorted({int(x) for x in lengths} | ({len(state.vector_sum)} if state.vector_sum is not None else set()))}); "
                "profile it as another kind or fix the rows"
            )
        # No float64 copy of the batch: float64 accumulators over the stored (float32 or float64) values.
        matrix = pc.list_flatten(valid).to_numpy(zero_copy_only=False).reshape(len(valid), dim)
        total = matrix.sum(axis=0, dtype=np.float64)
        state.vector_sum = total + (state.vector_sum if state.vector_sum is not None else 0.0)
        state.vectors += len(valid)
        state.values.setdefault("norm", []).append(np.sqrt(np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64)))
        if self.settings.sample_fraction > 0:
            keep = self._random.random(len(valid)) < self.settings.sample_fraction
            if keep.any():
                state.sample.append(matrix[keep].astype(np.float32))

    def finish(self) -> bytes:
        """The partial: per column, counts, exact values or quantiles per field, counts per value, vectors."""
        out: dict[str, Any] = {}
        for name, state in self.columns.items():
            numeric = {}
            for key, chunks in state.values.items():
                values = np.concatenate(chunks) if chunks else np.zeros(0)
                numeric[key] = _summarise(values, self.settings.bins, self.settings.exact_max)
            out[name] = {
                "rows": state.rows, "nulls": state.nulls, "errors": state.errors, "truncated": state.truncated,
                "empty": state.empty, "numeric": numeric,
                "counts": {k: dict(c.most_common(MAX_CATEGORIES)) for k, c in state.counts.items()},
                "other": {k: sum(c.values()) - sum(n for _, n in c.most_common(MAX_CATEGORIES))
                          for k, c in state.counts.items()},
                "vector_sum": state.vector_sum, "vectors": state.vectors,
                "sample": np.concatenate(state.sample) if state.sample else None,
            }
        return pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)


def _summarise(values: np.ndarray, bins: int, exact_max: int) -> dict[str, Any]:
    """Exact values while there are at most `exact_max`, else `bins` quantiles; plus exact moments."""
    summary: dict[str, Any] = {"count": int(values.size)}
    if values.size == 0:
        return {**summary, "values": values}
    summary.update(sum=float(values.sum()), sumsq=float(np.square(values - values.mean()).sum()),
                   mean=float(values.mean()), min=float(values.min()), max=float(values.max()))
    if values.size <= exact_max:
        return {**summary, "values": values}
    grid = (np.arange(bins) + 0.5) / bins
    return {**summary, "quantiles": np.quantile(values, grid, method="inverted_cdf")}


def _extract(kind: str, valid: pa.Array) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, int]]:
    """The numeric fields, categorical fields and flag counts (truncated, empty) of non-null predictions."""
    def numbers(array: pa.Array) -> np.ndarray:
        array = array.drop_null() if array.null_count else array
        return np.asarray(array.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)

    def child(array: pa.Array, name: str) -> pa.Array:
        # StructArray.field ignores the struct's own nulls (a null struct's children may hold values);
        # struct_field masks them.
        return pc.struct_field(array, name)

    def keys(array: pa.Array) -> pa.Array:
        array = array.drop_null() if array.null_count else array
        return array.cast(pa.string())

    def count(mask: pa.Array) -> int:
        return int(pc.sum(mask.cast(pa.int64())).as_py() or 0)

    def blank(text: pa.Array) -> int:
        return count(pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0), False))

    if kind == "classification":
        return {"score": numbers(child(valid, "score"))}, {"label": keys(child(valid, "label"))}, {}
    if kind == "scores":
        return {"value": numbers(valid)}, {}, {}
    if kind == "labels":
        return {}, {"value": keys(valid)}, {}
    if kind == "embedding":
        return {}, {}, {}  # the norms come with the vectors (Accumulator._vectors)
    if kind == "token_classification":
        entities = pc.list_flatten(valid)
        return ({"entities": numbers(pc.list_value_length(valid))}, {"entity": keys(child(entities, "entity"))}, {})
    if kind == "generation":
        text, reason = child(valid, "text"), child(valid, "finish_reason")
        return ({"length": numbers(pc.utf8_length(text)), "completion_tokens": numbers(child(valid, "completion_tokens"))},
                {"finish_reason": keys(reason)},
                {"truncated": count(pc.fill_null(pc.equal(reason, "length"), False)), "empty": blank(text)})
    if kind == "extraction":
        status, raw = child(valid, "status"), child(valid, "raw")
        return ({"length": numbers(pc.utf8_length(raw))}, {"status": keys(status)},
                {"truncated": count(pc.fill_null(pc.equal(status, "truncated"), False)), "empty": blank(raw)})
    if kind == "text":
        return {"length": numbers(pc.utf8_length(valid))}, {}, {"empty": blank(valid)}
    raise ValueError(f"unknown profile kind {kind!r}")


def merge(partials: Iterable[bytes], settings: Settings, *, rows: int, source: str = "", created: str = "",
          sample_rows: int = 2000, known: Mapping[str, Mapping[str, int]] | None = None) -> Profile:
    """The `Profile` of a table from its partitions' partials (in any order).

    `known` adds counts the table does not hold, per column (``errors``, ``truncated`` from the run's
    counters), where the column itself has none.
    """
    merged: dict[str, dict[str, Any]] = {name: {"rows": 0, "nulls": 0, "errors": None, "truncated": None,
                                                  "empty": None, "numeric": {}, "counts": {}, "other": {},
                                                  "vector_sum": None, "vectors": 0, "sample": []}
                                           for name in settings.kinds}
    for blob in partials:
        for name, part in pickle.loads(blob).items():
            into = merged[name]
            for key in ("rows", "nulls", "vectors"):
                into[key] += part[key]
            for key in ("errors", "truncated", "empty"):
                if part[key] is not None:
                    into[key] = (into[key] or 0) + part[key]
            for key, summary in part["numeric"].items():
                into["numeric"].setdefault(key, []).append(summary)
            for key, counts in part["counts"].items():
                into["counts"].setdefault(key, Counter()).update(counts)
                into["other"][key] = into["other"].get(key, 0) + part["other"][key]
            if part["vector_sum"] is not None:
                into["vector_sum"] = part["vector_sum"] + (into["vector_sum"] if into["vector_sum"] is not None else 0)
            if part["sample"] is not None:
                into["sample"].append(part["sample"])
    columns = {}
    for name, into in merged.items():
        numeric_fields, categorical_fields = fields_of(settings.kinds[name])
        extra = dict((known or {}).get(name, {}))
        columns[name] = ColumnProfile(
            kind=settings.kinds[name], rows=into["rows"], nulls=into["nulls"],
            errors=into["errors"] if into["errors"] is not None else extra.get("errors"),
            truncated=into["truncated"] if into["truncated"] is not None else extra.get("truncated"),
            empty=into["empty"],
            numeric={key: _distribution(into["numeric"].get(key, []), settings) for key in numeric_fields},
            categorical={key: _categorical(into["counts"].get(key, Counter()), into["other"].get(key, 0))
                         for key in categorical_fields},
            embedding=_embeddings(into, settings, sample_rows),
        )
    return Profile(rows=rows, columns=columns, source=source, created=created)


def _categorical(counts: Counter[str], other: int) -> Categorical:
    top = dict(counts.most_common(MAX_CATEGORIES))
    return Categorical(top, other + sum(counts.values()) - sum(top.values()))


def _embeddings(into: Mapping[str, Any], settings: Settings, sample_rows: int) -> Embeddings | None:
    if into["vector_sum"] is None:
        return None
    sample = np.concatenate(into["sample"]) if into["sample"] else np.zeros((0, len(into["vector_sum"])), np.float32)
    if len(sample) > sample_rows:  # the Bernoulli sample overshot its target; trim it uniformly
        sample = sample[np.random.default_rng(settings.seed).choice(len(sample), sample_rows, replace=False)]
    centroid = into["vector_sum"] / max(into["vectors"], 1)
    return Embeddings(len(centroid), tuple(float(x) for x in centroid), sample)


def _distribution(summaries: list[dict[str, Any]], settings: Settings) -> Distribution:
    """Exact when every partition sent its values and they total at most ``exact_max``, else a sketch of
    ``bins`` quantiles of the mixture of the partitions' summaries."""
    summaries = [s for s in summaries if s["count"]]
    count = sum(s["count"] for s in summaries)
    if count == 0:
        return Distribution.from_values([])
    if count <= settings.exact_max and all("values" in s for s in summaries):
        return Distribution.from_values(np.concatenate([s["values"] for s in summaries]))
    mean = sum(s["sum"] for s in summaries) / count
    # Pooled variance: within-partition sums of squares plus the partitions' mean offsets.
    squares = sum(s["sumsq"] + s["count"] * (s["mean"] - mean) ** 2 for s in summaries)
    points = np.concatenate([s.get("values", s.get("quantiles")) for s in summaries])
    weights = np.concatenate([np.full(len(s["values"]), 1.0) if "values" in s
                              else np.full(len(s["quantiles"]), s["count"] / len(s["quantiles"])) for s in summaries])
    order = np.argsort(points, kind="stable")
    points, cumulative = points[order], np.cumsum(weights[order])
    grid = (np.arange(settings.bins) + 0.5) / settings.bins * cumulative[-1]
    quantiles = points[np.minimum(np.searchsorted(cumulative, grid, side="left"), len(points) - 1)]
    exact_parts = all("values" in s for s in summaries)
    return Distribution.from_quantiles(
        quantiles, count, mean=mean, std=float(np.sqrt(squares / count)), min=min(s["min"] for s in summaries),
        max=max(s["max"] for s in summaries), rank_error=0.0 if exact_parts else 1.0 / settings.bins,
    )
