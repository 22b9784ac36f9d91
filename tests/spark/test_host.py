"""The executor model host (issue 13) on Spark: load counts, memory, outputs, faults and lifetime.

local-cluster executors need a SparkContext of their own, and a pytest process holds one (the suite's
local[2] session), so the cluster tests run `host_app.py` in a subprocess, one application per cluster
shape, each running several scenarios in sequence (see its docstring), and assert on the JSON it writes.
The output test runs on the suite's local[2] session, where local mode's Python workers spawn the host.

Every output is checked against plain transformers / sentence-transformers run on each row alone, and the
host's against ``host="worker"``'s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyspark
import pytest

import sparkinfer as si
from tests.spark.helpers import ON_CPU, single_torch_thread
from tests.spark.host_app import hosts_under, process_table, texts, texts_frame
from tests.unit.helpers import (
    TOLERANCE,
    ClassifierOracle,
    SentenceTransformerOracle,
    assert_classification_matches,
)
from tests.unit.test_generation import GenerateOracle
from tests.unit.test_token_classification import MAX_LENGTH as NER_MAX_LENGTH
from tests.unit.test_token_classification import TEXTS as NER_TEXTS
from tests.unit.test_token_classification import PipelineOracle, assert_rows_match, expected_rows

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).with_name("host_app.py")
MAX_LENGTH = 32  # the cluster scenarios' classifier truncation: short rows keep the jobs fast
CLASSIFY = {"max_length": MAX_LENGTH, "batch_tokens": 256}
START = re.compile(r"sparkinfer host (\S+) started: pid (\d+)")
EXIT = re.compile(r"sparkinfer host (\S+) exiting: (.*)")
IDLE_TIMEOUT = 3
# Spark stops a pool's idle Python workers 60 s after its last use (PythonWorkerFactory); the host's clients go
# then, and it exits IDLE_TIMEOUT s later (its watchdog looks every 0.5 s). 20 s of slack for a busy machine.
IDLE_DEADLINE = 60 + IDLE_TIMEOUT + 20
MIN_SAVING = 0.6
FAULT_ROWS = 96  # of the weights' bytes: what one host must save against a copy per task slot (issue 13)


# ------------------------------------------------------------------------------------------ the apps


def _copy(model: str, directory: Path, name: str) -> str:
    """A copy of `model` under another path: another load key, so a host of its own."""
    return str(shutil.copytree(model, directory / name))


def _run_app(base: Path, master: str, scenarios: list[dict[str, Any]]) -> dict[str, Any]:
    """Run host_app.py on `master` with `scenarios`; return its JSON (plus ``stderr``)."""
    out = base / "result.json"
    config = base / "config.json"
    settings = {"master": master, "base": str(base / "app"), "out": str(out), "scenarios": scenarios}
    config.write_text(json.dumps(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKINFER_")}
    env.update({"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, "HF_HUB_OFFLINE": "1",
                "SPARK_LOCAL_DIRS": str(base / "spark-local")})
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(APP), str(config)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=480)
    seconds = time.monotonic() - started
    # local-cluster workers keep a directory per application under SPARK_HOME/work: remove this run's.
    work = Path(pyspark.__file__).parent / "work"
    for app in set(re.findall(r"app-\d{14}-\d{4}", result.stderr + (out.read_text() if out.exists() else ""))):
        shutil.rmtree(work / app, ignore_errors=True)
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    assert result.returncode == 0 and out.exists(), result.stderr[-5000:]
    report: dict[str, Any] = json.loads(out.read_text())
    report.update(stderr=result.stderr, seconds=round(seconds, 1), base=str(base / "app"))
    print(f"{master}: {seconds:.0f} s; " + ", ".join(
        f"{name} {s.get('wall_seconds')} s" for name, s in report["scenarios"].items()))
    return report


def _scenario(app: dict[str, Any], name: str) -> dict[str, Any]:
    """One scenario's results; fails with its traceback (and the app's log tail) if it raised."""
    result: dict[str, Any] = app["scenarios"][name]
    assert result["ok"], f"{name}:\n{result.get('error')}\n--- app stderr ---\n{app['stderr'][-3000:]}"
    return result


@pytest.fixture(scope="module")
def tiny_models(tiny_classifier: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A copy of the tiny classifier per cluster scenario, so that each gets a host of its own."""
    directory = tmp_path_factory.mktemp("host-models")
    names = ("loads-executor", "loads-worker", "kill-host", "exit-worker", "two-executors")
    return {name: _copy(tiny_classifier, directory, name) for name in names}


@pytest.fixture(scope="module")
def large_encoder(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> tuple[str, int]:
    """A BERT-large-shaped encoder (24 layers, width 1024, ~335M parameters) with random weights.

    Saved in float16, it loads as float32 (dtype "auto" on CPU): every copy of the weights is converted
    into anonymous memory, twice the file's size, and no mmap of the file can share it between processes.

    Returns:
        The model directory and the bytes of its weights as loaded (float32).
    """
    import torch
    import transformers

    path = tmp_path_factory.mktemp("large_encoder")
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=1024, num_hidden_layers=24,
                                     num_attention_heads=16, intermediate_size=4096, max_position_embeddings=512)
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    params = sum(p.numel() for p in model.parameters())
    model.half().save_pretrained(path)
    tokenizer.save_pretrained(path)
    del model
    assert params >= 300_000_000, params
    return str(path), params * 4


@pytest.fixture(scope="module")
def one_executor(
    tiny_models: dict[str, str], large_encoder: tuple[str, int], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """local-cluster[1,2,3072]: one executor JVM with two task slots, running every one-executor scenario.

    The memory pair runs first, host mode before worker mode: the worker job is measured while the host job's
    processes still map the same libraries, which lowers the worker job's PSS (shared pages are split among
    more processes), so the comparison leans against the host.
    """
    large = large_encoder[0]
    memory = {"model": large, "task": "embedding", "rows": 16, "partitions": 4, "memory": True,
              "drop_rows": True, "options": {"max_length": 16, "batch_tokens": 256}}
    classify = {"task": "classification", "options": CLASSIFY}
    scenarios = [
        {"name": "memory-executor", "host": "executor", **memory},
        {"name": "memory-worker", "host": "worker", **memory},
        # One environment (so one pool of Python workers) for the two load counts, whose host also shows the idle
        # timeout: it can only go idle once Spark stops the pool's idle workers, a minute after its last job
        # (see host_app.HostWatch); the fault scenarios run meanwhile.
        {"name": "loads-executor", "env": "loads", "host": "executor", "model": tiny_models["loads-executor"],
         "rows": 64, "partitions": 8, "idle_timeout": IDLE_TIMEOUT, **classify},
        {"name": "loads-worker", "env": "loads", "host": "worker", "model": tiny_models["loads-worker"],
         "rows": 64, "partitions": 8, "idle_timeout": IDLE_TIMEOUT, "await_exit": IDLE_DEADLINE, **classify},
        {"name": "kill-host", "host": "executor", "model": tiny_models["kill-host"], "rows": FAULT_ROWS,
         "partitions": 8, "faults": "kill_host_at_batch=3,once={home}/fired", **classify},
        {"name": "exit-worker", "host": "executor", "model": tiny_models["exit-worker"], "rows": FAULT_ROWS,
         "partitions": 8, "faults": "exit_after_request=1,once={home}/fired", **classify},
    ]
    return _run_app(tmp_path_factory.mktemp("one-executor"), "local-cluster[1,2,3072]", scenarios)


@pytest.fixture(scope="module")
def two_executors(tiny_models: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """local-cluster[2,2,3072]: two executor JVMs with two task slots each."""
    scenarios = [{"name": "two-executors", "host": "executor", "model": tiny_models["two-executors"], "rows": 64,
                  "partitions": 8, "task": "classification", "options": CLASSIFY}]
    return _run_app(tmp_path_factory.mktemp("two-executors"), "local-cluster[2,2,3072]", scenarios)


@pytest.fixture(scope="module")
def classifier_oracle(tiny_classifier: str) -> ClassifierOracle:
    return ClassifierOracle(tiny_classifier)


def _assert_every_key_once_as_the_oracle(result: dict[str, Any], rows: int, oracle: ClassifierOracle) -> None:
    """The job's output holds each id of the scenario's input exactly once, with the oracle's prediction."""
    ids = [i for i, _ in result["rows"]]
    assert sorted(ids) == list(range(rows)), Counter(ids).most_common(3)
    by_id = dict((i, pred) for i, pred in result["rows"])
    inputs = texts(rows)
    out = pa.array([by_id[i] for i, _ in inputs], pa.struct([("label", pa.string()), ("score", pa.float64())]))
    with single_torch_thread():
        assert_classification_matches(out, [t for _, t in inputs], oracle, max_length=MAX_LENGTH)


def _host_pids(result: dict[str, Any]) -> set[int]:
    """The pids that logged ``started`` in the scenario's host logs, or were seen as hosts during its job."""
    logged = {int(m.group(2)) for log in result["logs"].values() for m in START.finditer(log)}
    return logged | {int(pid) for pid in result["hosts_seen"]}


def _log_lines(result: dict[str, Any], pattern: re.Pattern[str]) -> list[re.Match[str]]:
    return [m for log in result["logs"].values() for m in pattern.finditer(log)]


# ------------------------------------------------------------------------------------------ loads


@pytest.mark.cluster
def test_one_executor_loads_once_in_its_host(one_executor: dict[str, Any], classifier_oracle: ClassifierOracle) -> None:
    result = _scenario(one_executor, "loads-executor")
    trace = result["trace"]
    assert len(trace) == 1, f"host mode: 8 tasks on 2 slots must load the weights once, traced: {trace}"
    [(executor, loader, model)] = trace
    assert [int(executor)] == one_executor["executors"], (trace, one_executor["executors"])
    starts = _log_lines(result, START)
    assert [int(m.group(2)) for m in starts] == [int(loader)], (trace, result["logs"])  # the host loaded them
    assert int(loader) in {int(pid) for pid in result["hosts_seen"]}, (trace, result["hosts_seen"])
    assert Path(model).name == "loads-executor"
    _assert_every_key_once_as_the_oracle(result, 64, classifier_oracle)


@pytest.mark.cluster
def test_worker_mode_loads_once_per_python_worker(
    one_executor: dict[str, Any], classifier_oracle: ClassifierOracle
) -> None:
    result = _scenario(one_executor, "loads-worker")
    trace = result["trace"]
    loaders = [int(pid) for _, pid, _ in trace]
    assert len(loaders) == 2 == len(set(loaders)), f"worker mode: one load per Python worker of 2 slots: {trace}"
    assert {int(e) for e, _, _ in trace} == set(one_executor["executors"])
    # Python workers under the executor JVM, not hosts (the pool's workers also feed loads-executor's host).
    assert set(loaders) <= set(result["seen"]) and not set(loaders) & _host_pids(result), (trace, result["hosts_seen"])
    _assert_every_key_once_as_the_oracle(result, 64, classifier_oracle)


@pytest.mark.cluster
def test_two_executors_load_once_each_in_their_own_host(
    two_executors: dict[str, Any], classifier_oracle: ClassifierOracle
) -> None:
    result = _scenario(two_executors, "two-executors")
    trace = result["trace"]
    per_executor = Counter(int(executor) for executor, _, _ in trace)
    assert sorted(per_executor) == two_executors["executors"] and len(per_executor) == 2, (trace, two_executors)
    assert set(per_executor.values()) == {1}, f"one load per executor JVM: {trace}"
    loaders = {int(pid) for _, pid, _ in trace}
    assert len(loaders) == 2 and loaders <= _host_pids(result), (trace, result["hosts_seen"], result["logs"])
    _assert_every_key_once_as_the_oracle(result, 64, classifier_oracle)


# ------------------------------------------------------------------------------------------ memory


@pytest.mark.cluster
def test_one_host_saves_a_copy_of_the_weights_per_extra_slot(
    one_executor: dict[str, Any], large_encoder: tuple[str, int], record_property: Any
) -> None:
    """The summed PSS of the executor's Python processes, sampled every 0.2 s during each job (host_app.Sampler).

    Asserted on: the PSS at the end of the job, when every copy of the weights is resident and every load
    done, and the peak of the anonymous PSS (the weights' float32 copies are anonymous memory). Reported, not
    asserted on: the peak PSS. It catches a load in the middle: the loader maps the float16 file (0.6 GiB)
    while it copies it, and those file pages count whole in one host's PSS but are split between two workers
    that map the same file, whose loads need not peak at the same moment. It moved the saving between 0.4 and
    1.2 x the weights from one run to the next; the two figures asserted on varied by a few hundredths.
    """
    weights = large_encoder[1]
    host, worker = _scenario(one_executor, "memory-executor"), _scenario(one_executor, "memory-worker")
    def measures(result: dict[str, Any]) -> dict[str, int]:
        return {"PSS at the end of the job": result["series"][-1][1],
                "peak anonymous PSS": result["peak_anon_pss_bytes"],
                "peak PSS (not asserted)": result["peak_pss_bytes"]}

    by_mode = {"executor": measures(host), "worker": measures(worker)}
    figures = {measure: {mode: by_mode[mode][measure] for mode in by_mode} for measure in by_mode["executor"]}
    lines = [
        f"{measure}: host='executor' {f['executor'] / 2**30:.2f} GiB, host='worker' {f['worker'] / 2**30:.2f} GiB, "
        f"saving {(f['worker'] - f['executor']) / weights:.2f} x the weights"
        for measure, f in figures.items()
    ]
    report = (f"executor's Python processes, 2 slots, {weights / 2**30:.2f} GiB of float32 weights: "
              + "; ".join(lines))
    print(report)
    print("PSS by process at the peak:", {"executor": host["peak_detail"], "worker": worker["peak_detail"]})
    record_property("host_memory", report)
    # Each figure measured the load it claims: two copies in two workers, one in one host.
    assert len(worker["trace"]) == 2 and len(host["trace"]) == 1, (worker["trace"], host["trace"])
    assert int(host["trace"][0][1]) in _host_pids(host)
    assert min(host["samples"], worker["samples"]) >= 5
    # 16 rows, one of them null: 15 vectors each.
    assert sum(ok for _, ok in host["rows"]) == sum(ok for _, ok in worker["rows"]) == 15
    for measure in ("PSS at the end of the job", "peak anonymous PSS"):
        f = figures[measure]
        assert f["executor"] <= f["worker"] - MIN_SAVING * weights, report


# ------------------------------------------------------------------------------------------ faults


@pytest.mark.cluster
def test_a_host_killed_mid_job_is_replaced_and_every_key_comes_once(
    one_executor: dict[str, Any], classifier_oracle: ClassifierOracle
) -> None:
    result = _scenario(one_executor, "kill-host")
    assert Path(result["host_dir"]).parent.joinpath("fired").exists(), "the host was not killed"
    _assert_every_key_once_as_the_oracle(result, FAULT_ROWS, classifier_oracle)
    loaders = [int(pid) for _, pid, _ in result["trace"]]
    assert len(loaders) == 2 == len(set(loaders)), f"a second host must be elected and load once: {result['trace']}"
    starts = [int(m.group(2)) for m in _log_lines(result, START)]
    assert sorted(starts) == sorted(loaders), result["logs"]
    # The killed host wrote no exit line; its successor wrote one when the application ended.
    assert len(_log_lines(result, EXIT)) == 1, result["logs"]


@pytest.mark.cluster
def test_a_worker_killed_mid_request_leaves_the_host_serving_the_others(
    one_executor: dict[str, Any], classifier_oracle: ClassifierOracle
) -> None:
    result = _scenario(one_executor, "exit-worker")
    assert Path(result["host_dir"]).parent.joinpath("fired").exists(), "no worker exited"
    _assert_every_key_once_as_the_oracle(result, FAULT_ROWS, classifier_oracle)
    assert len(result["trace"]) == 1, f"the host must not be restarted: {result['trace']}"
    assert len(_log_lines(result, START)) == 1, result["logs"]
    assert len(result["hosts_seen"]) == 1, result["hosts_seen"]


@pytest.mark.cluster
def test_an_idle_host_exits_by_itself_while_the_application_runs(one_executor: dict[str, Any]) -> None:
    """loads-executor's host, with an idle timeout of IDLE_TIMEOUT s, once the pool it served is idle."""
    result = _scenario(one_executor, "loads-worker")  # the last job of the pool ("env": "loads")
    waited = result["await_exit"]
    assert result["hosts_after_job"], "no host was running after the job"
    assert waited["gone_after_seconds"] is not None, (
        f"the host was still running {IDLE_DEADLINE} s after its last job (idle timeout {IDLE_TIMEOUT} s): {waited}"
    )
    print(f"idle host gone {waited['gone_after_seconds']} s after its last job ended")
    exits = [m.group(2) for log in waited["logs"].values() for m in EXIT.finditer(log)]
    assert len(exits) == 1 and exits[0].startswith(f"idle for {IDLE_TIMEOUT} s"), waited["logs"]
    assert len(_log_lines(result, START)) == 1


@pytest.mark.cluster
@pytest.mark.parametrize("app", ["one_executor", "two_executors"])
def test_no_host_outlives_the_application(request: pytest.FixtureRequest, app: str) -> None:
    report: dict[str, Any] = request.getfixturevalue(app)
    assert report["hosts_before_stop"], "no host was running when the application stopped"
    assert not report["hosts_left_after_stop"], f"hosts left {report['stop_seconds']} s after spark.stop(): {report}"
    assert not hosts_under(process_table(), report["base"])


@pytest.mark.cluster
def test_each_host_logs_its_start_and_its_exit(one_executor: dict[str, Any]) -> None:
    hosted = [name for name in ("memory-executor", "loads-executor", "exit-worker")
              if one_executor["scenarios"][name]["ok"]]
    assert hosted
    for name in hosted:
        result = one_executor["scenarios"][name]
        assert len(result["logs"]) == 1, (name, result["logs"])
        starts, exits = _log_lines(result, START), _log_lines(result, EXIT)
        assert len(starts) == 1 and len(exits) == 1, (name, result["logs"])
        assert starts[0].group(1) == exits[0].group(1)  # the same host key
        assert exits[0].group(2).strip(), (name, result["logs"])  # with a reason


# ------------------------------------------------------------------------------------------ outputs (local[2])

NEW = 12
ROWS = 48


@pytest.fixture(scope="module")
def task_inputs(docs: list[str]) -> dict[str, list[str | None]]:
    """Per task, the rows: short docstring prompts and two nulls; the unit tier's tricky texts for entities."""
    prompts: list[str | None] = [" ".join(d.split()[: 3 + (i * 7) % 30]) for i, d in enumerate(docs[:ROWS])]
    prompts[3] = prompts[30] = None
    plain: list[str | None] = list(docs[:ROWS])  # the tiny classifier gives them all three labels (4/31/13)
    plain[40] = None
    return {"embedding": plain, "classification": plain, "token-classification": [*NER_TEXTS, *docs[:35]],
            "generation": prompts, "text2text": prompts}


@pytest.fixture(scope="module")
def task_models(minilm_path: str, tiny_classifier: str, tiny_ner: str, tiny_causal_lm: str,
                tiny_seq2seq: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Per task, the model and its options."""
    return {
        "embedding": (minilm_path, {"max_length": 256}),
        "classification": (tiny_classifier, {"max_length": 64}),
        "token-classification": (tiny_ner, {"max_length": NER_MAX_LENGTH, "aggregation_strategy": "simple"}),
        "generation": (tiny_causal_lm, {"max_new_tokens": NEW, "return_details": True}),
        "text2text": (tiny_seq2seq, {"max_new_tokens": NEW, "return_details": True}),
    }


@pytest.fixture(scope="module")
def task_oracles(task_models: dict[str, tuple[str, dict[str, Any]]],
                 task_inputs: dict[str, list[str | None]]) -> dict[str, list[Any]]:
    """Per task, the oracle's answer per row, computed before any Spark job of this module."""
    with single_torch_thread():
        st = SentenceTransformerOracle(task_models["embedding"][0])
        clf = ClassifierOracle(task_models["classification"][0])
        ner = PipelineOracle(task_models["token-classification"][0], NER_MAX_LENGTH)
        causal = GenerateOracle(task_models["generation"][0], causal=True)
        seq2seq = GenerateOracle(task_models["text2text"][0], causal=False)
        rows = task_inputs
        return {
            "embedding": [None if t is None else st(t) for t in rows["embedding"]],
            "classification": [None if t is None else clf.scores(t, 64) for t in rows["classification"]],
            "token-classification": expected_rows(ner, rows["token-classification"], "simple"),
            "generation": [None if t is None else causal.details(t, NEW) for t in rows["generation"]],
            "text2text": [None if t is None else seq2seq.details(t, NEW) for t in rows["text2text"]],
            "_labels": clf.labels,
        }


@pytest.fixture(scope="module")
def task_outputs(
    spark: Any, task_models: dict[str, tuple[str, dict[str, Any]]], task_inputs: dict[str, list[str | None]],
    task_oracles: dict[str, list[Any]], tmp_path_factory: pytest.TempPathFactory,
) -> dict[Any, Any]:
    """Per task and host mode, the collected predictions in input order (4 partitions on 2 slots), and the load
    trace and host directory of the host mode's jobs."""
    home = tmp_path_factory.mktemp("host-outputs")
    trace, host_dir = home / "trace", home / "host"  # the host directory is sparkinfer's to create (mode 700)
    trace.mkdir()
    environment = spark.sparkContext.environment  # what the next Python workers start with
    settings = {"SPARKINFER_FAULTS": f"trace_loads={trace}", "SPARKINFER_HOST_DIR": str(host_dir),
                "SPARKINFER_HOST_IDLE_TIMEOUT": "30"}
    environment.update(settings)
    outputs: dict[Any, Any] = {"trace": trace, "host_dir": host_dir}
    try:
        for task, (model, options) in task_models.items():
            rows = list(enumerate(task_inputs[task]))
            df = texts_frame(spark, rows, home / f"{task}.parquet").repartition(4)
            for host in ("worker", "executor"):
                column = si.predict("text", model, task=task, host=host, **options, **ON_CPU)  # type: ignore[arg-type]
                got = sorted(df.select("id", column.alias("pred")).collect(), key=lambda r: r.id)
                assert [r.id for r in got] == list(range(len(rows)))
                outputs[task, host] = [None if r.pred is None else _plain(r.pred) for r in got]
    finally:
        for name in settings:
            del environment[name]
    return outputs


def _plain(value: Any) -> Any:
    if hasattr(value, "asDict"):
        return value.asDict(recursive=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@pytest.mark.parametrize("task", ["embedding", "classification", "token-classification", "generation", "text2text"])
def test_host_outputs_equal_worker_outputs_and_the_oracle(
    task: str, task_outputs: dict[Any, Any], task_oracles: dict[str, list[Any]],
    task_inputs: dict[str, list[str | None]], task_models: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    host, worker, want = task_outputs[task, "executor"], task_outputs[task, "worker"], task_oracles[task]
    rows = task_inputs[task]
    assert [h is None for h in host] == [w is None for w in worker] == [t is None for t in rows]
    if task == "embedding":
        for i, (h, w, o) in enumerate(zip(host, worker, want)):
            if h is not None:
                for other, name in ((np.asarray(w), "worker"), (o, "oracle")):
                    cos = float(np.dot(h, other) / (np.linalg.norm(h) * np.linalg.norm(other)))
                    assert cos >= 0.99999, f"row {i}: cosine {cos} against the {name}"
    elif task == "classification":
        labels = task_oracles["_labels"]
        for i, (h, w, o) in enumerate(zip(host, worker, want)):
            if h is not None:
                assert h["label"] == w["label"] and h["score"] == pytest.approx(w["score"], abs=TOLERANCE), i
                assert h["score"] == pytest.approx(o.max(), abs=TOLERANCE), i
                assert o[labels.index(h["label"])] >= o.max() - TOLERANCE, i  # the best label, or one tying it
        assert len({h["label"] for h in host if h}) == 3  # the rows tell the labels apart
    elif task == "token-classification":
        assert_rows_match(host, want, rows)
        assert_rows_match(host, worker, rows)
        assert sum(len(h) for h in host if h) > len(rows)  # the rows really hold entities
    else:
        assert host == worker == want
        if task == "generation":  # rows end at different lengths: an early row's slot is free before the others
            assert {h["finish_reason"] for h in host if h} == {"stop", "length"}
    # The host mode's jobs loaded the weights once, in a host (a worker-mode load is a worker's).
    model = task_models[task][0]
    host_pids = {int(m.group(2)) for log in Path(task_outputs["host_dir"]).glob("*.log")
                 for m in START.finditer(log.read_text())}
    loads = [line.split() for f in Path(task_outputs["trace"]).glob("loads-*.txt")
             for line in f.read_text().splitlines()]
    by_hosts = [pid for _, pid, name in loads if name == model and int(pid) in host_pids]
    assert len(by_hosts) == 1, (loads, host_pids)
