"""Write-audit-publish for the job: stage the predictions, validate them, publish them in one Delta commit.

With ``--validate``, a run writes its chunks to a staging Delta table beside the output (`Stage.path`,
``<output>.staged``), not to the output. When every chunk is staged, the marker ``_sparkinfer/stage.json``
in the staging table says so; the staged rows are validated against the published output (its stored
profile, else its rows); and only if no error-level check fails are they published: appended to the
output (or replacing it, for a re-prediction) in ONE Delta commit that records the stage's id. So:

* a failed validation leaves the output exactly as it was (same version, same rows) and keeps the staged
  rows for review; ``sparkinfer publish OUTPUT`` publishes them on purpose, after review;
* a run killed while staging resumes the staging (keys already staged are skipped); one killed after
  staging validates and publishes without predicting again;
* a run killed between the commit and the clean-up finds its stage id in the output's last commit and
  only cleans up: the rows are published exactly once.

Each published version's profile is stored beside the output (``sparkinfer.spark.validate``), so the next
run's validation reads it instead of the published rows.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from pyspark.sql import SparkSession

from sparkinfer.engine import faults
from sparkinfer.errors import TableError
from sparkinfer.spark import tables
from sparkinfer.spark.tables import DeltaEngine
from sparkinfer.validation.profile import _filesystem, _read_text, _write_text

log = logging.getLogger("sparkinfer")

PublishMode = Literal["append", "overwrite"]


@dataclass(frozen=True)
class StageState:
    """What the marker of a staging table records.

    Attributes:
        id: This stage's id, recorded in the publishing commit.
        fingerprint: The model fingerprint of the staged rows.
        publish_mode: ``"append"`` (new keys) or ``"overwrite"`` (a re-prediction replaces the output).
        base_version: The output's version when staging started (None: there was no output).
        partition_by: The output's partition columns, for a new output.
        complete: Every chunk is staged.
        known: Counts the rows do not hold, summed over the staging runs (``errors``, ``truncated``).
        validation: The last validation's verdict (``passed``, failed checks), or None.
    """

    id: str
    fingerprint: str
    publish_mode: PublishMode
    base_version: int | None
    partition_by: tuple[str, ...] = ()
    complete: bool = False
    known: dict[str, int] = field(default_factory=dict)
    validation: dict[str, Any] | None = None


@dataclass(frozen=True)
class Stage:
    """The staging table of an output."""

    output: str

    @property
    def path(self) -> str:
        return f"{self.output.rstrip('/')}.staged"

    @property
    def marker(self) -> str:
        return f"{self.path}/_sparkinfer/stage.json"

    def load(self) -> StageState | None:
        """The marker's state, or None when nothing is staged."""
        try:
            data = json.loads(_read_text(self.marker))
        except (FileNotFoundError, OSError):
            return None
        data["partition_by"] = tuple(data.get("partition_by", ()))
        return StageState(**data)

    def save(self, state: StageState) -> None:
        _write_text(self.marker, json.dumps(asdict(state), indent=2))

    def start(self, fingerprint: str, publish_mode: PublishMode, base_version: int | None,
              partition_by: tuple[str, ...]) -> StageState:
        """A fresh stage (any earlier staged rows are removed first)."""
        self.discard()
        state = StageState(uuid.uuid4().hex, fingerprint, publish_mode, base_version, partition_by)
        self.save(state)
        return state

    def discard(self) -> None:
        """Remove the staging table and its marker."""
        fs, inner = _filesystem(self.path)
        import pyarrow.fs as pafs

        if fs.get_file_info(inner).type != pafs.FileType.NotFound:
            if isinstance(fs, pafs.LocalFileSystem):
                shutil.rmtree(inner)
            else:
                fs.delete_dir(inner)


def published_by(spark: SparkSession, output: str, stage_id: str, engine: DeltaEngine) -> bool:
    """Whether the output's last commit published the stage `stage_id`."""
    if not tables.table_exists(spark, output, "delta", delta_engine=engine):
        return False
    metadata = tables.last_commit_metadata(spark, output, delta_engine=engine)
    return bool(metadata.get("sparkinfer", {}).get("stage") == stage_id)


def publish(spark: SparkSession, output: str, *, delta_engine: DeltaEngine = "auto") -> int:
    """Publish the staged rows of `output` (validated or not): one Delta commit, exactly once.

    Returns:
        The output's Delta version holding the rows.

    Raises:
        TableError: When nothing complete is staged, or the output changed since staging started.
    """
    from sparkinfer.spark.validate import profile, store_profile

    engine = tables.resolve_delta_engine(spark, delta_engine)
    stage = Stage(output)
    state = stage.load()
    if state is None or not state.complete:
        raise TableError(
            f"nothing is staged for {output!r} ({'staging is incomplete' if state else 'no ' + stage.path}); run "
            "sparkinfer run ... --validate to stage predictions first"
        )
    if published_by(spark, output, state.id, engine):
        log.info("sparkinfer: stage %s is already published to %s; cleaning up", state.id, output)
        version = tables.delta_version(spark, output, delta_engine=engine)
    else:
        exists = tables.table_exists(spark, output, "delta", delta_engine=engine)
        current = tables.delta_version(spark, output, delta_engine=engine) if exists else None
        if current != state.base_version:
            raise TableError(
                f"{output!r} changed since these rows were staged (version {current}, staged on "
                f"{state.base_version}); run the job again to re-stage against it"
            )
        faults.before_publish()
        staged = tables.read_table(spark, stage.path, "delta", delta_engine=engine)
        metadata = {"sparkinfer": {"fingerprint": state.fingerprint, "stage": state.id}}
        tables.write(staged, output, "delta", state.publish_mode, partition_by=state.partition_by,
                     delta_engine=engine, commit_metadata=metadata)
        version = tables.delta_version(spark, output, delta_engine=engine)
        log.info("sparkinfer: published stage %s to %s as version %d", state.id, output, version)
    # The new version's profile, for the next run's validation (one pass over the published table).
    published = tables.read_table(spark, output, "delta", delta_engine=engine, version=version)
    columns = (state.validation or {}).get("columns")
    store_profile(output, version, profile(published, columns, source=f"{output}@v{version}"))
    stage.discard()
    return version


def mark(stage: Stage, state: StageState, **changes: Any) -> StageState:
    """`state` with `changes`, saved to the marker."""
    state = replace(state, **changes)
    stage.save(state)
    return state
