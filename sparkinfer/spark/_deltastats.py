"""Delta per-file statistics from Parquet footers, as the delta-rs writer in `_deltars` records them.

Plain pyarrow, no Spark: which Parquet leaf holds each column (`leaf_columns`), the statistics of one file
(`file_stats`: row count, null counts and min/max, struct fields nested as the Delta protocol lays them
out, leaves under lists and maps left out), and a form of them to compare with what a log holds.
"""

from __future__ import annotations

import datetime
import logging
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

log = logging.getLogger("sparkinfer")

_STATS_STRING_CHARS = 64  # longer strings get a prefix as their bounds


def comparable(stats: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    """Statistics as flat ``{(kind, *names): value}``, absent values dropped, dates and times as logged."""
    out: dict[tuple[str, ...], Any] = {("numRecords",): stats.get("numRecords")}

    def flatten(kind: str, tree: Mapping[str, Any] | None, names: tuple[str, ...]) -> None:
        for name, value in (tree or {}).items():
            if isinstance(value, Mapping):
                flatten(kind, value, (*names, name))
            elif value is not None:
                out[(kind, *names, name)] = _as_logged(value)

    for kind in ("minValues", "maxValues", "nullCount"):
        flatten(kind, stats.get(kind), ())
    return out


def _as_logged(value: Any) -> Any:
    """A statistic parsed by delta-rs (dates, timestamps) as `file_stats` writes it."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            return _millis(value, "")
        return _millis(value.astimezone(datetime.timezone.utc), "Z")
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value



@dataclass(frozen=True)
class Leaf:
    """One Parquet leaf column of an Arrow schema, in the footer's column order."""

    names: tuple[str, ...]  # Arrow field names from the top-level field down to the leaf
    type: pa.DataType
    repeated: bool  # under a list or map: Delta keeps no statistics for such leaves


def leaf_columns(schema: pa.Schema) -> list[Leaf]:
    """The Parquet leaf columns of `schema`, in footer order: ``row_group(g).column(i)`` is the i-th.

    Parquet numbers leaves, not top-level fields: a struct spans one column per leaf of its children, a
    list or fixed-size list the leaves of its value, a map its key's leaves then its value's. Walking the
    Arrow type tree (not splitting ``ColumnChunkMetaData.path_in_schema`` on dots) keeps field names that
    contain dots apart from nesting.
    """
    leaves: list[Leaf] = []

    def walk(names: tuple[str, ...], kind: pa.DataType, repeated: bool) -> None:
        if pa.types.is_struct(kind):
            for child in kind:
                walk((*names, child.name), child.type, repeated)
        elif pa.types.is_map(kind):  # before lists: a map is a list of key/value structs to pyarrow
            walk((*names, kind.key_field.name), kind.key_type, True)
            walk((*names, kind.item_field.name), kind.item_type, True)
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            walk((*names, kind.value_field.name), kind.value_type, True)
        elif isinstance(kind, pa.ExtensionType):
            walk(names, kind.storage_type, repeated)
        elif pa.types.is_dictionary(kind):
            walk(names, kind.value_type, repeated)
        else:
            leaves.append(Leaf(names, kind, repeated))

    for top in schema:
        walk((top.name,), top.type, False)
    return leaves


def file_stats(metadata: Any, nan_leaves: Collection[tuple[str, ...]] | None = None) -> dict[str, Any]:
    """Delta per-file statistics from the Parquet footer: row count, null counts, and min/max bounds.

    Columns inside structs are recorded as the Delta protocol nests them (``{"pred": {"label": ...}}``);
    columns inside lists or maps are left out, as Delta does. Min/max go to integer, boolean, date,
    timestamp (to the millisecond, widened outwards), string (past 64 characters: a shorter lower and a
    larger upper bound) and, where `nan_leaves` shows the file has no NaN in them, float columns (Parquet's
    float min/max skip NaN, which Spark orders above every number). Binary, decimal and NaN-holding
    columns get none. A missing statistic means a file is never skipped on it by Spark; a wrong one loses
    rows, so when the footer's leaf columns do not line up with the Arrow schema's, only the row count is
    recorded.

    Args:
        metadata: The file's ``pyarrow.parquet.FileMetaData``.
        nan_leaves: The float columns (names from the top-level field down) holding a NaN; ``None`` when
            unknown, which leaves every float column without min/max.

    Returns:
        The ``stats`` object of the file's ``add`` action.
    """
    stats: dict[str, Any] = {"numRecords": metadata.num_rows, "minValues": {}, "maxValues": {}, "nullCount": {}}
    leaves = leaf_columns(metadata.schema.to_arrow_schema())
    paths = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    if len(leaves) != len(paths) or any(
        path != ".".join(leaf.names) for leaf, path in zip(leaves, paths) if not leaf.repeated
    ):
        log.warning("sparkinfer: the Parquet leaf columns %s do not match the Arrow schema's %s; writing no "
                    "column statistics for this file", paths, [".".join(leaf.names) for leaf in leaves])
        return {"numRecords": metadata.num_rows}
    for index, leaf in enumerate(leaves):
        if leaf.repeated:
            continue
        chunks = [metadata.row_group(g).column(index).statistics for g in range(metadata.num_row_groups)]
        if not chunks or any(c is None for c in chunks):
            continue
        if all(c.has_null_count for c in chunks):
            _put(stats["nullCount"], leaf.names, sum(c.null_count for c in chunks))
        with_values = [c for c in chunks if c.has_min_max]
        if not with_values or any(c.num_values and not c.has_min_max for c in chunks):
            continue
        if pa.types.is_floating(leaf.type) and (nan_leaves is None or leaf.names in nan_leaves):
            continue
        bounds = _bounds(leaf.type, min(c.min for c in with_values), max(c.max for c in with_values))
        if bounds is not None:
            _put(stats["minValues"], leaf.names, bounds[0])
            _put(stats["maxValues"], leaf.names, bounds[1])
    return stats


def _bounds(kind: pa.DataType, low: Any, high: Any) -> tuple[Any, Any] | None:
    """JSON values at or below `low` and at or above `high` for a Delta ``minValues``/``maxValues`` pair."""
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return low, high
    if pa.types.is_floating(kind):
        # JSON has no infinity; -0.0 and 0.0 are fine (Parquet writes -0.0 as min and 0.0 as max).
        return (low, high) if math.isfinite(low) and math.isfinite(high) else None
    if pa.types.is_date(kind):
        return low.isoformat(), high.isoformat()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        upper = _string_upper_bound(high)
        return (low[:_STATS_STRING_CHARS], upper) if upper is not None else None
    if pa.types.is_timestamp(kind) and kind.unit in ("s", "ms", "us") and isinstance(low, datetime.datetime):
        # Delta keeps milliseconds: round the minimum down and the maximum up, so both stay bounds.
        try:
            ceiling = high + datetime.timedelta(microseconds=-high.microsecond % 1000)
        except OverflowError:  # within a millisecond of datetime.max
            return None
        if kind.tz is None:
            return _millis(low, ""), _millis(ceiling, "")
        utc = datetime.timezone.utc
        return _millis(low.astimezone(utc), "Z"), _millis(ceiling.astimezone(utc), "Z")
    return None


def _millis(value: datetime.datetime, suffix: str) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + suffix


def _string_upper_bound(value: str) -> str | None:
    """`value`, or when longer than the prefix kept, the smallest prefix-length string above all its
    extensions: the last character that can grow, grown by one code point (code point order is UTF-8
    byte order, the order Parquet and Delta compare strings in)."""
    if len(value) <= _STATS_STRING_CHARS:
        return value
    prefix = value[:_STATS_STRING_CHARS]
    for end in range(len(prefix) - 1, -1, -1):
        code = ord(prefix[end]) + 1
        code = 0xE000 if 0xD800 <= code <= 0xDFFF else code  # surrogates are not characters
        if code <= 0x10FFFF:
            return prefix[:end] + chr(code)
    return None


def float_leaves(schema: pa.Schema) -> set[tuple[str, ...]]:
    return {leaf.names for leaf in leaf_columns(schema) if pa.types.is_floating(leaf.type) and not leaf.repeated}


def nan_leaves(columns: Iterable[tuple[str, Any]]) -> set[tuple[str, ...]]:
    """The float columns outside lists and maps that hold a NaN, as names from the top-level field down."""
    import pyarrow.compute as pc

    found: set[tuple[str, ...]] = set()

    def walk(names: tuple[str, ...], values: Any) -> None:
        kind = values.type
        if pa.types.is_struct(kind):
            for field, child in zip(kind, values.flatten()):
                walk((*names, field.name), child)
        elif pa.types.is_floating(kind) and pc.any(pc.is_nan(values)).as_py():
            found.add(names)

    for name, values in columns:
        walk((name,), values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values)
    return found


def _put(tree: dict[str, Any], names: tuple[str, ...], value: Any) -> None:
    """Set ``tree[names[0]][names[1]]...`` to `value`, creating the nested objects on the way."""
    node = tree
    for name in names[:-1]:
        node = node.setdefault(name, {})
    node[names[-1]] = value
