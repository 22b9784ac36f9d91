"""The job's write-audit-publish gate (``--validate``): stage, validate, publish once, or keep it all staged.

The model is the tiny random classifier; the checks that fail here are strict on purpose (a KS statistic
above 0.0001 between two different sets of rows always fails), since what is tested is the gate: what the
published table and the staged rows look like after each outcome. Detection power at the default settings
is tests/spark/test_validate.py's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import sparkinfer as si
from sparkinfer.engine import faults
from sparkinfer.spark import publish, tables
from sparkinfer.spark.job import cli, main
from sparkinfer.spark.tables import spark_has_delta
from sparkinfer.spark.validate import stored_profile_path

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "tests" / "data" / "stdlib_docs_sample.parquet"
CONSOLE = Path(sys.executable).parent / "sparkinfer"


@pytest.fixture(params=["delta-rs", "spark"])
def engine(request: pytest.FixtureRequest, spark: Any) -> str:
    if request.param == "spark" and not spark_has_delta(spark):
        pytest.skip("Spark's Delta source is not in this session (delta-spark jars need Maven, unavailable here); "
                    "the same test ran on delta-rs")
    return str(request.param)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two Parquet inputs: the first 60 docstrings, and the first 120 (60 new keys)."""
    table = pq.read_table(DOCS).sort_by("id")
    root = tmp_path_factory.mktemp("gate-inputs")
    first, second = root / "first.parquet", root / "second.parquet"
    pq.write_table(table.slice(0, 60), first)
    pq.write_table(table.slice(0, 120), second)
    return str(first), str(second)


def _command(source: str, output: str, model: str, engine: str, *extra: str) -> list[str]:
    return ["--input", source, "--output", output, "--model", model, "--task", "classification", "--key", "id",
            "--max-length", "32", "--batch-tokens", "512", "--delta-engine", engine, "--chunk-rows", "40", *extra]


def _rows(spark: Any, path: str, engine: str) -> list[tuple[Any, ...]]:
    frame = tables.read_table(spark, path, "delta", delta_engine=engine)  # type: ignore[arg-type]
    return sorted((r["id"], r["prediction"]["label"], r["prediction"]["score"]) for r in frame.collect())


def _version(spark: Any, path: str, engine: str) -> int:
    return tables.delta_version(spark, path, delta_engine=engine)  # type: ignore[arg-type]


def _strict_checks(tmp_path: Path) -> str:
    path = tmp_path / "checks.yaml"
    path.write_text("checks:\n  - {column: prediction, metric: score.ks, max: 0.0001}\n")
    return str(path)


def test_a_failing_validation_publishes_nothing_keeps_the_rows_staged_and_exits_3(
    spark: Any, tiny_classifier: str, inputs: tuple[str, str], tmp_path: Path, engine: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = str(tmp_path / "out")
    # A first run has no published table to compare with: only rate checks run, and it publishes version 0.
    assert main(_command(inputs[0], output, tiny_classifier, engine, "--validate")) == 0
    assert _version(spark, output, engine) == 0
    published = _rows(spark, output, engine)
    assert [r[0] for r in published] == list(range(60))
    assert Path(stored_profile_path(output, 0)).is_file()  # the next run's reference
    assert not Path(publish.Stage(output).path).exists()

    capsys.readouterr()
    checks = _strict_checks(tmp_path)
    assert main(_command(inputs[1], output, tiny_classifier, engine, "--validate", checks)) == 3
    err = capsys.readouterr().err
    assert "validation failed, nothing was published" in err and "error: prediction score.ks" in err
    # The published table is exactly as it was; the 60 new rows wait in the staging table, with a review
    # sample and the reports beside the run report.
    assert _version(spark, output, engine) == 0 and _rows(spark, output, engine) == published
    stage = publish.Stage(output)
    staged = _rows(spark, stage.path, engine)
    assert [r[0] for r in staged] == list(range(60, 120))
    state = stage.load()
    assert state is not None and state.complete and state.base_version == 0
    assert state.validation is not None and not state.validation["passed"]
    report = json.loads(Path(f"{output}.report.json").read_text())
    assert report["validation"]["staged"] == stage.path and report["validation"]["published_version"] is None
    assert "<svg" in Path(f"{output}.validation.html").read_text()
    assert json.loads(Path(f"{output}.validation.json").read_text())["passed"] is False
    review = spark.read.parquet(f"{output}.review").collect()
    assert review and {r["id"] for r in review} <= set(range(60, 120))

    # Run again: the staged rows are validated again, not predicted again, and still not published.
    assert main(_command(inputs[1], output, tiny_classifier, engine, "--validate", checks)) == 3
    assert json.loads(Path(f"{output}.report.json").read_text())["rows_out"] == 0
    assert _version(spark, output, engine) == 0 and _rows(spark, stage.path, engine) == staged

    # A person reviewed them: publish on purpose. One commit; every key once; the stage is gone.
    assert cli(["publish", output, "--delta-engine", engine]) == 0
    assert _version(spark, output, engine) == 1
    assert _rows(spark, output, engine) == sorted(published + staged)
    assert not Path(stage.path).exists() and Path(stored_profile_path(output, 1)).is_file()
    assert cli(["publish", output, "--delta-engine", engine]) == 1  # nothing staged any more: one clear line
    assert "nothing is staged" in capsys.readouterr().err


def test_a_kill_before_publishing_or_after_the_commit_still_publishes_once(
    spark: Any, tiny_classifier: str, inputs: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One output through every interruption (one sequence, to share the runs' cost): a driver killed after
    validating, before the commit; then one that dies after the commit, before cleaning up; then reruns."""
    output = str(tmp_path / "out")
    assert main(_command(inputs[0], output, tiny_classifier, "delta-rs", "--validate")) == 0
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "HF_HUB_OFFLINE": "1",
           faults.ENV: "exit_before_publish=1"}
    command = [str(CONSOLE), "run", *_command(inputs[1], output, tiny_classifier, "delta-rs", "--validate"),
               "--master", "local[2]"]
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == faults.EXIT_STATUS, killed.stderr[-3000:]
    state = publish.Stage(output).load()
    assert state is not None and state.complete and state.validation is not None and state.validation["passed"]
    assert _version(spark, output, "delta-rs") == 0  # killed before the commit

    def die(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the driver died right after the commit")

    # The rerun predicts nothing (all staged), validates with the default checks, commits, then dies.
    monkeypatch.setattr("sparkinfer.spark.validate.store_profile", die)
    assert main(_command(inputs[1], output, tiny_classifier, "delta-rs", "--validate")) == 1
    assert _version(spark, output, "delta-rs") == 1 and publish.Stage(output).load() is not None
    monkeypatch.undo()
    assert main(_command(inputs[1], output, tiny_classifier, "delta-rs", "--validate")) == 0
    assert _version(spark, output, "delta-rs") == 1  # the stage was published already: no second commit
    assert [r[0] for r in _rows(spark, output, "delta-rs")] == list(range(120))  # every key once
    assert publish.Stage(output).load() is None and Path(stored_profile_path(output, 1)).is_file()
    report = json.loads(Path(f"{output}.report.json").read_text())
    assert report["rows_out"] == 0 and report["validation"]["published_version"] is None  # nothing new


def test_validate_needs_delta_output(tiny_classifier: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--input", str(DOCS), "--output", str(tmp_path / "o"), "--model", tiny_classifier, "--task",
                 "classification", "--format", "parquet", "--validate"]) == 2
    assert "--validate needs --format delta" in capsys.readouterr().err
    from sparkinfer.spark.job import Job

    with pytest.raises(si.SpecError, match="needs --format delta"):
        Job(input="i", output="o", spec=si.ModelSpec(tiny_classifier, task="classification"), format="parquet",
            validate="")
