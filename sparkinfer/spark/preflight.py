"""Fail fast on the driver: check everything a job needs that can be known before a Spark job starts.

`check` runs first in `job.run`. It reads table metadata (Delta logs through delta-rs, Parquet footers
through pyarrow), the model directory's file names and ``config.json``, and the installed packages; it starts
no Spark job, imports no torch and loads no weights, so a typo costs seconds instead of a cluster's worth of
failed tasks. Each failure is a `SpecError`, `TableError`, `ModelLoadError` or `MissingDependencyError`
saying what was expected, what was found and how to fix it; the command line exits with status 2 for them
(`raised_by_check`).

Where the answer is not in metadata the driver can read, the check falls back to what the job itself would
do, which may run a Spark job: tables read through Spark's own Delta source (its snapshot is computed by
Spark jobs), Parquet at URIs pyarrow cannot open (Spark infers their schema with a job), and fingerprints a
table's statistics do not pin down. A model that exists only on the executors (a ``--archives`` name the
driver has not unpacked, a path under an executor volume mount, or any model with
``SPARKINFER_MODEL_ON_EXECUTORS=1``) is not checked here: a log line says so, and the executors check it as
they load it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql.types import StructType

from sparkinfer.engine import sources
from sparkinfer.errors import ModelLoadError, SparkInferError, SpecError, TableError
from sparkinfer.spark import _deltars, tables
from sparkinfer.spark.tables import DeltaEngine, WriteFormat
from sparkinfer.spark.udf import _check_dependencies
from sparkinfer.spec import ModelSpec

if TYPE_CHECKING:
    from sparkinfer.spark.job import Fingerprint, Job

log = logging.getLogger("sparkinfer")

# Set to 1 when the model exists only on the executors, in a form no heuristic here recognizes.
MODEL_ON_EXECUTORS_ENV = "SPARKINFER_MODEL_ON_EXECUTORS"
_ARCHIVE_CONFS = ("spark.archives", "spark.yarn.dist.archives")
_EXECUTOR_MOUNT = ("spark.kubernetes.executor.volumes.", ".mount.path")
_FOOTER_THREADS = 16

# Column name → Spark type (``DataFrame.dtypes`` spelling), None where metadata does not say it exactly.
Types = dict[str, "str | None"]


def check(spark: SparkSession, job: Job) -> None:
    """Check, before any Spark job, that `job` can run: its input, its output, its model, its packages.

    * the input exists and has the job's columns (`job.sources` and the key), the text ones of string type;
    * the output, if it exists, is of the job's format, allows the mode, holds no rows of another model
      fingerprint unless ``on_model_change="repredict"``, and has the schema an append writes;
    * the model directory is readable and holds a config, a tokenizer and safetensors weights (or pickle
      weights with ``allow_pickle=True``); a hub id counts when it is in the local Hugging Face cache;
    * the architecture named in ``config.json`` can do the task (`inspect_model.check_architecture`);
    * the packages the spec needs are installed (bitsandbytes for quantization, llguidance for
      constrained decoding) and its grammar compiles.

    Raises:
        SpecError: For a missing or non-string input column, or a task the architecture cannot do.
        TableError: For a missing input, or an output this job cannot write as asked.
        ModelLoadError: For a model that is not there, or lacks what loading it needs.
        MissingDependencyError: For a package the spec needs and this environment lacks.
    """
    engine = tables.resolve_delta_engine(spark, job.delta_engine)
    source = _input_types(spark, job, engine)
    check_columns(source, job)
    _check_output(spark, job, engine, source)
    _check_model(spark, job.spec)
    _check_dependencies(job.spec)


def pin(job: Job) -> Job:
    """`job` with its remote model pinned at the store's or registry's current revision (`sources.pin`).

    Raises:
        ModelLoadError: For a remote model that cannot be listed, or whose config cannot be read.
        MissingDependencyError: For a scheme whose filesystem package (or mlflow) is not installed.
    """
    return dataclasses.replace(job, spec=sources.pin(job.spec))


def raised_by_check(exc: BaseException) -> bool:
    """Whether `exc` came out of `check` or `pin`: a user error found before any Spark job started."""
    if not isinstance(exc, SparkInferError):
        return False
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code in (check.__code__, pin.__code__):
            return True
        frame = frame.tb_next
    return False


def check_columns(source: Mapping[str, str | None], job: Job) -> None:
    """Check the input's column types (name → Spark type) against the job's columns.

    Raises:
        SpecError: When a column the job reads is missing, an input column is not a string column, or a
            partition column is not an output column.
    """
    from sparkinfer.spark.job import FINGERPRINT_COLUMN

    columns = list(source)
    missing = [c for c in (*job.sources, *(c for c in (job.key,) if c)) if c not in source]
    if missing:
        raise SpecError(f"input {job.input!r} has no column(s) {missing} (got columns {columns})")
    if job.prompt_template is None:  # a template casts its columns to string itself
        wrong = {c: source[c] for c in job.input_cols if source[c] not in ("string", None)}
        if wrong:
            raise SpecError(
                f"--input-col must name string columns (got {wrong} in {job.input!r}); cast them when you write "
                "the input, or name them in --prompt-template '{col}', which casts to string"
            )
    out_columns = set(columns) | set(job.targets) | {FINGERPRINT_COLUMN}
    absent = [c for c in job.partition_by if c not in out_columns]
    if absent:
        raise SpecError(f"--partition-by {absent} is not an output column (got {sorted(out_columns)})")


def fingerprint_counts(spark: SparkSession, path: str, format: WriteFormat, engine: DeltaEngine) -> dict[str | None, int]:
    """Rows per model fingerprint in a job's output, from table metadata where it pins them down.

    A Delta table read through delta-rs gives each data file's row count and the min/max of the fingerprint
    column from its log; Parquet gives the same from the files' footers. Each chunk is written by one
    fingerprint, so min == max in every file, and the counts need no Spark job. Where that is not so (a file
    holding several fingerprints, statistics missing, Spark's own Delta source, a URI pyarrow cannot open),
    the counts come from a ``groupBy`` over the table: a Spark job.

    Returns:
        fingerprint → rows (None for rows without one).
    """
    from sparkinfer.spark.job import FINGERPRINT_COLUMN

    counts = None
    if format == "delta" and tables.resolve_delta_engine(spark, engine) == "delta-rs":
        counts = _delta_counts(path, FINGERPRINT_COLUMN)
    elif format == "parquet":
        counts = _parquet_counts(path, FINGERPRINT_COLUMN)
    if counts is not None:
        return counts
    log.info("sparkinfer: counting the fingerprints of %s with a Spark job (its metadata does not say them)", path)
    existing = tables.read_table(spark, path, format, delta_engine=engine)
    return {r[0]: int(r[1]) for r in existing.groupBy(FINGERPRINT_COLUMN).count().collect()}


def model_changed(job: Job, fp: Fingerprint, others: Mapping[str | None, int]) -> TableError:
    """The error for an output holding rows of other fingerprints when ``on_model_change="refuse"``."""
    return TableError(
        f"output {job.output!r} holds rows predicted with another model fingerprint "
        f"({', '.join(f'{k}: {v} rows' for k, v in sorted(others.items(), key=str))}); this run's is "
        f"{fp.id} ({json.dumps(fp.fields, sort_keys=True)}); pass --on-model-change repredict "
        "to predict every row again and replace the output, or write to another output"
    )


# ---------------------------------------------------------------------------------------------- tables


def _input_types(spark: SparkSession, job: Job, engine: DeltaEngine) -> Types:
    path, format = job.input, job.input_format
    if format == "auto":
        if tables._looks_like_name(path) and spark.catalog.tableExists(path):
            return _spark_types(spark.table(path).schema)
        format = "delta" if tables._has_delta_log(spark, path, engine) else "parquet"
    if format == "delta":
        if not tables._has_delta_log(spark, path, engine):
            raise TableError(
                f"input {path!r} is not a Delta table (no _delta_log{_found(path)}); pass --input-format parquet "
                "for a Parquet directory, or check the path"
            )
        return _delta_types(spark, path, engine)
    types = _parquet_types(spark, path)
    if types is None:
        raise TableError(
            f"input {path!r} does not exist: expected a Delta table, a Parquet file or directory, or a table of the "
            "session's catalog; check the path (executors need it too: use a shared file system or URI)"
        )
    if not types:
        raise TableError(f"input {path!r} holds no Parquet files, so it has no columns; check the path")
    return types


def _check_output(spark: SparkSession, job: Job, engine: DeltaEngine, source: Types) -> None:
    from sparkinfer.spark.job import FINGERPRINT_COLUMN, fingerprint

    path = job.output
    if job.format == "parquet" and tables._has_delta_log(spark, path, engine):
        raise TableError(
            f"output {path!r} is a Delta table (it has a _delta_log) but --format is parquet; pass --format "
            "delta to write to it, or write to another output"
        )
    exists = tables.table_exists(spark, path, job.format, delta_engine=engine)
    if not exists:
        if job.format == "delta" and _has_data_files(path):
            raise TableError(
                f"output {path!r} exists but is not a Delta table (no _delta_log{_found(path)}); pass --format "
                "parquet to write Parquet there, or write to another output"
            )
        return
    if job.write_mode == "error":
        raise TableError(
            f"output {path!r} already exists; pass --mode append or overwrite, or --key to resume or extend it"
        )
    if job.write_mode == "overwrite":
        return
    if job.format == "delta":
        existing: Types | None = _delta_types(spark, path, engine, writing=True)
    else:
        existing = _parquet_types(spark, path) or None  # an empty directory takes any rows
    if existing is None:
        return
    if job.key is not None:
        missing = [c for c in (job.key, FINGERPRINT_COLUMN) if c not in existing]
        if missing:
            raise TableError(
                f"output {path!r} has no column(s) {missing}, so it was not written by a sparkinfer job with "
                f"--key {job.key}; write to a new output"
            )
        fp = fingerprint(job)
        others = {k: v for k, v in fingerprint_counts(spark, path, job.format, engine).items() if k != fp.id}
        if others and job.on_model_change == "refuse":
            raise model_changed(job, fp, others)
        if others:
            return  # repredict: the first chunk replaces the output
    strict = job.format == "delta" and tables.resolve_delta_engine(spark, engine) == "delta-rs"
    _check_append(job, existing, _written(job, source), strict=strict)


def _written(job: Job, source: Types) -> Types:
    """The columns (and types) this job's rows have when they are written."""
    from pyspark.sql.pandas.types import from_arrow_type

    from sparkinfer.engine.runner import output_type
    from sparkinfer.spark.job import FINGERPRINT_COLUMN

    try:
        target: str | None = from_arrow_type(output_type(job.spec)).simpleString()
    except (TypeError, ValueError, NotImplementedError):
        target = None
    return {**source, **dict.fromkeys(job.targets, target), FINGERPRINT_COLUMN: "string"}


def _check_append(job: Job, existing: Types, written: Types, *, strict: bool) -> None:
    """Refuse an append whose rows do not fit the output: new columns, other types, and for delta-rs (which
    appends only an equal schema) missing columns."""
    problems = [f"{c} is {existing[c]} in the output but {t} in this run's rows" for c, t in written.items()
                if c in existing and None not in (t, existing[c]) and t != existing[c]]
    new = [c for c in written if c not in existing]
    if new:
        problems.append(f"the output has no column(s) {new}")
    gone = [c for c in existing if c not in written] if strict else []
    if gone:
        problems.append(f"this run's rows have no column(s) {gone}")
    if problems:
        raise TableError(
            f"cannot append to output {job.output!r}: {'; '.join(problems)} (output columns {_ddl(existing)}, "
            f"rows {_ddl(written)}); select the output's columns in the input, or write to a new output"
        )


def _delta_types(spark: SparkSession, path: str, engine: DeltaEngine, *, writing: bool = False) -> Types:
    if tables.resolve_delta_engine(spark, engine) == "spark":  # Spark computes the snapshot with jobs
        return _spark_types(tables.read_table(spark, path, "delta", delta_engine="spark").schema)
    table = _deltars._open(_deltars.table_uri(path), path)
    if writing:
        _deltars._check_writable(table, path)
    return _spark_types(StructType.fromJson(json.loads(table.schema().to_json())))


def _parquet_types(spark: SparkSession, path: str) -> Types | None:
    """The schema Spark reads from a Parquet file or directory (None when nothing is there, {} for no files),
    from the first file's footer, as Spark reads it (without ``mergeSchema``)."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    fs, base = tables._filesystem(path)
    if fs is None:  # a URI pyarrow cannot open: Spark infers the schema, with a job
        if not tables.table_exists(spark, path, "parquet"):
            return None
        return _spark_types(spark.read.parquet(path).schema)
    if fs.get_file_info(base).type == pafs.FileType.NotFound:
        return None
    try:
        dataset = pads.dataset(base, filesystem=fs, format="parquet", partitioning="hive")
        if not dataset.files:
            return {}
        schema = dataset.schema
    except (pa.ArrowInvalid, OSError) as exc:
        raise TableError(f"cannot read the Parquet schema of {path!r} ({type(exc).__name__}: {exc})") from exc
    hive = _hive_columns(dataset)
    binary_as_string = (spark.conf.get("spark.sql.parquet.binaryAsString", "false") or "").lower() == "true"
    return {f.name: None if f.name in hive else _arrow_type_name(f.type, binary_as_string) for f in schema}


def _hive_columns(dataset: Any) -> set[str]:
    """The columns a Parquet dataset takes from ``name=value`` directories rather than from its files."""
    first = next(iter(dataset.get_fragments()), None)
    return set() if first is None else set(dataset.schema.names) - set(first.physical_schema.names)


def _arrow_type_name(kind: pa.DataType, binary_as_string: bool) -> str | None:
    from pyspark.sql.pandas.types import from_arrow_type

    if pa.types.is_dictionary(kind):  # pandas categoricals: Spark reads the values
        kind = kind.value_type
    if binary_as_string and (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        return "string"
    if pa.types.is_timestamp(kind):  # a footer's timestamp may be Spark's timestamp or timestamp_ntz
        return None
    try:
        return str(from_arrow_type(kind).simpleString())
    except Exception:  # PySparkTypeError for a type Spark has no counterpart of
        return None


def _spark_types(schema: StructType) -> Types:
    return {f.name: f.dataType.simpleString() for f in schema.fields}


def _delta_counts(path: str, column: str) -> dict[str | None, int] | None:
    table = _deltars._open(_deltars.table_uri(path), path)
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    return _exact_counts(
        (a.get("num_records"), a.get(f"partition.{column}", a.get(f"min.{column}")),
         a.get(f"partition.{column}", a.get(f"max.{column}")),
         0 if f"partition.{column}" in a else a.get(f"null_count.{column}"))
        for a in actions
    )


def _parquet_counts(path: str, column: str) -> dict[str | None, int] | None:
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    fs, base = tables._filesystem(path)
    if fs is None:
        return None
    dataset = pads.dataset(base, filesystem=fs, format="parquet", partitioning="hive")
    if not dataset.files or column in _hive_columns(dataset):
        return None  # partitioned by the fingerprint itself (rare): it is not in the footers

    def groups(file: str) -> list[tuple[Any, Any, Any, Any]]:
        metadata = pq.read_metadata(file, filesystem=fs)
        names = metadata.schema.names
        if column not in names:
            return [(None, None, None, None)]
        index = names.index(column)
        found = []
        for i in range(metadata.num_row_groups):
            group = metadata.row_group(i)
            stats = group.column(index).statistics
            if stats is None or not stats.has_null_count:
                found.append((None, None, None, None))
            elif stats.has_min_max:
                found.append((group.num_rows, stats.min, stats.max, stats.null_count))
            else:
                found.append((group.num_rows, None, None, stats.null_count))
        return found

    with ThreadPoolExecutor(_FOOTER_THREADS) as pool:  # one footer read per file: latency-bound on object stores
        return _exact_counts(g for file_groups in pool.map(groups, dataset.files) for g in file_groups)


def _exact_counts(parts: Any) -> dict[str | None, int] | None:
    """Rows per value from (rows, min, max, nulls) of each file or row group; None unless each holds one value
    (or only nulls)."""
    counts: dict[str | None, int] = {}
    for rows, low, high, nulls in parts:
        if rows is None or nulls is None:
            return None
        rows, nulls = int(rows), int(nulls)
        if nulls:
            counts[None] = counts.get(None, 0) + nulls
        if rows > nulls:
            if low is None or low != high:
                return None
            value = low.decode() if isinstance(low, bytes) else str(low)
            counts[value] = counts.get(value, 0) + rows - nulls
    return counts


def _has_data_files(path: str) -> bool:
    """Whether `path` is a file, or a directory holding entries other than hidden ones (``.x``, ``_x``)."""
    import pyarrow.fs as pafs

    fs, base = tables._filesystem(path)
    if fs is None:
        return False
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.File:
        return True
    if info.type != pafs.FileType.Directory:
        return False
    entries = fs.get_file_info(pafs.FileSelector(base))
    return any(not e.base_name.startswith((".", "_")) for e in entries)


def _found(path: str) -> str:
    return "" if _has_data_files(path) else "; the path does not exist or holds no data files"


def _ddl(types: Types) -> str:
    return "<" + ", ".join(f"{c}: {t or '?'}" for c, t in types.items()) + ">"


# ---------------------------------------------------------------------------------------------- model


def _check_model(spark: SparkSession, spec: ModelSpec) -> None:
    """Find the model on the driver and check it; skip (with a log line) one that only executors have."""
    from sparkinfer.engine import inspect_model

    name = spec.model
    if sources.is_remote(name):  # listed and its config read, not downloaded
        inspect_model.check_files(*sources.describe(spec), spec)
        return
    local = Path(name).expanduser()
    if local.is_dir():
        inspect_model.check_model_dir(local, spec)
        return
    if local.exists():
        raise ModelLoadError(f"ModelSpec.model must be a model directory (got {name!r}, a file); pass the directory "
                             "save_pretrained wrote")
    conf = _conf(spark)
    archives = _archive_names(spark, conf)
    if name in archives:
        unpacked = _driver_copy(name)
        if unpacked is not None:  # local mode unpacks archives on the driver too
            inspect_model.check_model_dir(unpacked, spec)
        else:
            log.info("sparkinfer: the model %r is the archive %s (%s), which only the executors unpack; it is "
                     "checked there, as they load it", name, archives[name][1], archives[name][0])
        return
    hub_id = inspect_model.is_hub_id(name)
    if hub_id:
        snapshot = inspect_model.cached_snapshot(spec)
        if snapshot is not None:
            inspect_model.check_model_dir(snapshot, spec)
            return
    mount = _executor_mount(conf, local) if local.is_absolute() else None
    if mount is not None or os.environ.get(MODEL_ON_EXECUTORS_ENV) == "1":
        why = f"under the executor volume mount {mount}" if mount else f"{MODEL_ON_EXECUTORS_ENV}=1"
        log.info("sparkinfer: the model %r is not on the driver (%s); it is checked on the executors, as they "
                 "load it", name, why)
        return
    if hub_id and not inspect_model.hub_offline():
        log.info("sparkinfer: the model %r is not a directory on the driver nor in its Hugging Face cache; the "
                 "executors download it from the hub, and check it then (set HF_HUB_OFFLINE=1 to require the "
                 "cache)", name)
        return
    looked = "no such directory on the driver"
    if hub_id:
        looked += ", not in its Hugging Face cache (offline: HF_HUB_OFFLINE=1)"
    if not local.is_absolute():
        looked += f", and no --archives archive of that name ({', '.join(sorted(archives)) or 'none shipped'})"
    raise ModelLoadError(
        f"ModelSpec.model must be a model directory, a hub id in the local Hugging Face cache or the name of an "
        f"archive shipped with --archives (got {name!r}: {looked}); pass an existing directory or download the "
        f"model beforehand, or, if it exists only on the executors, set {MODEL_ON_EXECUTORS_ENV}=1"
    )


def _conf(spark: SparkSession) -> dict[str, str]:
    """The session's configuration, Spark's and SQL's, as far as it can be listed, and the archive keys read
    one by one: before PySpark 4.0 the listing is the SparkContext's conf alone (nothing on Spark Connect), which
    misses what was set on the session; ``spark.conf.get`` answers on every version and on Connect."""
    conf: dict[str, str] = {}
    try:
        conf.update({str(k): str(v) for k, v in spark.sparkContext.getConf().getAll()})
    except Exception:  # Spark Connect: no SparkContext
        pass
    try:
        conf.update({str(k): str(v) for k, v in spark.conf.getAll.items()})  # PySpark >= 4.0, classic and Connect
    except Exception:
        pass
    for key in _ARCHIVE_CONFS:
        try:
            value = spark.conf.get(key, None)
        except Exception:  # a conf the session refuses to read
            value = None
        if value:
            conf[key] = str(value)
    return conf


def _archive_names(spark: SparkSession, conf: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Name → (conf key, archive) of every archive shipped to the executors: the ``#name`` fragment, else the
    archive's file name (the directory YARN and Kubernetes unpack it into)."""
    found: list[tuple[str, str]] = [(key, entry) for key in _ARCHIVE_CONFS for entry in conf.get(key, "").split(",")]
    try:
        found += [("SparkContext.addArchive", entry) for entry in spark.sparkContext.listArchives]
    except Exception:  # Spark Connect: no SparkContext
        pass
    names = {}
    for key, entry in found:
        entry = entry.strip()
        if entry:
            location, _, fragment = entry.partition("#")
            names[fragment or location.rstrip("/").rsplit("/", 1)[-1]] = (key, entry)
    return names


def _driver_copy(name: str) -> Path | None:
    """The archive's directory in the driver's SparkFiles root (local mode unpacks archives there), if any."""
    try:
        from pyspark import SparkFiles

        candidate = Path(SparkFiles.getRootDirectory()) / name
    except Exception:  # no SparkContext (Spark Connect)
        return None
    return candidate if candidate.is_dir() else None


def _executor_mount(conf: Mapping[str, str], path: Path) -> str | None:
    """The Kubernetes executor volume mount (``spark.kubernetes.executor.volumes.*.*.mount.path``) that holds
    `path`, if any: such a model is on the executors' file system, not the driver's."""
    prefix, suffix = _EXECUTOR_MOUNT
    for key, mount in conf.items():
        if key.startswith(prefix) and key.endswith(suffix) and mount.startswith("/"):
            root = mount.rstrip("/") or "/"
            if str(path) == root or str(path).startswith(root.rstrip("/") + "/"):
                return root
    return None
