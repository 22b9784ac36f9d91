"""The prediction job: spark-submit on local[2] and local-cluster, kill and resume, fingerprints, run report.

Predictions are checked against plain transformers run on each text alone (the unit tier's classifier
oracle), and against an uninterrupted run of the same job. The tiny classifier keeps a few thousand rows
fast, and its predictions differ from row to row, so a row given another row's prediction is seen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyspark
import pytest

pytestmark = pytest.mark.spark

deltalake = pytest.importorskip("deltalake", reason="the delta extra (pip install 'sparkinfer[delta]') is missing")

import sparkinfer as si  # noqa: E402
from sparkinfer.engine import faults  # noqa: E402
from sparkinfer.spark.job import FINGERPRINT_COLUMN, Job, fingerprint, main, run  # noqa: E402
from sparkinfer.spark.tables import spark_has_delta  # noqa: E402
from tests.spark.helpers import probe_workers, single_torch_thread  # noqa: E402
from tests.unit.helpers import TOLERANCE, ClassifierOracle, FloatArray  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "predict_table.py"
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
ROWS = 3000
CHUNK_ROWS = 750
MAX_LENGTH = 32  # short enough that many docstrings are truncated


@pytest.fixture(params=["delta-rs", "spark-delta", "parquet"])
def target(request: pytest.FixtureRequest, spark: Any) -> tuple[str, str]:
    """(format, delta engine): Delta through delta-rs, and through Spark's Delta source when the session has
    one; Parquet through Spark."""
    if request.param == "spark-delta" and not spark_has_delta(spark):
        pytest.skip("Spark's Delta source is not in this session (delta-spark jars need Maven, unavailable "
                    "here); the same test ran on delta-rs")
    return {"delta-rs": ("delta", "delta-rs"), "spark-delta": ("delta", "spark"), "parquet": ("parquet", "auto")}[
        str(request.param)
    ]


@pytest.fixture(scope="module")
def corpus(docs: list[str], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[int, dict[str, Any]]]:
    """ROWS rows (id, text with some nulls, title) as three Parquet files; returns the path and the rows."""
    rows = {
        i: {"id": i, "text": None if i % 97 == 0 else docs[i % len(docs)], "title": f"row {i}: " + docs[i % 7][:40]}
        for i in range(ROWS)
    }
    path = tmp_path_factory.mktemp("corpus") / "input"
    path.mkdir()
    ids = list(rows)
    for part in range(3):
        chunk = [rows[i] for i in ids[part::3]]
        pq.write_table(pa.Table.from_pylist(chunk), path / f"part-{part}.parquet")
    return str(path), rows


def _spec(model: str, **options: Any) -> si.ModelSpec:
    return si.ModelSpec(model, task="classification", return_all_scores=True, max_length=MAX_LENGTH,
                        batch_tokens=512, **options)


@pytest.fixture(scope="module")
def oracle(tiny_classifier: str) -> ClassifierOracle:
    """Plain transformers on one text at a time, memoized: the tests below share its 3,600 forward passes."""
    return ClassifierOracle(tiny_classifier)


def _output(spark: Any, path: str, columns: tuple[str, ...] = ("text_prediction", "title_prediction")) -> dict[
    int, tuple[Any, ...]
]:
    rows = si.read_table(spark, path).select("id", FINGERPRINT_COLUMN, *columns).collect()
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "a key was written twice"
    return {r["id"]: tuple(r) for r in rows}


def _assert_same_prediction(got: Any, want: dict[str, Any] | None) -> None:
    """Two runs of the job gave the same prediction (up to float32 batching noise)."""
    if want is None:
        assert got is None
        return
    got = got.asDict(recursive=True) if hasattr(got, "asDict") else got
    assert [s["label"] for s in got["scores"]] == [s["label"] for s in want["scores"]]
    assert [s["score"] for s in got["scores"]] == pytest.approx([s["score"] for s in want["scores"]], abs=TOLERANCE)
    top = sorted((s["score"] for s in want["scores"]), reverse=True)
    if top[0] - top[1] > TOLERANCE:  # a near-tie may flip under float32 batching noise; the scores matched anyway
        assert got["label"] == want["label"]


def _assert_oracle_prediction(got: Any, want: FloatArray | None, labels: list[str]) -> None:
    """A return_all_scores prediction holds the oracle's scores for its own text, every label in id order."""
    if want is None:
        assert got is None
        return
    got = got.asDict(recursive=True) if hasattr(got, "asDict") else got
    assert [s["label"] for s in got["scores"]] == labels
    assert [s["score"] for s in got["scores"]] == pytest.approx(list(want), abs=TOLERANCE)
    assert got["score"] == pytest.approx(want.max(), abs=TOLERANCE)
    assert want[labels.index(got["label"])] >= want.max() - TOLERANCE  # the best label, or one tied with it


def _assert_matches_oracle(
    spark: Any, path: str, oracle: ClassifierOracle, rows: dict[int, dict[str, Any]], function: str = "softmax"
) -> None:
    """Every key of `rows` is in the output once, each column's prediction that of the oracle on its text."""
    out = _output(spark, path)
    assert sorted(out) == sorted(rows)
    with single_torch_thread():
        for i in sorted(rows):
            for column, index in (("text", 2), ("title", 3)):
                text = rows[i][column]
                want = None if text is None else oracle.scores(text, MAX_LENGTH, function)
                try:
                    _assert_oracle_prediction(out[i][index], want, oracle.labels)
                except AssertionError as exc:
                    raise AssertionError(f"id {i}, {column} {text!r:.60}: {exc}") from exc


def _config(path: Path, **options: Any) -> str:
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in options.items()) + "\n")
    return str(path)


def _submit_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
            "HF_HUB_OFFLINE": "1", "SPARK_LOCAL_DIRS": str(tmp_path / "spark-local")}


@pytest.fixture(scope="module")
def uninterrupted(spark: Any, corpus: tuple[str, dict[int, dict[str, Any]]], tiny_classifier: str,
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str, float]:
    """The job run once, in-process and uninterrupted, on the whole corpus, by Python workers that hold no
    model yet: its report, its output, and the wall time the driver measured around it."""
    output = str(tmp_path_factory.mktemp("uninterrupted") / "out")
    job = Job(input=corpus[0], output=output, spec=_spec(tiny_classifier), input_cols=("text", "title"),
              key="id", chunk_rows=1500, delta_engine="delta-rs")
    probe_workers(spark, tasks=8, reset=True)  # so that the report must count model loads
    started = time.perf_counter()
    report = run(spark, job)
    return report, output, time.perf_counter() - started


def test_run_report_values(spark: Any, uninterrupted: tuple[Any, str, float],
                           corpus: tuple[str, dict[int, dict[str, Any]]], tiny_classifier: str) -> None:
    """Each value of the report against one computed without it: the tokenizer's own counts, the
    driver's clock, the Delta log, the fingerprint's documented fields."""
    import transformers

    report, output, wall = uninterrupted
    values = report.to_dict()
    rows = corpus[1]
    texts = [r[c] for r in rows.values() for c in ("text", "title") if r[c] is not None]
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_classifier)
    full = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    real = sum(min(n, MAX_LENGTH) for n in full)
    assert values["rows_in"] == values["rows_out"] == ROWS
    assert values["rows_skipped"] == values["rows_replaced"] == 0 and values["errors"] == 0
    assert values["engine"]["rows"] == 2 * ROWS  # two input columns
    assert values["engine"]["null_rows"] == 2 * ROWS - len(texts)
    assert values["real_tokens"] == real
    assert values["truncated_rows"] == sum(n > MAX_LENGTH for n in full)
    # The text column repeats the docs: a task computes each distinct input once (the titles are all distinct),
    # so at most every repeat across the whole input is answered from another row.
    engine = values["engine"]
    distinct = {tuple(ids) for ids in tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]}
    assert values["duplicate_rows"] == engine["duplicate_rows"] <= len(texts) - len(distinct)
    computed = real - engine["duplicate_tokens"]
    assert sum(map(len, distinct)) <= computed <= values["padded_tokens"] <= MAX_LENGTH * len(texts)
    assert values["padding_efficiency"] == pytest.approx(computed / values["padded_tokens"])
    # batch_tokens=512 caps each micro-batch's padded tokens; a micro-batch holds one row at least.
    assert math.ceil(values["padded_tokens"] / 512) <= values["engine"]["micro_batches"] <= len(texts)
    # Timings: within the wall time the driver measured around the run, and the rates follow from them.
    assert 0 < values["predict_seconds"] <= values["seconds"] <= wall
    assert values["rows_per_second"] == pytest.approx(ROWS / values["predict_seconds"])
    assert values["tokens_per_second"] == pytest.approx(real / values["predict_seconds"])
    assert values["rows_per_second"] >= ROWS / wall
    # The fixture emptied every Python worker's cache: the workers that ran the tasks had to load.
    assert values["engine"]["model_loads"] >= 1 and values["model_load_seconds"] > 0
    assert values["chunks"] == math.ceil(ROWS / 1500)
    assert values["delta_versions"] == sorted(h["version"] for h in deltalake.DeltaTable(output).history())
    assert values["delta_versions"] == [0, 1]
    # The fingerprint: the non-default, non-batching spec fields and the input columns, hashed as documented.
    fields = {"model": os.path.abspath(tiny_classifier), "task": "classification", "max_length": MAX_LENGTH,
              "return_all_scores": True, "input_cols": ["text", "title"]}
    assert values["fingerprint_fields"] == fields
    assert values["fingerprint"] == hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    assert {row[1] for row in _output(spark, output).values()} == {values["fingerprint"]}  # every written row
    assert json.loads(json.dumps(values)) == values  # JSON-able as is


def test_uninterrupted_predictions_equal_transformers_per_row(
    spark: Any, uninterrupted: tuple[Any, str, float], corpus: tuple[str, dict[int, dict[str, Any]]],
    oracle: ClassifierOracle,
) -> None:
    _assert_matches_oracle(spark, uninterrupted[1], oracle, corpus[1])


def test_spark_submit_job_killed_mid_run_resumes_every_key_once(
    spark: Any, corpus: tuple[str, dict[int, dict[str, Any]]], tiny_classifier: str, tmp_path: Path,
    uninterrupted: tuple[Any, str, float], oracle: ClassifierOracle,
) -> None:
    """spark-submit on local[2] with --config; SIGKILL after a chunk committed; the rerun completes it."""
    from pyspark.sql import functions as F

    output = tmp_path / "out"
    config = _config(tmp_path / "job.yaml", input=corpus[0], output=str(output), model=tiny_classifier,
                     task="classification", input_col=["text", "title"], key="id", chunk_rows=CHUNK_ROWS,
                     max_length=MAX_LENGTH, batch_tokens=512, return_all_scores=True,
                     delta_engine="delta-rs")
    command = [str(SPARK_SUBMIT), "--master", "local[2]", "--conf", "spark.ui.enabled=false", str(SCRIPT),
               "--config", config]
    env = _submit_env(tmp_path)
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen([*command, "--report", str(tmp_path / "first.json")], env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240
        while not (output / "_delta_log" / "00000000000000000000.json").exists():
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no chunk was committed in time"
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)  # the job's whole process tree: spark-submit, JVM, Python workers
        first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    assert not (tmp_path / "first.json").exists(), "the killed run must not have finished"

    # The log holds whole chunks only: contiguous versions, each commit a complete JSON file of one chunk.
    logs = sorted((output / "_delta_log").glob("*.json"))
    assert [int(p.stem) for p in logs] == list(range(len(logs)))
    for commit in logs:
        actions = [json.loads(line) for line in commit.read_text().splitlines()]
        assert actions[0]["commitInfo"]["sparkinfer"]["chunks"] == ROWS // CHUNK_ROWS
    killed = deltalake.DeltaTable(str(output))
    present = set(killed.to_pyarrow_table(columns=["id"]).column("id").to_pylist())
    buckets: dict[int, set[int]] = {}
    chunk_of = F.pmod(F.xxhash64("id"), F.lit(ROWS // CHUNK_ROWS))
    for row in spark.read.parquet(corpus[0]).select("id", chunk_of.alias("chunk")).collect():
        buckets.setdefault(row["chunk"], set()).add(row["id"])
    complete = [c for c, keys in buckets.items() if keys <= present]
    assert present == set().union(*(buckets[c] for c in complete)), "a chunk was committed in part"
    assert len(complete) == killed.version() + 1 == len(logs)

    second = subprocess.run([*command, "--report", str(tmp_path / "second.json")], env=env, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    report = json.loads((tmp_path / "second.json").read_text())
    assert report["rows_in"] == ROWS
    assert report["rows_skipped"] == len(present)
    assert report["rows_out"] == ROWS - len(present)
    assert report["engine"]["model_loads"] >= 1 and report["model_load_seconds"] > 0  # fresh Python workers
    final = deltalake.DeltaTable(str(output))
    assert all(Path(uri).exists() for uri in final.file_uris())
    out = _output(spark, str(output))
    assert sorted(out) == list(range(ROWS))
    reference = _output(spark, uninterrupted[1])
    for key, row in out.items():
        assert row[1] == reference[key][1]  # same fingerprint
        for index in (2, 3):
            want = reference[key][index]
            _assert_same_prediction(row[index], want.asDict(recursive=True) if want is not None else None)
    _assert_matches_oracle(spark, str(output), oracle, corpus[1])


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("output_format", "fault"), [("parquet", "exit_at_batch"), ("delta", "kill_executor_at_batch")]
)
def test_spark_submit_on_local_cluster_with_an_archived_model_survives_a_lost_worker(
    spark: Any, corpus: tuple[str, dict[int, dict[str, Any]]], tiny_classifier: str, tmp_path: Path,
    output_format: str, fault: str, oracle: ClassifierOracle,
) -> None:
    """Two executor JVMs; the model ships as ``--archives tiny.tar.gz#model`` and is named ``model``.

    One fault is injected once per run (``sparkinfer/engine/faults.py``) on the third micro-batch of the
    first Python worker to get there, mid-task: the worker exits abruptly (Parquet output), or it kills its
    executor JVM (Delta output). Spark retries the lost tasks; the output must still hold every row exactly
    once, with the predictions of an undisturbed engine run.
    """
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for item in Path(tiny_classifier).iterdir():
            tar.add(item, arcname=item.name)
    small = tmp_path / "small.parquet"
    pq.write_table(pq.read_table(corpus[0]).sort_by("id").slice(0, 200), small)
    output = tmp_path / "out"
    loads = tmp_path / "loads"
    loads.mkdir()
    result = subprocess.run(
        [str(SPARK_SUBMIT), "--master", "local-cluster[2,1,1024]", "--conf", "spark.ui.enabled=false",
         "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0",  # both executors up before any task
         "--conf", f"spark.executorEnv.{faults.ENV}={fault}=3,once={tmp_path / 'fault-fired'},trace_loads={loads}",
         "--archives", f"{archive}#model", str(SCRIPT), "--input", str(small), "--output", str(output),
         "--model", "model", "--task", "classification", "--input-col", "text", "title", "--key", "id",
         "--max-length", str(MAX_LENGTH), "--batch-tokens", "512",
         "--return-all-scores", "--format", output_format],
        env=_submit_env(tmp_path), capture_output=True, text=True, timeout=400,
    )
    # local-cluster workers keep a directory per application under SPARK_HOME/work: remove this run's.
    work = Path(pyspark.__file__).parent / "work"
    for app in set(re.findall(r"app-\d{14}-\d{4}", result.stderr)):
        shutil.rmtree(work / app, ignore_errors=True)
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "fault-fired").exists(), "the fault was not injected"
    lost = "Python worker exited unexpectedly" if fault == "exit_at_batch" else "Lost executor"
    assert lost in result.stderr, result.stderr[-3000:]
    report = json.loads(Path(f"{output}.report.json").read_text())
    assert report["rows_out"] == 200 and report["format"] == output_format
    # One input file is one partition: the job spread it over both executors' slots by itself.
    assert report["partitioning"] == {"partitions": 2, "slots": 2, "rows": 200, "input_partitions": 1,
                                      "chosen_by": "auto"}
    # Load-once across executors: every Python worker that ran a task loaded the model exactly once, in
    # executor JVMs of their own (the faulted worker's replacement loads it again; that is its first load).
    traced = [line.split() for f in loads.iterdir() for line in f.read_text().splitlines()]
    workers = [worker for _, worker, _ in traced]
    executors = {executor for executor, _, _ in traced}
    assert len(workers) == len(set(workers)), f"a worker loaded the model twice: {traced}"
    assert "-" not in executors and len(executors) >= 2, f"loads were not spread over executor JVMs: {traced}"
    assert {Path(model).name for _, _, model in traced} == {"model"}  # the archive, unpacked on each executor
    # The report sums successful task attempts only: the faulted worker's load is not in it, and a retry that
    # lands on a worker already holding the model loads nothing.
    assert 1 <= report["engine"]["model_loads"] < len(traced)
    # The archived model is the tiny classifier: compare with transformers run from its directory.
    _assert_matches_oracle(spark, str(output), oracle, {i: corpus[1][i] for i in range(200)})


def test_rerun_skips_done_keys_and_a_changed_model_is_reported(
    spark: Any, corpus: tuple[str, dict[int, dict[str, Any]]], tiny_classifier: str, tmp_path: Path,
    target: tuple[str, str], capsys: pytest.CaptureFixture[str], oracle: ClassifierOracle,
) -> None:
    output_format, delta_engine = target
    small = tmp_path / "small.parquet"
    pq.write_table(pq.read_table(corpus[0]).sort_by("id").slice(0, 120), small)
    rows = {i: corpus[1][i] for i in range(120)}
    output = str(tmp_path / "out")
    job = Job(input=str(small), output=output, spec=_spec(tiny_classifier), input_cols=("text", "title"),
              key="id", format=output_format, chunk_rows=50, delta_engine=delta_engine)  # type: ignore[arg-type]
    first = run(spark, job)
    assert (first.rows_in, first.rows_out, first.rows_skipped, first.chunks) == (120, 120, 0, 3)
    version = deltalake.DeltaTable(output).version() if output_format == "delta" else None

    again = run(spark, job)
    assert (again.rows_in, again.rows_out, again.rows_skipped, again.chunks) == (120, 0, 120, 0)
    assert again.metrics.rows == 0
    if output_format == "delta":
        assert deltalake.DeltaTable(output).version() == version  # nothing committed

    sigmoid = dataclasses.replace(job, spec=_spec(tiny_classifier, function_to_apply="sigmoid"))
    old, new = fingerprint(job).id, fingerprint(sigmoid).id
    assert old != new
    with pytest.raises(si.TableError, match=f"another model fingerprint \\({old}: 120 rows\\).*is {new}"):
        run(spark, sigmoid)
    command = ["--input", str(small), "--output", output, "--format", output_format, "--model", tiny_classifier,
               "--task", "classification", "--input-col", "text", "title", "--key", "id", "--max-length",
               str(MAX_LENGTH), "--batch-tokens", "512", "--return-all-scores", "--function-to-apply", "sigmoid",
               "--delta-engine", delta_engine]
    capsys.readouterr()
    assert main(command) == 2  # found before any Spark job (spark/preflight.py): a user error
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.match(r"sparkinfer run: error: TableError: .*another model fingerprint", lines[0])

    replaced = run(spark, dataclasses.replace(sigmoid, on_model_change="repredict"))
    assert (replaced.rows_out, replaced.rows_replaced, replaced.rows_skipped) == (120, 120, 0)
    out = _output(spark, output)
    assert {row[1] for row in out.values()} == {new}
    _assert_matches_oracle(spark, output, oracle, rows, function="sigmoid")


def test_job_without_key_on_an_empty_input_writes_an_empty_table(spark: Any, tiny_classifier: str,
                                                                  tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.int64()), "text": pa.array([], pa.string())}), empty)
    output = str(tmp_path / "out")
    report = run(spark, Job(input=str(empty), output=output, spec=_spec(tiny_classifier)))
    assert (report.rows_in, report.rows_out, report.chunks) == (0, 0, 1)
    table = deltalake.DeltaTable(output)
    assert (table.version(), table.count()) == (0, 0)
    assert [f.name for f in si.read_table(spark, output).schema.fields] == ["id", "text", "prediction",
                                                                            FINGERPRINT_COLUMN]
    with pytest.raises(si.TableError, match="already exists"):
        run(spark, Job(input=str(empty), output=output, spec=_spec(tiny_classifier)))


def test_a_non_string_input_column_fails_on_the_driver_before_any_task(
    spark: Any, tiny_classifier: str, tmp_path: Path
) -> None:
    source = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"id": [1, 2], "text": [3.5, 4.0]}), source)
    output = tmp_path / "out"
    with pytest.raises(si.SpecError, match=r"--input-col must name string columns \(got \{'text': 'double'\}"):
        run(spark, Job(input=str(source), output=str(output), spec=_spec(tiny_classifier)))
    assert not output.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "i", "--output", "o", "--task", "embedding"], "required: --model"),
        (["--input", "i", "--output", "o", "--model", "m", "--task", "embedding", "--bogus"],
         "unrecognized arguments: --bogus"),
        (["--input", "i", "--output", "o", "--model", "m", "--task", "sentiment"], "invalid choice: 'sentiment'"),
        (["--input", "i", "--output", "o", "--model", "m", "--task", "embedding", "--batch-tokens", "x"],
         r"argument --batch-tokens: expected N \(got 'x'\)"),
        (["--input", "i", "--output", "o", "--model", "m", "--task", "embedding", "--batch-tokens", "0"],
         r"ModelSpec.batch_tokens must be a positive int \(got 0\)"),
        (["--input", "i", "--output", "o", "--model", "m", "--task", "embedding", "--top-k", "2"],
         "ModelSpec.top_k applies to task 'classification'"),
        (["--input", "i", "--output", "o", "--model", "m", "--task", "embedding", "--key", "id", "--mode",
          "overwrite"], "Job.mode must be 'append' with a key"),
        (["--input", "i", "--output", "o", "--model", "m", "--task", "embedding", "--output-col", "a", "b"],
         "one column per input column"),
        (["--input", "i", "--output", "o", "--model", "m", "--task", "embedding", "--master", "local[1]",
          "--remote", "sc://h:15002"], "--master and --remote are exclusive"),
        (["--input", "i", "--output", "o", "--model", "m", "--task", "embedding", "--remote", "h:15002"],
         "--remote must be a Spark Connect URL sc://host:port"),
    ],
)
def test_bad_options_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits; the job's own checks return
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("sparkinfer run: error: ") and re.search(message, err[0]), err[0]


def test_config_file_options_and_command_line_override(tmp_path: Path) -> None:
    from sparkinfer.spark.job import parse_args

    config = _config(tmp_path / "job.yaml", input="in", output="out", model="m", task="classification",
                     input_col="body", batch_tokens=1024, quantization={"bits": 8}, chunk_rows=7, host="worker")
    job, master = parse_args(["--config", config, "--batch-tokens", "2048", "--master", "local[1]"])
    assert (job.input, job.output, job.input_cols, job.chunk_rows, master) == ("in", "out", ("body",), 7, "local[1]")
    assert job.spec.batch_tokens == 2048 and job.spec.task == "classification" and job.spec.host == "worker"
    assert parse_args(["--config", config, "--host", "executor"])[0].spec.host == "executor"
    with pytest.raises(SystemExit):  # argparse's usage error: exit status 2, one line
        parse_args(["--config", config, "--host", "gpu"])
    assert parse_args(["--config", config, "--remote", "sc://connect:15002"])[1] == "sc://connect:15002"
    assert job.spec.quantization_spec is not None and job.spec.quantization_spec.bits == 8
    bad = _config(tmp_path / "bad.yaml", input="in", batch_tokns=3)
    with pytest.raises(si.SpecError, match=r"unknown option\(s\) \['batch_tokns'\]"):
        parse_args(["--config", bad])


def test_help_is_complete_and_the_console_script_is_installed() -> None:
    result = subprocess.run([str(Path(sys.executable).parent / "sparkinfer"), "run", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for option in ("--input", "--output", "--format", "--model", "--task", "--input-col", "--output-col", "--mode",
                   "--key", "--partition-by", "--chunk-rows", "--on-model-change", "--report", "--config"):
        assert option in result.stdout
    for field in dataclasses.fields(si.ModelSpec):
        if field.name not in ("model", "task"):
            assert "--" + field.name.replace("_", "-") in result.stdout, field.name
    bad = subprocess.run([str(Path(sys.executable).parent / "sparkinfer"), "predict"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "expected a command: run" in bad.stderr
