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

from sparkinfer.engine import sources
from sparkinfer.engine.metrics import Metrics
from sparkinfer.errors import SparkInferError, SpecError, TableError
from sparkinfer.spark import _cli, partitioning, preflight, publish, tables
from sparkinfer.spark import progress as progress_
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
        partitions: Repartition each chunk into this many tasks; ``None`` chooses from the rows to predict and the
            cluster's task slots (`partitioning.partitions_for`: a task per slot at least, up to three waves,
            full ``buffer_rows``), keeping the input's own partitioning when it already suits.
        on_model_change: With `key`, when the output holds rows of another fingerprint: ``"refuse"`` or
            ``"repredict"`` (predict every input row again; the first chunk replaces the output).
        report: Path of the run report JSON; ``None`` writes ``<output>.report.json``.
        delta_engine: ``"auto"``, ``"spark"`` or ``"delta-rs"``.
        validate: Write-audit-publish (``spark/publish.py``): stage the predictions beside the output,
            validate them against the published output, and publish them in one Delta commit only when no
            error-level check fails. ``""`` runs the default checks; a path names a YAML checks file
            (``sparkinfer.validation.checks``). None (the default) writes to the output directly.
        progress_interval: Seconds between progress lines (rows done and to do, rows/s, tokens/s, ETA) while
            predicting; a notebook shows a bar instead. 0 turns progress off. See ``spark/progress.py``.

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
    validate: str | None = None
    progress_interval: float = 30.0

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
        if isinstance(self.progress_interval, bool) or not isinstance(self.progress_interval, (int, float)) or not (
            0 <= self.progress_interval < math.inf
        ):
            raise SpecError(f"Job.progress_interval must be seconds >= 0, 0 for no progress (got "
                            f"{self.progress_interval!r})")
        if self.validate is not None:
            if not isinstance(self.validate, str):
                raise SpecError(f"Job.validate must be a checks file path, '' for the default checks, or None "
                                f"(got {self.validate!r})")
            if self.format != "delta":
                raise SpecError(f"--validate needs --format delta (got {self.format!r}): publishing the validated "
                                "rows is one Delta commit, which Parquet cannot give")
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

    def beside_report(self, suffix: str) -> str:
        """A path next to the run report: ``OUTPUT.report.json`` → ``OUTPUT`` + `suffix`."""
        path = self.report_path
        for ending in (".report.json", ".json"):
            if path.endswith(ending):
                return path[: -len(ending)] + suffix
        return path + suffix


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
    its fingerprint: version model paths, or pin `revision`. A remote model (object storage, the MLflow
    registry) is pinned by `preflight.pin` first: its revision (a digest of the store's ETags or version ids,
    or the registry's model version) is in the fingerprint, so a changed object or a moved alias changes it.
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
        validation: With ``--validate``: the verdict, the failed checks, where the reports and the review
            sample went, and the published version (None when not published).
        partitioning: How many tasks each chunk ran as, and why (`partitioning.Partitioning.to_dict`).
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
    validation: dict[str, Any] | None = None
    partitioning: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        """False when ``--validate`` found an error-level failure (the rows stay staged)."""
        return self.validation is None or bool(self.validation["passed"])

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
            "duplicate_rows": self.metrics.duplicate_rows,
            "model_load_seconds": self.metrics.model_load_seconds,
            "rows_per_second": self.rows_out / seconds if seconds > 0 else 0.0,
            "tokens_per_second": self.metrics.real_tokens / seconds if seconds > 0 else 0.0,
            "seconds": self.seconds,
            "predict_seconds": seconds,
            "chunks": self.chunks,
            "delta_versions": list(self.delta_versions),
            "delta_engine": self.delta_engine,
            "engine": self.metrics.to_dict(),
            "partitioning": self.partitioning,
            **self._constrained(),
            **({"validation": self.validation} if self.validation is not None else {}),
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
    # A remote model's revision is resolved once: every chunk's tasks load it, and the fingerprint holds it.
    return _run_pinned(spark, preflight.pin(job))


def _run_pinned(spark: SparkSession, job: Job) -> RunReport:
    preflight.check(spark, job)  # everything that can fail before a Spark job fails here
    if sources.is_remote(job.spec.model):
        log.info("sparkinfer: model %s at revision %s", job.spec.model, job.spec.revision)
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
    stage, state, target = None, None, job.output
    if job.validate is not None:
        stage, state, done = _staging(spark, job, fp, engine, exists, done, first_mode)
        target, first_mode = stage.path, "append"  # a fresh staging table; publishing applies the mode
    if state is not None and state.complete:
        todo_rows, rows_in, chunks = 0, 0, 0
        log.info("sparkinfer: every row is staged in %s already; validating it", target)
    elif job.key is not None:
        todo_rows, rows_in = _plan(source, done, job.key)
        chunks = math.ceil(todo_rows / job.chunk_rows)
        chunks = max(chunks, 1) if first_mode == "overwrite" else chunks
    else:
        todo_rows = rows_in = source.count()  # Parquet and Delta answer from metadata; sizes tasks and progress
        chunks = 1
    log.info("sparkinfer: %s → %s, %d row(s) to predict in %d chunk(s), fingerprint %s", job.input, target,
             todo_rows, chunks, fp.id)

    total, rows_out, versions, layout = Metrics(), 0, [], None
    slots = partitioning.task_slots(spark) if chunks else 1
    predict_started = time.perf_counter()
    with _progress(spark, job, todo_rows if chunks else 0) as progress:
        for index in range(chunks):
            chunk_started = time.perf_counter()
            share = math.ceil(todo_rows / chunks)  # chunks are hash buckets of about equal size
            address = progress.start_chunk(index) if progress is not None else None
            rows, metrics, version, choice = _run_chunk(
                job, fp, engine, source, done, index, chunks, first_mode if index == 0 else "append", target,
                slots=slots, rows_hint=share, progress=address,
            )
            layout = layout or choice
            total, rows_out = total + metrics, rows_out + rows
            versions += [version] if version is not None else []
            if progress is not None:
                progress.commit(rows, metrics.real_tokens)
            seconds = time.perf_counter() - chunk_started
            log.info("sparkinfer: chunk %d/%d committed: %d rows in %.1fs (%.0f rows/s)%s", index + 1, chunks, rows,
                     seconds, rows / seconds if seconds else 0.0,
                     "" if version is None else f", Delta version {version}")
    predict_seconds = time.perf_counter() - predict_started
    skipped = rows_in - todo_rows
    validation = None
    if stage is not None and state is not None:
        validation = _audit_and_publish(spark, job, engine, stage, state, total)
    return RunReport(job, fp, rows_in, rows_out, skipped, replaced, chunks, total,
                     time.perf_counter() - started, predict_seconds, tuple(versions), engine, validation,
                     None if layout is None else layout.to_dict())


@contextlib.contextmanager
def _progress(spark: SparkSession, job: Job, rows: int) -> Iterator[progress_.Progress | None]:
    """The run's progress reporter (None when ``progress_interval`` is 0 or there is nothing to predict)."""
    if not job.progress_interval or not rows:
        yield None
        return
    with progress_.Progress(rows, interval=job.progress_interval, host=progress_.driver_host(spark)) as reporter:
        yield reporter


def _staging(
    spark: SparkSession, job: Job, fp: Fingerprint, engine: DeltaEngine, exists: bool, done: DataFrame | None,
    first_mode: WriteMode,
) -> tuple[publish.Stage, publish.StageState, DataFrame | None]:
    """The stage to write to (resumed when it holds this run's rows), and the keys done counting it."""
    stage = publish.Stage(job.output)
    state = stage.load()
    if state is not None and publish.published_by(spark, job.output, state.id, engine):
        publish.publish(spark, job.output, delta_engine=engine)  # killed after its commit: only clean up
        exists, state = True, None
        if job.key is not None:
            done, _, first_mode = _resume(spark, job, fp, engine)
    base = tables.delta_version(spark, job.output, delta_engine=engine) if exists else None
    publish_mode: publish.PublishMode = "overwrite" if first_mode == "overwrite" else "append"
    if state is not None and (state.fingerprint, state.base_version, state.publish_mode) != (fp.id, base, publish_mode):
        log.warning("sparkinfer: discarding the rows staged in %s (fingerprint %s on version %s, not %s on %s)",
                    stage.path, state.fingerprint, state.base_version, fp.id, base)
        state = None
    if state is None or (job.key is None and not state.complete):  # without a key a stage cannot resume
        return stage, stage.start(fp.id, publish_mode, base, job.partition_by), done
    if job.key is not None and not state.complete and tables.table_exists(spark, stage.path, "delta",
                                                                         delta_engine=engine):
        staged = tables.read_table(spark, stage.path, "delta", delta_engine=engine).select(job.key)
        done = staged if done is None else done.unionByName(staged)
    return stage, state, done


def _audit_and_publish(
    spark: SparkSession, job: Job, engine: DeltaEngine, stage: publish.Stage, state: publish.StageState,
    metrics: Metrics,
) -> dict[str, Any]:
    """Validate the staged rows against the published output; publish them when no error-level check fails."""
    from sparkinfer.spark.validate import review_sample, stored_profile_path, validate
    from sparkinfer.validation.profile import Profile

    known = {k: state.known.get(k, 0) + v for k, v in (("errors", metrics.error_rows),
                                                       ("truncated", metrics.truncated_rows))}
    state = publish.mark(stage, state, complete=True, known=known)
    if not tables.table_exists(spark, stage.path, "delta", delta_engine=engine):  # no chunk had rows to predict
        stage.discard()
        return {"passed": True, "failures": [], "warnings": [], "note": "nothing new to validate or publish",
                "staged": None, "published_version": None}
    reference: Profile | str | None = None
    if state.base_version is not None:
        try:
            reference = Profile.load(stored_profile_path(job.output, state.base_version))
        except (FileNotFoundError, OSError):
            reference = f"{job.output}@v{state.base_version}"
    targets = list(job.targets)
    report = validate(stage.path, reference, job.validate or None, columns=targets,
                      known={targets[0]: known} if len(targets) == 1 else None, spark=spark, delta_engine=engine)
    paths = {"html": job.beside_report(".validation.html"), "json": job.beside_report(".validation.json"),
             "review": job.beside_report(".review")}
    report.save_html(paths["html"])
    report.save_json(paths["json"])
    staged = tables.read_table(spark, stage.path, "delta", delta_engine=engine)
    review_sample(staged, report.current).coalesce(1).write.mode("overwrite").parquet(paths["review"])
    verdict = {
        "passed": report.passed, "failures": [r.message for r in report.failures],
        "warnings": [r.message for r in report.warnings], "reference": None if report.reference is None
        else report.reference.source, "columns": {n: c.kind for n, c in report.current.columns.items()},
    }
    publish.mark(stage, state, validation=verdict)
    version = publish.publish(spark, job.output, delta_engine=engine) if report.passed else None
    if version is None:
        log.warning("sparkinfer: validation failed; %s is unchanged, the predictions stay in %s:\n%s", job.output,
                    stage.path, report.summary())
    return {**verdict, **paths, "staged": None if report.passed else stage.path, "published_version": version}


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
    by_fingerprint = preflight.fingerprint_counts(spark, job.output, job.format, engine)  # from metadata if it can
    others = {k: v for k, v in by_fingerprint.items() if k != fp.id}
    if not others:
        return existing.select(job.key), 0, "append"
    if job.on_model_change == "refuse":
        raise preflight.model_changed(job, fp, others)
    replaced = sum(others.values())
    log.warning("sparkinfer: model fingerprint changed; re-predicting %s and replacing %d row(s)", job.input, replaced)
    # Every input row again, and the first chunk replaces the output: a crash after it leaves only rows of
    # this fingerprint, which the next run resumes from.
    return None, replaced, "overwrite"


def _check_input(source: DataFrame, job: Job) -> None:
    """`preflight.check_columns` for a DataFrame already read."""
    preflight.check_columns(dict(source.dtypes), job)


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
    target: str,
    *,
    slots: int,
    rows_hint: int,
    progress: str | None,
) -> tuple[int, Metrics, int | None, partitioning.Partitioning]:
    """Predict and commit one chunk of about `rows_hint` rows, spread over the cluster's `slots` task slots."""
    from pyspark.sql import Observation

    rows, skip = source, done
    if job.key is not None and chunks > 1:
        # Chunks are hash buckets of the key: disjoint, about equal, and the same whichever rows are done.
        bucket = F.pmod(F.xxhash64(F.col(job.key)), F.lit(chunks)) == index
        rows = rows.where(bucket)
        skip = skip.where(bucket) if skip is not None else None
    if job.key is not None and skip is not None:
        rows = rows.join(skip, on=job.key, how="left_anti")
    choice = partitioning.choose(rows, rows_hint, job.spec.buffer_rows, partitions=job.partitions, slots=slots)
    if index == 0:
        log.info("sparkinfer: %s", partitioning.describe(choice))
    if choice.repartition:
        rows = rows.repartition(choice.partitions)
    if job.prompt_template is None:
        predicted = predict_columns(rows, job.spec, list(zip(job.input_cols, job.targets)), progress=progress)
    else:
        prompted = rows.withColumn(_PROMPT_COLUMN, prompt(job.prompt_template))
        predicted = predict_columns(prompted, job.spec, [(_PROMPT_COLUMN, job.targets[0])],
                                    progress=progress).drop(_PROMPT_COLUMN)
    observation = Observation()
    observed = (
        predicted.withColumn(FINGERPRINT_COLUMN, F.lit(fp.id))
        .observe(observation, *metric_columns())
        .drop(METRICS_COLUMN)
    )
    metadata = {"sparkinfer": {"fingerprint": fp.id, "chunk": index + 1, "chunks": chunks}}
    version = tables.write(observed, target, job.format, mode, partition_by=job.partition_by,
                           delta_engine=engine, commit_metadata=metadata)
    rows_out, metrics = observed_metrics(observation.get)
    return rows_out, metrics, version, choice


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
    job, master, _ = parse_command(argv, prog)
    return job, master


def parse_command(
    argv: Sequence[str],
    prog: str,
    *,
    extra: Sequence[tuple[str, dict[str, Any]]] = (),
    defaults: dict[str, Any] | None = None,
    description: str | None = None,
    epilog: str | None = None,
) -> tuple[Job, str | None, dict[str, Any]]:
    """`parse_args` for a command that takes the job's options and some of its own (``sparkinfer plan``).

    Args:
        argv: The command line.
        prog: The command's name, for help and errors.
        extra: The command's own options, as ``(flag, argparse keywords)``; not accepted in ``--config``.
        defaults: Job option values taken when neither the command line nor the config file gives them (a
            default for ``output`` makes ``--output`` optional).
        description: The help's description (default: the job's).
        epilog: The help's epilog (default: the job's examples).

    Returns:
        The job, the session (as in `parse_args`), and the values of the `extra` options given, by dest.

    Raises:
        As `parse_args`.
    """
    parser = _cli.build_parser(prog, _CHOICES, description=description or (__doc__ or "").split("\n\n")[0],
                               extra=extra, epilog=epilog)
    given = vars(parser.parse_args(argv))
    own = {flag[2:].replace("-", "_") for flag, _ in extra}
    extras = {k: given.pop(k) for k in list(given) if k in own}
    known = _cli.option_names()
    options = dict(defaults or {})
    options.update(_cli.load_config(given["config"], known) if "config" in given else {})
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
    return Job(spec=spec, **job_options), master, extras


def main(argv: Sequence[str] | None = None, *, prog: str = "sparkinfer run") -> int:
    """The job's entry point: parse, run on a Spark session, print and write the report.

    Returns:
        0 on success; 2 for a bad option or value, or for a problem `preflight.check` finds before any Spark
        job (a missing input, column, model or package, an output the job cannot write); 1 when the run
        fails; 3 when ``--validate`` failed (the predictions stay staged; the failed checks are printed on
        stderr). Errors of status 1 and 2 are one line on stderr, after their traceback with ``--verbose``
        (an unexpected exception always shows its traceback).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        job, master, extras = parse_command(args, prog, extra=[_cli.VERBOSE])
    except SpecError as exc:
        if "--verbose" in args:
            traceback.print_exception(exc)
        return _cli.fail(prog, str(exc))
    verbose = bool(extras.get("verbose"))
    try:
        with _progress_log():
            report = run(_session(master, verbose=verbose), job)
    except SparkInferError as exc:
        return _cli.report_error(prog, exc, 2 if preflight.raised_by_check(exc) else 1, verbose=verbose)
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
    if report.validation is not None:
        v = report.validation
        print(f"validation report: {v.get('html', v.get('note'))}", file=sys.stderr)
        if not report.passed:
            print(f"{prog}: validation failed, nothing was published; the predictions stay in {v['staged']} "
                  f"(review sample: {v['review']}; publish them anyway with: sparkinfer publish {job.output})",
                  file=sys.stderr)
            for failure in v["failures"]:
                print(f"  error: {failure}", file=sys.stderr)
            return 3
    return 0


def publish_main(argv: Sequence[str]) -> int:
    """``sparkinfer publish OUTPUT``: publish the rows a ``--validate`` run staged, after review."""
    parser = _cli.Parser(prog="sparkinfer publish", description="Publish the predictions that a "
                         "`sparkinfer run --validate` staged (in OUTPUT.staged) to OUTPUT, in one Delta commit, "
                         "whatever their validation said: for rows a person reviewed.")
    parser.add_argument("output", metavar="OUTPUT", help="the job's --output")
    parser.add_argument("--delta-engine", choices=get_args(DeltaEngine), default="auto")
    parser.add_argument("--master", metavar="URL")
    parser.add_argument("--remote", metavar="URL")
    flag, keywords = _cli.VERBOSE
    parser.add_argument(flag, **keywords)
    args = parser.parse_args(argv)
    try:
        with _progress_log():
            version = publish.publish(_session(args.remote or args.master, verbose=args.verbose), args.output,
                                      delta_engine=args.delta_engine)
    except SparkInferError as exc:
        return _cli.report_error("sparkinfer publish", exc, 1, verbose=args.verbose)
    print(f"published to {args.output} as Delta version {version}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """The ``sparkinfer`` console script (and ``python -m sparkinfer``): ``sparkinfer run [options]``,
    ``sparkinfer plan [options]`` or ``sparkinfer publish OUTPUT``."""
    command, rest = _cli.split_subcommand(sys.argv[1:] if argv is None else argv)
    if command == "run":
        return main(rest, prog="sparkinfer run")
    if command == "plan":
        import importlib

        code: int = importlib.import_module("sparkinfer.spark.plan").plan_main(rest)
        return code
    if command == "publish":
        return publish_main(rest)
    if command is None and rest and rest[0] in ("-h", "--help"):
        print("usage: sparkinfer {run,plan,publish} [options]\n\n"
              "  run      predict a table into a table (sparkinfer run --help)\n"
              "  plan     plan a run from a sample: tokens, padding, settings, time (sparkinfer plan --help)\n"
              "  publish  publish the predictions a --validate run staged (sparkinfer publish --help)")
        return 0
    return _cli.fail("sparkinfer", "expected a command: run, plan or publish (got "
                     f"{command or ' '.join(rest) or 'nothing'}); see sparkinfer --help")


def _session(master: str | None, *, verbose: bool = False) -> SparkSession:
    """A Spark Connect session for an ``sc://`` URL, else a classic one on `master`.

    A local session that this process starts keeps Spark's start-up output off the terminal unless
    `verbose` (`_cli.quiet_local_session`); one that spark-submit or an earlier caller started is used as is.
    """
    if master is not None and master.startswith("sc://"):
        return SparkSession.builder.remote(master).getOrCreate()
    settings = {"spark.app.name": "sparkinfer-run", "spark.ui.showConsoleProgress": "true"}
    launched = "PYSPARK_GATEWAY_PORT" in os.environ or "SPARK_REMOTE" in os.environ  # spark-submit, Connect
    chosen = master or (None if launched else "local[*]")
    if chosen is not None:
        settings["spark.master"] = chosen
        if chosen.startswith("local"):
            # Local Python workers must run this interpreter: its environment has sparkinfer.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            if not verbose and not _cli.jvm_started():
                session: SparkSession = _cli.quiet_local_session(settings)
                return session
    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


@contextlib.contextmanager
def _progress_log() -> Iterator[None]:
    """Log sparkinfer's INFO lines (one per chunk) to stderr while the command runs, then restore the logger.

    A logger set to DEBUG already stays at DEBUG.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    level = log.level
    log.addHandler(handler)
    log.setLevel(min(log.getEffectiveLevel(), logging.INFO))
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


if __name__ == "__main__":
    raise SystemExit(main())
