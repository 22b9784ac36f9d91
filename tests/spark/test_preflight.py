"""Fail fast on the driver: user errors exit 2 with one line, before any Spark job (`spark/preflight.py`)."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import deltalake
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparkinfer import ModelLoadError, ModelSpec
from sparkinfer.spark import preflight
from sparkinfer.spark.job import FINGERPRINT_COLUMN, Job, fingerprint, main

pytestmark = pytest.mark.spark

OTHER = "0123456789abcdef"  # a fingerprint no job of this file has


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("preflight") / "in.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["a", "b", None], "score": [0.5, 1.5, 2.5]}), path)
    return str(path)


def _jobs(spark: Any) -> set[int]:
    """Ids of every job the session ran, once its listeners have seen them all."""
    spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty()
    return set(spark.sparkContext.statusTracker().getJobIdsForGroup())


@contextmanager
def no_spark_job(spark: Any) -> Iterator[None]:
    before = _jobs(spark)
    yield
    assert _jobs(spark) == before, "a Spark job ran"


def _fails_fast(spark: Any, capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """main(argv) exits 2 in under 20 s with one stderr line and no Spark job; returns the line."""
    capsys.readouterr()
    with no_spark_job(spark):
        started = time.perf_counter()
        code = main(argv)
        seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 2, err
    assert seconds < 20
    assert "Traceback" not in err and "\tat " not in err  # no Python traceback, no Java stack
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _run(source: str, output: Path | str, model: str, task: str = "classification", *extra: str) -> list[str]:
    return ["--input", source, "--output", str(output), "--model", model, "--task", task, *extra]


def test_a_nonexistent_model_exits_2(spark: Any, source: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "no-such-model"
    line = _fails_fast(spark, capsys, _run(source, tmp_path / "out", str(model)))
    assert line == (
        "sparkinfer run: error: ModelLoadError: ModelSpec.model must be a model directory, a hub id in the local "
        f"Hugging Face cache or the name of an archive shipped with --archives (got '{model}': no such directory "
        "on the driver); pass an existing directory or download the model beforehand, or, if it exists only on "
        "the executors, set SPARKINFER_MODEL_ON_EXECUTORS=1"
    )
    bare = _fails_fast(spark, capsys, _run(source, tmp_path / "out", "no-such-model"))
    assert ("(got 'no-such-model': no such directory on the driver, not in its Hugging Face cache (offline: "
            "HF_HUB_OFFLINE=1), and no --archives archive of that name (none shipped))") in bare


def test_a_model_without_a_tokenizer_exits_2(spark: Any, source: str, tiny_classifier: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "untokenized"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(Path(tiny_classifier) / name, model / name)
    line = _fails_fast(spark, capsys, _run(source, tmp_path / "out", str(model)))
    assert line == (
        f"sparkinfer run: error: ModelLoadError: the model directory '{model}' has no tokenizer: expected "
        "tokenizer.json, or a vocabulary transformers builds one from (vocab.txt, vocab.json, merges.txt, "
        "tokenizer.model, spiece.model, sentencepiece.bpe.model, spm.model, bpe.codes), got [config.json, "
        "model.safetensors]; save the tokenizer beside the weights with tokenizer.save_pretrained(model_dir)"
    )


def test_a_remote_model_that_cannot_load_exits_2(spark: Any, source: str, tiny_classifier: str, s3: Any,
                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The driver lists the store and reads the config; nothing is downloaded and no Spark job runs."""
    absent = _fails_fast(spark, capsys, _run(source, tmp_path / "out", "s3://models/absent"))
    assert absent.startswith("sparkinfer run: error: ModelLoadError: ModelSpec.model 's3://models/absent' holds no "
                             "files"), absent
    model = tmp_path / "untokenized"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(Path(tiny_classifier) / name, model / name)
    s3.upload(str(model), "s3://models/untokenized")
    line = _fails_fast(spark, capsys, _run(source, tmp_path / "out", "s3://models/untokenized"))
    assert line.startswith("sparkinfer run: error: ModelLoadError: the model directory 's3://models/untokenized' "
                           "has no tokenizer"), line


def test_a_task_the_architecture_cannot_do_exits_2(spark: Any, source: str, tiny_causal_lm: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails_fast(spark, capsys, _run(source, tmp_path / "out", tiny_causal_lm, "embedding"))
    assert line.startswith(
        "sparkinfer run: error: SpecError: ModelSpec.task 'embedding' does not fit a causal language model, got "
        f"'{tiny_causal_lm}': its config.json names ['GPT2LMHeadModel'] (model_type 'gpt2'): its hidden states are "
        "not sentence embeddings. Use task='generation'"
    ), line


def test_a_missing_or_non_string_column_exits_2(spark: Any, source: str, tiny_classifier: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    missing = _fails_fast(spark, capsys, _run(source, tmp_path / "out", tiny_classifier, "classification",
                                              "--input-col", "body"))
    assert missing == (f"sparkinfer run: error: SpecError: input '{source}' has no column(s) ['body'] (got columns "
                       "['id', 'text', 'score'])")
    numeric = _fails_fast(spark, capsys, _run(source, tmp_path / "out", tiny_classifier, "classification",
                                              "--input-col", "score"))
    assert numeric.startswith("sparkinfer run: error: SpecError: --input-col must name string columns (got "
                              f"{{'score': 'double'}} in '{source}'); cast them"), numeric
    absent = _fails_fast(spark, capsys, _run(str(tmp_path / "nowhere"), tmp_path / "out", tiny_classifier))
    assert absent.startswith(f"sparkinfer run: error: TableError: input '{tmp_path / 'nowhere'}' does not exist"), absent


def _write_output(path: Path, output_format: str, fingerprints: list[str | None]) -> None:
    rows = pa.table({"id": list(range(1, len(fingerprints) + 1)), "text": ["x"] * len(fingerprints),
                     FINGERPRINT_COLUMN: pa.array(fingerprints, pa.string())})
    if output_format == "delta":
        deltalake.write_deltalake(str(path), rows, mode="append")
    else:
        path.mkdir(exist_ok=True)
        pq.write_table(rows, path / f"part-{len(list(path.iterdir()))}.parquet")


@pytest.mark.parametrize("output_format", ["delta", "parquet"])
def test_an_output_of_another_fingerprint_exits_2(spark: Any, source: str, tiny_classifier: str, tmp_path: Path,
                                                  output_format: str, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out"
    _write_output(output, output_format, [OTHER, OTHER])
    _write_output(output, output_format, [OTHER])
    argv = _run(source, output, tiny_classifier, "classification", "--key", "id", "--format", output_format)
    line = _fails_fast(spark, capsys, argv)
    fp = fingerprint(Job(input=source, output=str(output), spec=ModelSpec(tiny_classifier, task="classification"),
                         key="id"))
    assert line.startswith(
        f"sparkinfer run: error: TableError: output '{output}' holds rows predicted with another model fingerprint "
        f"({OTHER}: 3 rows); this run's is {fp.id} ("
    ), line
    assert line.endswith("pass --on-model-change repredict to predict every row again and replace the output, or "
                         "write to another output")


@pytest.mark.parametrize("output_format", ["delta", "parquet"])
def test_fingerprints_are_counted_from_metadata_and_by_a_job_where_it_cannot_say(
    spark: Any, tmp_path: Path, output_format: str
) -> None:
    output = tmp_path / "out"
    _write_output(output, output_format, [OTHER, OTHER])
    _write_output(output, output_format, [None])
    _write_output(output, output_format, ["f" * 16])
    with no_spark_job(spark):
        counts = preflight.fingerprint_counts(spark, str(output), output_format, "auto")  # type: ignore[arg-type]
    assert counts == {OTHER: 2, None: 1, "f" * 16: 1}
    if output_format == "parquet":  # the fallback is the same groupBy for both formats
        _write_output(output, output_format, [OTHER, "e" * 16])  # one file, two fingerprints: the footers cannot say
        before = _jobs(spark)
        assert preflight.fingerprint_counts(spark, str(output), output_format, "auto") == {  # type: ignore[arg-type]
            OTHER: 3, None: 1, "f" * 16: 1, "e" * 16: 1}
        assert _jobs(spark) != before  # the groupBy


def test_an_existing_or_mismatched_output_exits_2(spark: Any, source: str, tiny_classifier: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out"
    _write_output(output, "delta", [OTHER])
    exists = _fails_fast(spark, capsys, _run(source, output, tiny_classifier))
    assert exists == (f"sparkinfer run: error: TableError: output '{output}' already exists; pass --mode append or "
                      "overwrite, or --key to resume or extend it")
    as_parquet = _fails_fast(spark, capsys, _run(source, output, tiny_classifier, "classification", "--format",
                                                 "parquet", "--mode", "append"))
    assert as_parquet.startswith(f"sparkinfer run: error: TableError: output '{output}' is a Delta table (it has a "
                                 "_delta_log) but --format is parquet"), as_parquet
    appended = _fails_fast(spark, capsys, _run(source, output, tiny_classifier, "classification", "--mode", "append"))
    assert appended == (
        f"sparkinfer run: error: TableError: cannot append to output '{output}': the output has no column(s) "
        "['score', 'prediction'] (output columns <id: bigint, text: string, sparkinfer_fingerprint: string>, rows "
        "<id: bigint, text: string, score: double, prediction: struct<label:string,score:double>, "
        "sparkinfer_fingerprint: string>); select the output's columns in the input, or write to a new output"
    )


def test_missing_bitsandbytes_exits_2(spark: Any, source: str, tiny_classifier: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    find_spec = importlib.util.find_spec  # what sparkinfer._optional.check_installed looks packages up with

    def without_bitsandbytes(name: str, *args: Any) -> Any:
        return None if name == "bitsandbytes" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_bitsandbytes)
    line = _fails_fast(spark, capsys, _run(source, tmp_path / "out", tiny_classifier, "classification",
                                           "--quantization", "4bit"))
    assert line == ("sparkinfer run: error: MissingDependencyError: ModelSpec.quantization='4bit' needs bitsandbytes, "
                    "which is not installed; install it with: pip install 'sparkinfer[quant]'")


def test_verbose_shows_the_traceback(spark: Any, source: str, tiny_classifier: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(_run(source, tmp_path / "out", tiny_classifier, "classification", "--input-col", "body",
                     "--verbose")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "Traceback (most recent call last):"
    assert any("preflight.py" in line and "in check" in line for line in err)
    assert err[-1].startswith("sparkinfer run: error: SpecError: input ") and "has no column(s) ['body']" in err[-1]


def test_a_model_only_the_executors_have_is_skipped_with_a_log_line(
    spark: Any, source: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    job = Job(input=source, output=str(tmp_path / "out"), spec=ModelSpec("shipped_model", task="classification"))
    with pytest.raises(ModelLoadError, match=r"'shipped_model': no such directory on the driver"):
        preflight.check(spark, job)
    spark.conf.set("spark.yarn.dist.archives", "hdfs:///models/tiny.tar.gz#shipped_model")
    try:
        with caplog.at_level(logging.INFO, logger="sparkinfer"), no_spark_job(spark):
            preflight.check(spark, job)
    finally:
        spark.conf.unset("spark.yarn.dist.archives")
    assert [r.getMessage() for r in caplog.records] == [
        "sparkinfer: the model 'shipped_model' is the archive hdfs:///models/tiny.tar.gz#shipped_model "
        "(spark.yarn.dist.archives), which only the executors unpack; it is checked there, as they load it"
    ]


def test_a_good_job_passes_without_a_spark_job(spark: Any, source: str, tiny_classifier: str, tmp_path: Path) -> None:
    job = Job(input=source, output=str(tmp_path / "out"), spec=ModelSpec(tiny_classifier, task="classification"),
              key="id")
    with no_spark_job(spark):
        preflight.check(spark, job)


def test_python_m_sparkinfer_is_the_console_script(capsys: pytest.CaptureFixture[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "sparkinfer", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: sparkinfer {run,plan,publish} [options]\n")
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert "--verbose" in capsys.readouterr().out


def test_the_command_line_keeps_spark_start_up_output_off_the_terminal(tmp_path: Path) -> None:
    """`python -m sparkinfer run`, starting its own JVM: one line on stderr, none of Spark's start-up output."""
    missing = tmp_path / "missing"
    result = subprocess.run(
        [sys.executable, "-m", "sparkinfer", "run", "--input", str(missing), "--output", str(tmp_path / "out"),
         "--model", "m", "--task", "embedding", "--master", "local[1]"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr == (f"sparkinfer run: error: TableError: input '{missing}' does not exist: expected a Delta "
                             "table, a Parquet file or directory, or a table of the session's catalog; check the path "
                             "(executors need it too: use a shared file system or URI)\n")
