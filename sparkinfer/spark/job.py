"""The prediction job: read a table, add prediction columns, write a table, survive being killed halfway.

Run it with ``spark-submit scripts/predict_table.py --input ... --output ... --model ... --task ...`` or
``sparkinfer run ...`` (same options; ``--help`` lists them all), or call `run(spark, job)`.

Resume and increments (``--key id``): every output row carries the fingerprint of the model that predicted
it (`FINGERPRINT_COLUMN`). A run predicts only the input rows whose key the output does not hold yet, in
chunks of ``--chunk-rows`` rows, each committed on its own (one Delta transaction, or one Spark Parquet
job), so a run killed at any point loses at most the chunk in flight, and running it again finishes every
key exactly once. Output rows from another fingerprint are refused, or re-predicted with
``--on-model-change repredict``, whose first chunk replaces the whole output.

The run report (rows, tokens, padding, truncation, load time, throughput, fingerprint) is printed and
written as JSON; the engine's counters reach the driver inside the rows themselves (see ``_frame.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkinfer.engine.metrics import Metrics
from sparkinfer.errors import SparkInferError, SpecError, TableError
from sparkinfer.spark import _cli, tables
from sparkinfer.spark._frame import METRICS_COLUMN, metric_columns, observed_metrics, predict_columns
from sparkinfer.spark.tables import DeltaEngine, ReadFormat, WriteFormat, WriteMode
from sparkinfer.spark.udf import prompt, template_columns
from sparkinfer.spec import ModelSpec, Task

log = logging.getLogger("sparkinfer")

OnModelChange = Literal["refuse", "repredict"]

FINGERPRINT_COLUMN = "sparkinfer_fingerprint"
_PROMPT_COLUMN = "_sparkinfer_prompt"  # the rendered --prompt-template, dropped before writing
# Fields that change how fast or how safely a model runs, or when a task gives up, not what it predicts.
_NOT_FINGERPRINTED = frozenset(
    {"batch_tokens", "max_batch_size", "buffer_rows", "device", "trust_remote_code", "allow_pickle", "overlap",
     "max_error_rate", "host"}
)


@dataclass(frozen=True, kw_only=True)
class Job:
    """One run of the prediction job.

    Args:
        input: Input table: a Delta or Parquet directory/URI, or a catalog table name.
        output: Output table directory or URI.
        spec: The model and its options.
        input_cols: Text column(s) to predict; each gets its own output column.
        prompt_template: Predict one input built from several columns with `sparkinfer.prompt` (e.g. for
            generation, ``"Summarize {title}: {body}"``) instead of `input_cols`, which then stays at its default.
        output_cols: Output column per input column; empty takes ``embedding``/``prediction`` (prefixed by the
            input's name when there are several).
        format: Output format, ``"delta"`` or ``"parquet"``.
        input_format: ``"auto"``, ``"delta"`` or ``"parquet"``.
        mode: ``"error"``, ``"append"`` or ``"overwrite"``; ``None`` is ``"error"``, or ``"append"`` with `key`
            (the only mode a resumable run can have).
        key: Unique, non-null row key that makes the run resumable and incremental.
        partition_by: Output partition columns.
        chunk_rows: With `key`: rows predicted and committed together.
        partitions: Repartition each chunk into this many tasks; ``None`` keeps the input's partitioning.
        on_model_change: With `key`, when the output holds rows of another fingerprint: ``"refuse"`` or
            ``"repredict"`` (predict every input row again; the first chunk replaces the output).
        report: Path of the run report JSON; ``None`` writes ``<output>.report.json``.
        delta_engine: ``"auto"``, ``"spark"`` or ``"delta-rs"``.

    Raises:
        SpecError: For an invalid value or combination.
    """

    input: str
    output: str
    spec: ModelSpec
    input_cols: tuple[str, ...] = ("text",)
    prompt_template: str | None = None
    output_cols: tuple[str, ...] = ()
    format: WriteFormat = "delta"
    input_format: ReadFormat = "auto"
    mode: WriteMode | None = None
    key: str | None = None
    partition_by: tuple[str, ...] = ()
    chunk_rows: int = 100_000
    partitions: int | None = None
    on_model_change: OnModelChange = "refuse"
    report: str | None = None
    delta_engine: DeltaEngine = "auto"

    def __post_init__(self) -> None:
        for name in ("input", "output"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise SpecError(f"Job.{name} must be a non-empty path (got {getattr(self, name)!r})")
        if not isinstance(self.spec, ModelSpec):
            raise SpecError(f"Job.spec must be a ModelSpec (got {type(self.spec).__name__})")
        for name in ("input_cols", "output_cols", "partition_by"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(c, str) and c for c in value):
                raise SpecError(f"Job.{name} must be a tuple of column names (got {value!r})")
            if len(set(value)) != len(value):
                raise SpecError(f"Job.{name} must not repeat a column (got {value!r})")
        if not self.input_cols:
            raise SpecError("Job.input_cols must name at least one text column (got ())")
        if self.prompt_template is not None:
            template_columns(self.prompt_template)  # a malformed template is a SpecError now, not in a task
            if self.input_cols != ("text",):
                raise SpecError(
                    f"Job.prompt_template replaces input_cols (got both: input_cols={self.input_cols!r}, "
                    f"prompt_template={self.prompt_template!r}); name the columns in the template"
                )
        if self.output_cols and len(self.output_cols) != len(self.input_cols):
            raise SpecError(
                f"Job.output_cols must name one column per input column (got {len(self.output_cols)} for "
                f"{len(self.input_cols)}: {self.output_cols!r} for {self.input_cols!r})"
            )
        for name, allowed in (("format", WriteFormat), ("input_format", ReadFormat),
                              ("on_model_change", OnModelChange), ("delta_engine", DeltaEngine)):
            if getattr(self, name) not in get_args(allowed):
                raise SpecError(f"Job.{name} must be one of {get_args(allowed)} (got {getattr(self, name)!r})")
        if self.mode is not None and self.mode not in get_args(WriteMode):
            raise SpecError(f"Job.mode must be one of {get_args(WriteMode)} or None (got {self.mode!r})")
        if self.key is not None and self.mode not in (None, "append"):
            raise SpecError(
                f"Job.mode must be 'append' with a key (got mode={self.mode!r}, key={self.key!r}): a resumable "
                "run appends chunk by chunk; to start over, delete the output or use on_model_change='repredict'"
            )
        if self.key is not None and (not isinstance(self.key, str) or not self.key):
            raise SpecError(f"Job.key must be a column name or None (got {self.key!r})")
        for name, optional in (("chunk_rows", False), ("partitions", True)):
            value = getattr(self, name)
            if (value is not None or not optional) and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise SpecError(f"Job.{name} must be a positive int{' or None' if optional else ''} (got {value!r})")
        reserved = {FINGERPRINT_COLUMN, METRICS_COLUMN, *(c for c in (self.key,) if c)}
        clash = sorted(reserved & set(self.targets))
        if clash:
            raise SpecError(f"Job.output_cols must not be {clash}: the key and sparkinfer's own columns are kept")

    @property
    def targets(self) -> tuple[str, ...]:
        """The output column of each input column."""
        if self.output_cols:
            return self.output_cols
        name = "embedding" if self.spec.task == "embedding" else "prediction"
        return (name,) if len(self.input_cols) == 1 else tuple(f"{c}_{name}" for c in self.input_cols)

    @property
    def sources(self) -> tuple[str, ...]:
        """The input columns the job reads: `input_cols`, or the columns `prompt_template` names."""
        if self.prompt_template is None:
            return self.input_cols
        return tuple(dict.fromkeys(template_columns(self.prompt_template)))

    @property
    def write_mode(self) -> WriteMode:
        """`mode`, with its default filled in."""
        return self.mode or ("append" if self.key else "error")

    @property
    def report_path(self) -> str:
        """Where the run report goes."""
        return self.report or f"{self.output.rstrip('/')}.report.json"


@dataclass(frozen=True)
class Fingerprint:
    """What determines a job's predictions: the model, its prediction-relevant options, the input columns.

    Attributes:
        id: A short hash of `fields`, stored in every output row.
        fields: The fingerprinted values (ModelSpec fields that differ from their defaults, plus the model,
            the task and the input columns), as JSON-able data.
    """

    id: str
    fields: dict[str, Any]


def fingerprint(job: Job) -> Fingerprint:
    """The job's model fingerprint.

    Batching and placement fields are left out (they change speed, not predictions), and so are fields at
    their defaults, so that a sparkinfer release adding a spec field does not change existing fingerprints.
    A local model directory is made absolute. A model replaced in place at the same path and revision keeps
    its fingerprint: version model paths, or pin `revision`.
    """
    spec = job.spec.cache_key
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if f.name in _NOT_FINGERPRINTED or (f.name not in ("model", "task") and value == f.default):
            continue
        fields[f.name] = _jsonable(value)
    if os.path.isdir(spec.model):
        fields["model"] = os.path.abspath(spec.model)
    fields["input_cols"] = list(job.sources)
    if job.prompt_template is not None:
        fields["prompt_template"] = job.prompt_template
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return Fingerprint(digest, fields)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class RunReport:
    """What a run did. `to_dict` gives the JSON the job prints and writes.

    Attributes:
        job: The job that ran.
        fingerprint: Its model fingerprint.
        rows_in: Input rows.
        rows_out: Rows written by this run.
        rows_skipped: Input rows whose key the output already held from the same fingerprint.
        rows_replaced: Output rows of other fingerprints that a ``repredict`` run replaced.
        chunks: Chunks committed.
        metrics: The engine's counters summed over every task (and every input column).
        seconds: Wall time of the whole run on the driver.
        predict_seconds: Wall time of the chunks: prediction, writing and commits.
        delta_versions: Delta versions committed through delta-rs, in order.
        delta_engine: The Delta engine the run used (``"spark"`` or ``"delta-rs"``).
    """

    job: Job
    fingerprint: Fingerprint
    rows_in: int
    rows_out: int
    rows_skipped: int
    rows_replaced: int
    chunks: int
    metrics: Metrics
    seconds: float
    predict_seconds: float
    delta_versions: tuple[int, ...] = field(default=())
    delta_engine: str = "delta-rs"

    @property
    def errors(self) -> int:
        """Rows whose prediction failed and were answered per row (``on_error="null"`` or ``"column"``)."""
        return self.metrics.error_rows

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able data."""
        seconds = self.predict_seconds
        return {
            "input": self.job.input,
            "output": self.job.output,
            "format": self.job.format,
            "key": self.job.key,
            "fingerprint": self.fingerprint.id,
            "fingerprint_fields": self.fingerprint.fields,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_skipped": self.rows_skipped,
            "rows_replaced": self.rows_replaced,
            "errors": self.errors,
            "real_tokens": self.metrics.real_tokens,
            "padded_tokens": self.metrics.padded_tokens,
            "padding_efficiency": self.metrics.padding_efficiency,
            "truncated_rows": self.metrics.truncated_rows,
            "model_load_seconds": self.metrics.model_load_seconds,
            "rows_per_second": self.rows_out / seconds if seconds > 0 else 0.0,
            "tokens_per_second": self.metrics.real_tokens / seconds if seconds > 0 else 0.0,
            "seconds": self.seconds,
            "predict_seconds": seconds,
            "chunks": self.chunks,
            "delta_versions": list(self.delta_versions),
            "delta_engine": self.delta_engine,
            "engine": self.metrics.to_dict(),
            **self._constrained(),
        }

    def _constrained(self) -> dict[str, Any]:
        """For constrained decoding: rows per status, and the share of forward time spent on token masks."""
        m = self.metrics
        if not m.constrained_rows:
            return {}
        ok = m.constrained_rows - m.truncated_outputs - m.invalid_outputs
        return {
            "statuses": {"ok": ok, "truncated": m.truncated_outputs, "invalid": m.invalid_outputs},
            "mask_share": m.mask_seconds / m.forward_seconds if m.forward_seconds > 0 else 0.0,
        }


def run(spark: SparkSession, job: Job) -> RunReport:
    """Run `job` on `spark` and return its report (the caller prints or writes it).

    Raises:
        TableError: When the output exists and the mode forbids it, when the output holds rows from another
            fingerprint and ``on_model_change="refuse"``, or when the key is null or repeated in the input.
        SpecError: When an input column is missing or not a string column.
    """
    from pyspark import TaskContext

    if TaskContext.get() is not None:
        raise RuntimeError("sparkinfer.spark.job.run runs on the driver, not inside a Spark task")
    started = time.perf_counter()
    fp = fingerprint(job)
    engine = tables.resolve_delta_engine(spark, job.delta_engine)  # decided once, not per chunk
    source = tables.read_table(spark, job.input, job.input_format, delta_engine=engine)
    _check_input(source, job)
    exists = tables.table_exists(spark, job.output, job.format, delta_engine=engine)
    mode = job.write_mode
    if exists and mode == "error":
        raise TableError(
            f"output {job.output!r} already exists; pass --mode append or overwrite, or --key to resume or "
            "extend it"
        )
    done: DataFrame | None = None
    replaced, first_mode = 0, mode
    if job.key is not None and exists:
        done, replaced, first_mode = _resume(spark, job, fp, engine)
    if job.key is not None:
        todo_rows, rows_in = _plan(source, done, job.key)
        chunks = math.ceil(todo_rows / job.chunk_rows)
        chunks = max(chunks, 1) if first_mode == "overwrite" else chunks
    else:
        todo_rows, rows_in, chunks = -1, -1, 1
    log.info("sparkinfer: %s → %s, %s row(s) to predict in %d chunk(s), fingerprint %s", job.input, job.output,
             "all" if todo_rows < 0 else todo_rows, chunks, fp.id)

    total, rows_out, versions = Metrics(), 0, []
    predict_started = time.perf_counter()
    for index in range(chunks):
        chunk_started = time.perf_counter()
        rows, metrics, version = _run_chunk(job, fp, engine, source, done, index, chunks,
                                            first_mode if index == 0 else "append")
        total, rows_out = total + metrics, rows_out + rows
        versions += [version] if version is not None else []
        seconds = time.perf_counter() - chunk_started
        log.info("sparkinfer: chunk %d/%d committed: %d rows in %.1fs (%.0f rows/s)%s", index + 1, chunks, rows,
                 seconds, rows / seconds if seconds else 0.0, "" if version is None else f", Delta version {version}")
    predict_seconds = time.perf_counter() - predict_started
    rows_in = rows_out if rows_in < 0 else rows_in
    skipped = rows_in - (todo_rows if todo_rows >= 0 else rows_out)
    return RunReport(job, fp, rows_in, rows_out, skipped, replaced, chunks, total,
                     time.perf_counter() - started, predict_seconds, tuple(versions), engine)


def _resume(
    spark: SparkSession, job: Job, fp: Fingerprint, engine: DeltaEngine
) -> tuple[DataFrame | None, int, WriteMode]:
    """What an existing keyed output means for this run: (keys done, rows to replace, first chunk's mode).

    Raises:
        TableError: When the output lacks the key or fingerprint column, or holds rows of other fingerprints
            and ``on_model_change`` is ``"refuse"``.
    """
    assert job.key is not None
    existing = tables.read_table(spark, job.output, job.format, delta_engine=engine)
    missing = [c for c in (job.key, FINGERPRINT_COLUMN) if c not in existing.columns]
    if missing:
        raise TableError(
            f"output {job.output!r} has no column(s) {missing}, so it was not written by a sparkinfer job with "
            f"--key {job.key}; write to a new output"
        )
    by_fingerprint = {r[0]: int(r[1]) for r in existing.groupBy(FINGERPRINT_COLUMN).count().collect()}
    others = {k: v for k, v in by_fingerprint.items() if k != fp.id}
    if not others:
        return existing.select(job.key), 0, "append"
    if job.on_model_change == "refuse":
        raise TableError(
            f"output {job.output!r} holds rows predicted with another model fingerprint "
            f"({', '.join(f'{k}: {v} rows' for k, v in sorted(others.items(), key=str))}); this run's is "
            f"{fp.id} ({json.dumps(fp.fields, sort_keys=True)}); pass --on-model-change repredict "
            "to predict every row again and replace the output, or write to another output"
        )
    replaced = sum(others.values())
    log.warning("sparkinfer: model fingerprint changed; re-predicting %s and replacing %d row(s)", job.input, replaced)
    # Every input row again, and the first chunk replaces the output: a crash after it leaves only rows of
    # this fingerprint, which the next run resumes from.
    return None, replaced, "overwrite"


def _check_input(source: DataFrame, job: Job) -> None:
    missing = [c for c in (*job.sources, *(c for c in (job.key,) if c)) if c not in source.columns]
    if missing:
        raise SpecError(f"input {job.input!r} has no column(s) {missing} (got columns {source.columns})")
    if job.prompt_template is None:  # a template casts its columns to string itself
        types = dict(source.dtypes)
        wrong = {c: types[c] for c in job.input_cols if types[c] != "string"}
        if wrong:
            raise SpecError(
                f"--input-col must name string columns (got {wrong} in {job.input!r}); cast them when you write "
                "the input, or name them in --prompt-template '{col}', which casts to string"
            )
    out_columns = set(source.columns) | set(job.targets) | {FINGERPRINT_COLUMN}
    absent = [c for c in job.partition_by if c not in out_columns]
    if absent:
        raise SpecError(f"--partition-by {absent} is not an output column (got {sorted(out_columns)})")


def _plan(source: DataFrame, done: DataFrame | None, key: str) -> tuple[int, int]:
    """Rows still to predict and input rows; refuses null or repeated keys, which would break exactly-once."""
    todo = source if done is None else source.join(done, on=key, how="left_anti")
    row = todo.agg(
        F.count(F.lit(1)).alias("rows"), F.count(key).alias("keyed"), F.count_distinct(key).alias("distinct")
    ).first()
    assert row is not None  # a global aggregate always has one row
    rows, keyed, distinct = int(row["rows"]), int(row["keyed"]), int(row["distinct"])
    if keyed < rows:
        raise TableError(f"--key {key}: {rows - keyed} input row(s) to predict have a null key; fill or drop them")
    if distinct < keyed:
        raise TableError(
            f"--key {key} must be unique in the input: {keyed} rows to predict hold {distinct} distinct keys; "
            "deduplicate the input or choose another key"
        )
    return rows, (rows if done is None else source.count())


def _run_chunk(
    job: Job,
    fp: Fingerprint,
    engine: DeltaEngine,
    source: DataFrame,
    done: DataFrame | None,
    index: int,
    chunks: int,
    mode: WriteMode,
) -> tuple[int, Metrics, int | None]:
    from pyspark.sql import Observation

    rows, skip = source, done
    if job.key is not None and chunks > 1:
        # Chunks are hash buckets of the key: disjoint, about equal, and the same whichever rows are done.
        bucket = F.pmod(F.xxhash64(F.col(job.key)), F.lit(chunks)) == index
        rows = rows.where(bucket)
        skip = skip.where(bucket) if skip is not None else None
    if job.key is not None and skip is not None:
        rows = rows.join(skip, on=job.key, how="left_anti")
    if job.partitions is not None:
        rows = rows.repartition(job.partitions)
    if job.prompt_template is None:
        predicted = predict_columns(rows, job.spec, list(zip(job.input_cols, job.targets)))
    else:
        prompted = rows.withColumn(_PROMPT_COLUMN, prompt(job.prompt_template))
        predicted = predict_columns(prompted, job.spec, [(_PROMPT_COLUMN, job.targets[0])]).drop(_PROMPT_COLUMN)
    observation = Observation()
    observed = (
        predicted.withColumn(FINGERPRINT_COLUMN, F.lit(fp.id))
        .observe(observation, *metric_columns())
        .drop(METRICS_COLUMN)
    )
    metadata = {"sparkinfer": {"fingerprint": fp.id, "chunk": index + 1, "chunks": chunks}}
    version = tables.write(observed, job.output, job.format, mode, partition_by=job.partition_by,
                           delta_engine=engine, commit_metadata=metadata)
    rows_out, metrics = observed_metrics(observation.get)
    return rows_out, metrics, version


def write_report(report: RunReport, path: str) -> None:
    """Write the report JSON to a local path or any URI pyarrow can open."""
    import pyarrow.fs as pafs

    text = json.dumps(report.to_dict(), indent=2)
    fs, inner = pafs.FileSystem.from_uri(path if "://" in path else os.path.abspath(path))
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(inner) as stream:
        stream.write(text.encode())


# ------------------------------------------------------------------------------------------ command line

_CHOICES: dict[str, tuple[str, ...]] = {
    "task": get_args(Task),
    "format": get_args(WriteFormat),
    "input_format": get_args(ReadFormat),
    "mode": get_args(WriteMode),
    "on_model_change": get_args(OnModelChange),
    "delta_engine": get_args(DeltaEngine),
}
_JOB_FIELDS = {"input_col": "input_cols", "output_col": "output_cols", "partition_by": "partition_by"}


def parse_args(argv: Sequence[str], prog: str = "sparkinfer run") -> tuple[Job, str | None]:
    """The job and the session to run it on, from a command line (and its ``--config`` file).

    The second value is ``--master`` or, for Spark Connect, ``--remote`` (an ``sc://`` URL); ``None`` lets
    `main` choose (spark-submit's session, ``SPARK_REMOTE``, or ``local[*]``).

    Raises:
        SystemExit: With status 2 and one line on stderr, for an unknown or malformed option.
        SpecError: For a value the job or the ModelSpec rejects.
    """
    parser = _cli.build_parser(prog, _CHOICES, description=(__doc__ or "").split("\n\n")[0])
    given = vars(parser.parse_args(argv))
    known = _cli.option_names()
    options = _cli.load_config(given["config"], known) if "config" in given else {}
    for name, value in options.items():
        if name in _cli.spec_field_names():
            options[name] = _cli.coerce_spec_option(name, value)
    options.update({k: v for k, v in given.items() if k != "config"})
    required = [f"--{n}" for n in ("input", "output", "model", "task") if n not in options]
    if required:
        parser.error(f"the following options are required: {', '.join(required)}")
    spec_options = {k: options.pop(k) for k in list(options) if k in _cli.spec_field_names()}
    spec = ModelSpec(str(options.pop("model")), task=options.pop("task"), **spec_options)
    master, remote = options.pop("master", None), options.pop("remote", None)
    if master is not None and remote is not None:
        parser.error(f"--master and --remote are exclusive (got --master {master} --remote {remote}); a Spark "
                     "Connect server has its own master")
    if remote is not None and not remote.startswith("sc://"):
        parser.error(f"--remote must be a Spark Connect URL sc://host:port (got {remote!r})")
    master = remote or master
    job_options: dict[str, Any] = {}
    for name, value in options.items():
        if name in _JOB_FIELDS:  # column lists: a config file may give one name as a plain string
            job_options[_JOB_FIELDS[name]] = (value,) if isinstance(value, str) else tuple(value)
        else:
            job_options[name] = value
    return Job(spec=spec, **job_options), master


def main(argv: Sequence[str] | None = None, *, prog: str = "sparkinfer run") -> int:
    """The job's entry point: parse, run on a Spark session, print and write the report.

    Returns:
        0 on success, 2 for a bad option or value (one line on stderr), 1 when the run fails.
    """
    try:
        job, master = parse_args(sys.argv[1:] if argv is None else argv, prog)
    except SpecError as exc:
        return _cli.fail(prog, str(exc))
    try:
        with _progress_log():
            report = run(_session(master), job)
    except SparkInferError as exc:
        return _cli.fail(prog, f"{type(exc).__name__}: {exc}", 1)
    except Exception as exc:
        traceback.print_exc()
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return _cli.fail(prog, f"the run failed: {last}", 1)
    print(json.dumps(report.to_dict(), indent=2))
    try:
        write_report(report, job.report_path)
    except OSError as exc:
        return _cli.fail(prog, f"the run succeeded but its report could not be written to {job.report_path}: {exc}", 1)
    print(f"report written to {job.report_path}", file=sys.stderr)
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """The ``sparkinfer`` console script: ``sparkinfer run [options]``."""
    command, rest = _cli.split_subcommand(sys.argv[1:] if argv is None else argv)
    if command == "run":
        return main(rest, prog="sparkinfer run")
    if command is None and rest and rest[0] in ("-h", "--help"):
        print("usage: sparkinfer run [options]\n\n  run    predict a table into a table (sparkinfer run --help)")
        return 0
    return _cli.fail("sparkinfer", f"expected a command: run (got {command or ' '.join(rest) or 'nothing'}); "
                     "see sparkinfer run --help")


def _session(master: str | None) -> SparkSession:
    """A Spark Connect session for an ``sc://`` URL, else a classic one on `master`."""
    if master is not None and master.startswith("sc://"):
        return SparkSession.builder.remote(master).getOrCreate()
    builder = SparkSession.builder.appName("sparkinfer-run").config("spark.ui.showConsoleProgress", "true")
    launched = "PYSPARK_GATEWAY_PORT" in os.environ or "SPARK_REMOTE" in os.environ  # spark-submit, Connect
    chosen = master or (None if launched else "local[*]")
    if chosen is not None:
        builder = builder.master(chosen)
        if chosen.startswith("local"):
            # Local Python workers must run this interpreter: its environment has sparkinfer.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return builder.getOrCreate()


@contextlib.contextmanager
def _progress_log() -> Iterator[None]:
    """Log sparkinfer's INFO lines (one per chunk) to stderr while the command runs, then restore the logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


if __name__ == "__main__":
    raise SystemExit(main())
