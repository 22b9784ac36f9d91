"""Read and write tables: Delta (Spark's Delta source when the session has it, else delta-rs) and Parquet.

Delta goes through Spark's own Delta source whenever the session has one (delta-spark jars, Databricks).
Without it, delta-rs (the ``deltalake`` package, ``pip install 'sparkinfer[delta]'``) resolves and commits
while Spark reads and writes the Parquet files (see ``_deltars.py``): a write is still ONE Delta
transaction, so a failed job leaves the table at its previous version.

Parquet goes through Spark's file commit protocol: task output is moved into place when the job commits, so
readers never see the files of failed tasks. Note that ``mode="overwrite"`` deletes the old files when the
job starts; use Delta when the old rows must survive a failed overwrite.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

from pyspark.sql import DataFrame, SparkSession

from sparkinfer.errors import SpecError, TableError
from sparkinfer.spark import _deltars

log = logging.getLogger("sparkinfer")

ReadFormat = Literal["auto", "delta", "parquet"]
WriteFormat = Literal["delta", "parquet"]
WriteMode = Literal["append", "overwrite", "error"]
DeltaEngine = Literal["auto", "spark", "delta-rs"]


def read_table(
    spark: SparkSession,
    path_or_name: str,
    format: ReadFormat = "auto",
    *,
    delta_engine: DeltaEngine = "auto",
    version: int | None = None,
) -> DataFrame:
    """Read a Delta table, a Parquet directory, or a table of the session's catalog.

    Args:
        spark: The session to read with.
        path_or_name: A directory or URI, or a catalog table name (``db.table``) when `format` is ``"auto"``.
        format: ``"auto"`` reads a catalog table by name, a directory holding ``_delta_log`` as Delta, and
            anything else as Parquet.
        delta_engine: ``"auto"`` uses Spark's Delta source when the session has one, else delta-rs.
        version: Delta only: read this version (time travel) instead of the current one.

    Returns:
        The table's current snapshot (or `version`) as a DataFrame.

    Raises:
        TableError: When the table does not exist, or is a Delta table delta-rs cannot read faithfully.
        SpecError: For an unknown `format` or `delta_engine`.
    """
    _check_choice("format", format, get_args(ReadFormat))
    _check_choice("delta_engine", delta_engine, get_args(DeltaEngine))
    if format == "auto":
        if _looks_like_name(path_or_name) and spark.catalog.tableExists(path_or_name):
            return spark.table(path_or_name)
        format = "delta" if _has_delta_log(spark, path_or_name, delta_engine) else "parquet"
    if format == "parquet":
        if version is not None:
            raise SpecError(f"version={version!r} needs a Delta table; {path_or_name!r} is read as Parquet")
        return spark.read.parquet(path_or_name)
    if _use_spark_delta(spark, delta_engine):
        reader = spark.read.format("delta")
        return (reader if version is None else reader.option("versionAsOf", version)).load(path_or_name)
    return _deltars.read(spark, path_or_name, version)


def delta_version(spark: SparkSession, path: str, *, delta_engine: DeltaEngine = "auto") -> int:
    """The current version of the Delta table at `path`.

    Raises:
        TableError: When there is no Delta table at `path`.
    """
    if _use_spark_delta(spark, delta_engine):
        quoted = path.replace("`", "``")
        row = spark.sql(f"DESCRIBE HISTORY delta.`{quoted}` LIMIT 1").select("version").first()
        if row is None:
            raise TableError(f"no Delta table at {path!r}")
        return int(row[0])
    return _deltars.version(path)


def write_table(
    df: DataFrame,
    path: str,
    format: WriteFormat = "delta",
    mode: WriteMode = "error",
    *,
    partition_by: Sequence[str] | str = (),
    delta_engine: DeltaEngine = "auto",
    commit_metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write `df` as a Delta table or Parquet directory, atomically per call.

    Args:
        df: The rows to write.
        path: The table directory or URI.
        format: ``"delta"`` or ``"parquet"``.
        mode: ``"append"``, ``"overwrite"`` or ``"error"`` (fail when the table exists).
        partition_by: Partition column(s).
        delta_engine: ``"auto"`` uses Spark's Delta source when the session has one, else delta-rs.
        commit_metadata: Delta only: JSON-able entries recorded with the commit (``commitInfo``, or
            ``userMetadata`` through Spark's Delta source).

    Raises:
        TableError: When `mode` is ``"error"`` and the table exists, or an append does not match the table.
        SpecError: For an unknown `format`, `mode` or `delta_engine`.
    """
    write(df, path, format, mode, partition_by=partition_by, delta_engine=delta_engine,
          commit_metadata=commit_metadata)


def write(
    df: DataFrame,
    path: str,
    format: WriteFormat,
    mode: WriteMode,
    *,
    partition_by: Sequence[str] | str = (),
    delta_engine: DeltaEngine = "auto",
    commit_metadata: Mapping[str, Any] | None = None,
) -> int | None:
    """`write_table`, returning the committed Delta version when delta-rs committed it (else None)."""
    _check_choice("format", format, get_args(WriteFormat))
    _check_choice("mode", mode, get_args(WriteMode))
    _check_choice("delta_engine", delta_engine, get_args(DeltaEngine))
    columns = (partition_by,) if isinstance(partition_by, str) else tuple(partition_by)
    if format == "parquet":
        if mode == "error" and table_exists(df.sparkSession, path, "parquet"):
            raise TableError(
                f"{path!r} already exists (mode='error'); use mode='append' or 'overwrite', or another path"
            )
        df.write.mode(mode).partitionBy(*columns).parquet(path)
        return None
    if _use_spark_delta(df.sparkSession, delta_engine):
        writer = df.write.format("delta").mode(mode).partitionBy(*columns)
        if commit_metadata:
            writer = writer.option("userMetadata", json.dumps(dict(commit_metadata), sort_keys=True))
        writer.save(path)
        return None
    return _deltars.write(df, path, mode=mode, partition_by=columns, commit_metadata=commit_metadata)


def repair_delta_statistics(path: str) -> int:
    """Recompute the per-file statistics of a Delta table from its Parquet footers; commit those that differ.

    Earlier versions of sparkinfer's delta-rs writer recorded, for every column after a struct or a map
    (columns of several Parquet leaves), the min/max and null count of another column (a job's
    ``sparkinfer_fingerprint`` got a prediction's); engines that skip files by those statistics (delta-rs
    filters, Spark, Databricks, Trino) then silently miss rows. They also left boolean, float, timestamp
    and long string columns without min/max, which delta-rs's pyarrow reader takes, in a filter on such a
    column, as "no row of the file matches".

    This recomputes each data file's statistics from its Parquet footer, as the writer now
    does (only the float columns are read, to find NaN), and re-states every file whose recorded
    statistics differ, as ONE commit of ``add`` actions for the same paths with ``dataChange=false``: no
    data file is written, moved or removed, and streaming readers see no new data. Statistics other
    writers recorded are replaced too when they differ (they may cover more, e.g. decimals or NaN-holding
    floats: files are then skipped less, never wrongly). Files keep their paths, sizes, partition values
    and modification times; ``tags`` of their old ``add`` actions are not carried over.

    Older table versions keep their statistics: time travel to them can still miss rows. Run it while
    nothing else writes to the table; a concurrent commit makes it fail, with nothing committed, rather
    than re-add files that a concurrent OPTIMIZE or overwrite removed.

    Args:
        path: The table's directory or URI (one pyarrow can open).

    Returns:
        How many files got new statistics (0: nothing was committed).

    Raises:
        TableError: When there is no Delta table at `path`, it uses a feature this repair cannot honour
            (deletion vectors in use, column mapping, ...), a data file differs from its log entry, or
            the table changed during the repair.
    """
    return _deltars.repair_statistics(path)


def last_commit_metadata(spark: SparkSession, path: str, *, delta_engine: DeltaEngine = "auto") -> dict[str, Any]:
    """The ``commit_metadata`` that `write` recorded with the Delta table's last commit ({} when none)."""
    if _use_spark_delta(spark, delta_engine):
        quoted = path.replace("`", "``")
        row = spark.sql(f"DESCRIBE HISTORY delta.`{quoted}` LIMIT 1").select("userMetadata").first()
        text = None if row is None else row[0]
        try:
            return dict(json.loads(text)) if text else {}
        except (ValueError, TypeError):  # another writer's free-text userMetadata
            return {}
    return _deltars.last_commit_metadata(path)


def table_exists(spark: SparkSession, path: str, format: WriteFormat, *, delta_engine: DeltaEngine = "auto") -> bool:
    """Whether a table of `format` exists at `path` (a Delta log, or any Parquet directory)."""
    if format == "delta":
        return _has_delta_log(spark, path, delta_engine)
    fs, base = _filesystem(path)
    if fs is None:
        try:
            spark.read.parquet(path).schema
        except Exception:  # Spark reports a missing path as an AnalysisException
            return False
        return True
    import pyarrow.fs as pafs

    return bool(fs.get_file_info(base).type != pafs.FileType.NotFound)


def spark_has_delta(spark: SparkSession) -> bool:
    """Whether the session has Spark's Delta source (delta-spark jars, Databricks).

    Reads the session's configuration first and then asks Spark to resolve the ``delta`` format for a path
    that does not exist; neither needs the JVM gateway, so this also works over Spark Connect.
    """
    extensions = spark.conf.get("spark.sql.extensions", None) or ""
    catalog = spark.conf.get("spark.sql.catalog.spark_catalog", None) or ""
    if "DeltaSparkSessionExtension" in extensions or "DeltaCatalog" in catalog:
        return True
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return True
    probe = os.path.join(tempfile.gettempdir(), f"sparkinfer-delta-probe-{uuid.uuid4()}")
    try:
        spark.read.format("delta").load(probe).schema
    except Exception as exc:
        condition = getattr(exc, "getCondition", lambda: None)() or ""
        text = f"{condition} {exc}"
        return not ("DATA_SOURCE_NOT_FOUND" in text or "Failed to find the data source" in text)
    return True


def resolve_delta_engine(spark: SparkSession, engine: DeltaEngine = "auto") -> Literal["spark", "delta-rs"]:
    """The Delta engine `engine` means for this session: ``"auto"`` decided once, by `spark_has_delta`.

    Raises:
        TableError: For ``"spark"`` when the session has no Delta source.
    """
    return "spark" if _use_spark_delta(spark, engine) else "delta-rs"


def _use_spark_delta(spark: SparkSession, engine: DeltaEngine) -> bool:
    if engine == "delta-rs":
        return False
    present = spark_has_delta(spark)
    if engine == "spark" and not present:
        raise TableError(
            "delta_engine='spark' but this session has no Delta source (add delta-spark: "
            "--packages io.delta:delta-spark_2.13:<version> plus its SQL extension); or use delta_engine='auto'"
        )
    return present


def _has_delta_log(spark: SparkSession, path: str, engine: DeltaEngine) -> bool:
    fs, base = _filesystem(path)
    if fs is not None:
        import pyarrow.fs as pafs

        return bool(fs.get_file_info(f"{base.rstrip('/')}/_delta_log").type == pafs.FileType.Directory)
    # A URI pyarrow cannot open (dbfs:, abfss: on older pyarrow, ...): ask whichever Delta engine we have.
    if _use_spark_delta(spark, engine):
        try:
            spark.read.format("delta").load(path).schema
        except Exception:
            return False
        return True
    return _deltars.is_delta_table(path)


def _filesystem(path: str) -> tuple[Any, str]:
    """A pyarrow filesystem and the path inside it, or (None, path) when pyarrow cannot open the URI."""
    import pyarrow.fs as pafs

    try:
        fs, base = pafs.FileSystem.from_uri(_deltars.table_uri(path))
    except (ValueError, OSError, NotImplementedError):  # unknown scheme, missing credentials, ...
        return None, path
    return fs, base


def _looks_like_name(value: str) -> bool:
    return "/" not in value and ":" not in value and "\\" not in value and not os.path.exists(value)


def _check_choice(name: str, value: object, allowed: tuple[object, ...]) -> None:
    if value not in allowed:
        raise SpecError(f"{name} must be one of {allowed} (got {value!r})")
