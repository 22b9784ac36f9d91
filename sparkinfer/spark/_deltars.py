"""Delta tables without Spark's Delta source: delta-rs resolves and commits, Spark reads and writes Parquet.

Reading resolves the table's current snapshot with delta-rs to its data files and their partition values,
and reads those files with Spark. Tables whose data those files alone would misrepresent (deletion vectors
in use, column mapping, widened types, ...) are refused with a `TableError` naming the feature.

Writing runs one Spark job in which every task writes its rows as Parquet files into the table directory
(names unique per task attempt) and returns a small row per file; the driver commits the files of the
successful attempts, which are exactly the rows `collect()` returns, in ONE Delta transaction. A job that
fails commits nothing, so the table stays at its previous version; files of failed or speculative attempts
are never referenced by the log (``VACUUM`` removes them).
"""

from __future__ import annotations

import datetime
import decimal
import json
import logging
import math
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from sparkinfer._optional import require
from sparkinfer.errors import TableError
from sparkinfer.spark import _deltastats

log = logging.getLogger("sparkinfer")

WriteMode = Literal["append", "overwrite", "error"]

# Reader features whose tables read correctly from the data files alone (the ones that could not are
# checked by what the table actually uses: deletion vectors present, a column-mapping mode).
_READER_FEATURES = {"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck", "variantType", "variantType-preview",
                    "deletionVectors", "columnMapping"}
# Writer features a blind append or overwrite of plain Parquet files honours. Features that only matter when
# the table uses them (constraints, invariants, generated or identity columns, column mapping) are checked
# by use below; anything else (row tracking, type widening, Iceberg compatibility, ...) is refused.
_WRITER_FEATURES = _READER_FEATURES | {"appendOnly", "invariants", "checkConstraints", "changeDataFeed",
                                       "generatedColumns", "identityColumns", "domainMetadata"}
_PARTITION_TYPES = {"string", "byte", "short", "integer", "long", "boolean", "date", "timestamp", "timestamp_ntz",
                    "decimal"}
_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
_FILE_ROWS = "path string, size long, partition_values string, modification_time long, stats string"
# Start a new file once this much Arrow data went into the current one (keeps files in the 100s of MB).
_ROLL_BYTES = 256 * 1024 * 1024


def _deltalake() -> Any:
    return require("deltalake", extra="delta", purpose="Delta tables without Spark's Delta source")


def table_uri(path: str) -> str:
    """An absolute URI or path: executors do not share the driver's working directory."""
    import os

    if "://" in path:
        return path.rstrip("/")
    return os.path.abspath(path.removeprefix("file:"))


def version(path: str) -> int:
    """The current version of the Delta table at `path`."""
    return int(_open(table_uri(path), path).version())


def last_commit_metadata(path: str) -> dict[str, Any]:
    """The custom metadata `write` put in the last commit's ``commitInfo`` (its other keys are left out)."""
    history = _open(table_uri(path), path).history(1)
    info = history[0] if history else {}
    entries = {}
    for key, value in info.items():
        if key in ("operationParameters", "operationMetrics"):  # delta-rs's own
            continue
        if isinstance(value, str) and value.startswith("{"):
            try:
                entries[key] = json.loads(value)
            except ValueError:
                continue
        elif isinstance(value, dict):
            entries[key] = value
    return entries


def is_delta_table(path: str) -> bool:
    """Whether a Delta table (a ``_delta_log`` with at least one commit) exists at `path`."""
    return bool(_deltalake().DeltaTable.is_deltatable(table_uri(path)))


# ---------------------------------------------------------------------------------------------- reading


def read(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    """The current snapshot (or `version`) of the Delta table at `path`, read by Spark from its Parquet files.

    Raises:
        TableError: When there is no Delta table at `path`, or it uses a feature that plain Parquet reads
            would get wrong.
    """
    uri = table_uri(path)
    table = _open(uri, path, version)
    schema = StructType.fromJson(json.loads(table.schema().to_json()))
    partition_cols = list(table.metadata().partition_columns)
    data_schema = StructType([f for f in schema.fields if f.name not in partition_cols])
    actions = pa.table(table.get_add_actions(flatten=False)).to_pylist()
    if not actions:
        return spark.createDataFrame([], schema)
    files: dict[tuple[Any, ...], list[str]] = {}
    for action in actions:
        values = tuple((action.get("partition") or {}).get(c) for c in partition_cols)
        files.setdefault(values, []).append(_data_file_uri(uri, action["path"]))
    # Partition values live in the log, not in the files: read each partition's files and add them as
    # literals. Directory names are not parsed, so any layout a Delta writer chose reads correctly.
    parts = []
    for values, uris in files.items():
        frame = spark.read.schema(data_schema).parquet(*uris)
        for name, value in zip(partition_cols, values):
            frame = frame.withColumn(name, F.lit(value).cast(schema[name].dataType))
        parts.append(frame.select(*schema.names))
    result = parts[0]
    for part in parts[1:]:
        result = result.unionByName(part)
    return result


def _open(uri: str, path: str, version: int | None = None) -> Any:
    """The current snapshot (or `version`) of the Delta table at `uri`, checked to read correctly from its
    data files.

    Raises:
        TableError: When there is no Delta table (or no such version) at `path`, or it uses a feature plain
            Parquet reads get wrong.
    """
    try:
        table = _deltalake().DeltaTable(uri, version=version)
    except Exception as exc:  # delta-rs raises TableNotFoundError, OSError, ... by backend
        at = "" if version is None else f" at version {version}"
        raise TableError(f"no Delta table{at} at {path!r} ({type(exc).__name__}: {exc})") from exc
    _check_readable(table, path)
    return table


def _data_file_uri(root: str, log_path: str) -> str:
    # Log paths are URL-encoded (RFC 2396); relative ones hang off the table root.
    path = urllib.parse.unquote(log_path)
    return path if "://" in path or path.startswith("/") else f"{root}/{path}"


def _check_readable(table: Any, path: str) -> None:
    protocol = table.protocol()
    features = set(protocol.reader_features or ())
    unknown = sorted(features - _READER_FEATURES)
    if unknown or protocol.min_reader_version > 3:
        raise TableError(
            f"Delta table {path!r} needs reader feature(s) {unknown or protocol.min_reader_version} that "
            "sparkinfer cannot read without Spark's Delta source; run with delta-spark (or on Databricks)"
        )
    mode = table.metadata().configuration.get("delta.columnMapping.mode") or "none"
    if mode != "none":
        raise TableError(
            f"Delta table {path!r} uses column mapping (delta.columnMapping.mode={mode!r}): its Parquet files "
            "name columns differently from the table, so sparkinfer cannot read it without Spark's Delta "
            "source; run with delta-spark (or on Databricks)"
        )
    if "deletionVectors" in features:
        with_dvs = pa.table(table.deletion_vectors()).num_rows
        if with_dvs:
            raise TableError(
                f"Delta table {path!r} has deletion vectors on {with_dvs} file(s): reading its Parquet files "
                "would bring deleted rows back; run with Spark's Delta source (delta-spark), or rewrite the "
                "table without them (e.g. OPTIMIZE / REORG TABLE ... APPLY (PURGE))"
            )


# ---------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class _Target:
    """What the executors need to write files into a table (shipped in the mapInArrow closure)."""

    uri: str
    partition_cols: tuple[str, ...]
    data_schema: pa.Schema


def write(
    df: DataFrame,
    path: str,
    *,
    mode: WriteMode,
    partition_by: Sequence[str] = (),
    commit_metadata: Mapping[str, Any] | None = None,
) -> int:
    """Write `df` to the Delta table at `path` in one transaction; return the committed version.

    Args:
        df: The rows to write.
        path: The table's directory or URI (created when missing).
        mode: ``"append"``, ``"overwrite"`` (replace the rows, and the schema) or ``"error"`` (the table
            must not exist).
        partition_by: Partition columns of a new table; an existing table keeps its own (empty means those,
            anything else is refused).
        commit_metadata: JSON-able entries added to the commit's ``commitInfo``.

    Raises:
        TableError: When the table exists and `mode` is ``"error"``, when an append's schema or the partition
            columns differ from the table's, or when the table uses features this writer cannot honour.
    """
    deltalake = _deltalake()
    from deltalake.transaction import AddAction, CommitProperties, create_table_with_add_actions

    uri = table_uri(path)
    existing = deltalake.DeltaTable(uri) if deltalake.DeltaTable.is_deltatable(uri) else None
    schema = _nullable(df.schema)
    partition_cols = tuple(partition_by)
    if existing is not None:
        if mode == "error":
            raise TableError(
                f"Delta table {path!r} already exists (mode='error'); use mode='append' or 'overwrite', "
                "or another path"
            )
        _check_writable(existing, path)
        table_partitions = tuple(existing.metadata().partition_columns)
        # delta-rs keeps a table's partition columns whatever a commit says: the files must follow them.
        if partition_cols and partition_cols != table_partitions:
            raise TableError(
                f"Delta table {path!r} is partitioned by {list(table_partitions)}, not {list(partition_cols)}; "
                "drop partition_by (the table's own is used), or write a new table"
            )
        partition_cols = table_partitions
        if mode == "append":
            _check_append(existing, schema, path)
    _check_partition_columns(df.schema, partition_cols)

    data_fields = StructType([f for f in df.schema.fields if f.name not in partition_cols])
    target = _Target(uri, partition_cols, _arrow_schema(data_fields))

    def write_files(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield from _write_task(target, batches)

    rows = df.mapInArrow(write_files, _FILE_ROWS).collect()
    actions = [
        AddAction(r.path, r.size, json.loads(r.partition_values), r.modification_time, True, r.stats) for r in rows
    ]
    delta_schema = deltalake.Schema.from_json(schema.json())
    properties = CommitProperties(custom_metadata=dict(commit_metadata)) if commit_metadata else None
    if existing is None:
        create_table_with_add_actions(
            uri, delta_schema, actions, mode=mode, partition_by=list(partition_cols) or None,
            commit_properties=properties,
        )
    else:
        existing.create_write_transaction(
            actions, mode, delta_schema, partition_by=list(partition_cols) or None, commit_properties=properties
        )
    version = int(deltalake.DeltaTable(uri).version())
    log.info("sparkinfer committed %d file(s) to %s as version %d", len(actions), path, version)
    return version


def _arrow_schema(schema: StructType) -> pa.Schema:
    """The Arrow schema of Spark's Arrow batches, timestamps in UTC (PySpark 3.5 has no timezone argument:
    its timestamps are UTC already)."""
    import inspect

    from pyspark.sql.pandas.types import to_arrow_schema

    if "timezone" in inspect.signature(to_arrow_schema).parameters:
        return to_arrow_schema(schema, timezone="UTC")
    return to_arrow_schema(schema)


def _nullable(schema: StructType) -> StructType:
    """The schema with every field, element and value nullable, as Spark's Delta writer stores it."""

    def relax(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (True if k in ("nullable", "containsNull", "valueContainsNull") else relax(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [relax(v) for v in node]
        return node

    return StructType.fromJson(relax(schema.jsonValue()))


def _check_writable(table: Any, path: str) -> None:
    protocol = table.protocol()
    features = set(protocol.writer_features or ())
    unknown = sorted(features - _WRITER_FEATURES)
    if unknown or protocol.min_writer_version > 7:
        raise TableError(
            f"Delta table {path!r} needs writer feature(s) {unknown or protocol.min_writer_version} that "
            "sparkinfer's delta-rs writer does not honour; write with Spark's Delta source (delta-spark) or "
            "to a new table"
        )
    configuration = table.metadata().configuration
    in_use = []
    if (configuration.get("delta.columnMapping.mode") or "none") != "none":
        in_use.append("column mapping")
    if any(key.startswith("delta.constraints.") for key in configuration):
        in_use.append("CHECK constraints")
    schema_json = table.schema().to_json()
    for marker, what in (("delta.invariants", "column invariants"), ("delta.generationExpression",
                         "generated columns"), ("delta.identity.", "identity columns")):
        if marker in schema_json:
            in_use.append(what)
    if in_use:
        raise TableError(
            f"Delta table {path!r} uses {', '.join(in_use)}, which sparkinfer's delta-rs writer does not "
            "enforce; write with Spark's Delta source (delta-spark) or to a new table"
        )


def _check_append(table: Any, schema: StructType, path: str) -> None:
    table_schema = _nullable(StructType.fromJson(json.loads(table.schema().to_json())))
    if {f.name: f.dataType for f in table_schema.fields} != {f.name: f.dataType for f in schema.fields}:
        raise TableError(
            f"cannot append to Delta table {path!r}: its schema is {table_schema.simpleString()}, the rows' is "
            f"{schema.simpleString()}; select matching columns, or use mode='overwrite' to replace the table"
        )


def _check_partition_columns(schema: StructType, partition_cols: Sequence[str]) -> None:
    for name in partition_cols:
        if name not in schema.names:
            raise TableError(f"partition column {name!r} is not a column of the rows (got {schema.names})")
        kind = schema[name].dataType.typeName()
        if kind not in _PARTITION_TYPES:
            raise TableError(
                f"partition column {name!r} must have one of the types {sorted(_PARTITION_TYPES)} (got {kind})"
            )
    if partition_cols and len(partition_cols) == len(schema.names):
        raise TableError(f"partition_by={list(partition_cols)} leaves no data column; keep at least one")


# ------------------------------------------------------------------------------------ repairing


def repair_statistics(path: str, *, max_workers: int = 16) -> int:
    """Recompute every data file's statistics from its Parquet footer; commit the ones that changed.

    See `sparkinfer.spark.tables.repair_delta_statistics`, which documents this.
    """
    uri = table_uri(path)
    table = _open(uri, path)  # refuses deletion vectors: re-adding such a file would drop its vector
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import AddAction, CommitProperties

    _check_writable(table, path)
    partition_cols = list(table.metadata().partition_columns)
    actions = pa.table(table.get_add_actions(flatten=False))
    if actions.num_rows == 0:
        return 0
    partition_types = {c: actions.schema.field("partition").type[c].type for c in partition_cols}
    rows = actions.to_pylist()

    def recompute(row: dict[str, Any]) -> AddAction | None:
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        location = _data_file_uri(uri, row["path"])
        fs, inner = pafs.FileSystem.from_uri(location)
        with fs.open_input_file(inner) as handle:
            size = handle.size()
            parquet = pq.ParquetFile(handle)
            # Footers cannot say whether a float column holds NaN: read the fields holding float columns.
            floats = _deltastats.float_leaves(parquet.schema_arrow)
            data = parquet.read(columns=sorted({names[0] for names in floats})) if floats else pa.table({})
            unread = floats - _deltastats.float_leaves(data.schema)
            stats = _deltastats.file_stats(parquet.metadata, _deltastats.nan_leaves(zip(data.column_names, data.columns)) | unread)
        if size != row["size_bytes"]:
            raise TableError(
                f"data file {row['path']!r} of Delta table {path!r} is {size} bytes, the log says "
                f"{row['size_bytes']}: it is not the file the log describes; restore it before repairing"
            )
        if _deltastats.comparable(stats) == _deltastats.comparable({"numRecords": row.get("num_records"), "minValues": row.get("min"),
                                              "maxValues": row.get("max"), "nullCount": row.get("null_count")}):
            return None
        values = {c: _partition_strings(pa.array([(row.get("partition") or {}).get(c)], partition_types[c]))[0]
                  for c in partition_cols}
        # dataChange=false: the same rows, described again (as Delta's ANALYZE ... COMPUTE STATISTICS does).
        return AddAction(row["path"], size, values, row["modification_time"], False, json.dumps(stats))

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        changed = [a for a in pool.map(recompute, rows) if a is not None]
    if not changed:
        log.info("sparkinfer: the statistics of all %d file(s) of %s are right; nothing committed", len(rows), path)
        return 0
    # No retries: committed on top of a newer version, re-adding a file that a concurrent OPTIMIZE or
    # overwrite removed would bring its rows back a second time.
    properties = CommitProperties(
        custom_metadata={"sparkinfer": {"operation": "repair statistics", "files": len(changed)}},
        max_commit_retries=0,
    )
    try:
        table.create_write_transaction(changed, "append", table.schema(), partition_by=partition_cols or None,
                                       commit_properties=properties)
    except CommitFailedError as exc:
        raise TableError(
            f"Delta table {path!r} changed while its statistics were being repaired ({exc}); nothing was "
            "committed, run the repair again"
        ) from exc
    log.info("sparkinfer re-stated %d of %d file(s) of %s", len(changed), len(rows), path)
    return len(changed)


# ------------------------------------------------------------------------------------ executor side


class _OpenFile:
    def __init__(self, fs: Any, base: str, relative: str, schema: pa.Schema, values: dict[str, str | None]) -> None:
        import pyarrow.parquet as pq

        self.fs, self.relative, self.values = fs, relative, values
        self.full = f"{base}/{relative}"
        parent = self.full.rsplit("/", 1)[0]
        fs.create_dir(parent, recursive=True)
        self.writer = pq.ParquetWriter(self.full, schema, filesystem=fs, compression="snappy")
        self.bytes = 0
        self.nan_leaves: set[tuple[str, ...]] = set()  # footers cannot say (Parquet min/max skip NaN)

    def write(self, batch: pa.RecordBatch) -> None:
        self.writer.write_batch(batch)
        self.bytes += batch.nbytes
        self.nan_leaves |= _deltastats.nan_leaves(zip(batch.schema.names, batch.columns))

    def close(self) -> dict[str, Any]:
        import pyarrow.parquet as pq

        self.writer.close()
        info = self.fs.get_file_info(self.full)
        metadata = pq.read_metadata(self.full, filesystem=self.fs)
        return {
            "path": self.relative,  # the on-disk relative path; delta-rs URL-encodes it in the log
            "size": int(info.size),
            "partition_values": json.dumps(self.values),
            "modification_time": int(info.mtime_ns // 1_000_000) if info.mtime_ns else int(time.time() * 1000),
            "stats": json.dumps(_deltastats.file_stats(metadata, self.nan_leaves)),
        }


def _write_task(target: _Target, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Write one task's rows into new Parquet files; yield one row describing each file."""
    import pyarrow.fs as pafs
    from pyspark import TaskContext

    fs, base = pafs.FileSystem.from_uri(target.uri)
    context = TaskContext.get()
    # Unique per task attempt: a retried or speculative attempt never overwrites another attempt's file.
    tag = f"{context.partitionId():05d}-{context.attemptNumber()}" if context is not None else "00000-0"
    open_files: dict[tuple[str | None, ...], _OpenFile] = {}
    done: list[dict[str, Any]] = []

    def file_for(values: tuple[str | None, ...]) -> _OpenFile:
        current = open_files.get(values)
        if current is not None and current.bytes >= _ROLL_BYTES:
            done.append(current.close())
            current = None
        if current is None:
            folders = "".join(
                f"{name}={_NULL_PARTITION if value is None else urllib.parse.quote(value, safe='')}/"
                for name, value in zip(target.partition_cols, values)
            )
            relative = f"{folders}part-{tag}-{uuid.uuid4()}.c000.snappy.parquet"
            current = _OpenFile(fs, base, relative, target.data_schema, dict(zip(target.partition_cols, values)))
            open_files[values] = current
        return current

    for batch in batches:
        if batch.num_rows == 0:
            continue
        data = pa.RecordBatch.from_arrays(
            [batch.column(f.name).cast(f.type) for f in target.data_schema], schema=target.data_schema
        )
        if not target.partition_cols:
            file_for(()).write(data)
            continue
        keys = list(zip(*(_partition_strings(batch.column(c)) for c in target.partition_cols)))
        groups: dict[tuple[str | None, ...], list[int]] = {}
        for row, key in enumerate(keys):
            groups.setdefault(key, []).append(row)
        for key, rows in groups.items():
            file_for(key).write(data.take(pa.array(rows, pa.int64())))
    done.extend(f.close() for f in open_files.values())
    if done:
        yield pa.RecordBatch.from_pylist(done, schema=_file_rows_schema())


def _file_rows_schema() -> pa.Schema:
    return pa.schema([("path", pa.string()), ("size", pa.int64()), ("partition_values", pa.string()),
                      ("modification_time", pa.int64()), ("stats", pa.string())])


def _partition_strings(column: pa.Array) -> list[str | None]:
    """Partition values as the Delta protocol serializes them (timestamps in UTC, ISO 8601)."""
    out: list[str | None] = []
    for value in column.to_pylist():
        if value is None or isinstance(value, str):
            out.append(value)
        elif isinstance(value, bool):
            out.append("true" if value else "false")
        elif isinstance(value, datetime.datetime):
            if value.tzinfo is None:  # timestamp_ntz
                out.append(value.strftime("%Y-%m-%d %H:%M:%S.%f"))
            else:
                out.append(value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        elif isinstance(value, datetime.date):
            out.append(value.isoformat())
        elif isinstance(value, (int, decimal.Decimal)):
            out.append(str(value))
        else:
            raise TableError(f"cannot use {type(value).__name__} value {value!r} as a Delta partition value")
    return out
