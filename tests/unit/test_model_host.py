"""The executor model host without Spark: election, sharing, merging, per-row errors, faults and lifetime.

Each test gets its own "executor" (a fresh ``SPARK_LOCAL_DIRS``), hence its own host, started by the engine
exactly as a Spark worker starts it. Client processes are plain Python subprocesses running the engine.
The Spark-level tests (local-cluster executors, memory, faults inside jobs) are in tests/spark/test_host.py.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import Pipe
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from sparkinfer.engine import cache, faults, host, host_server, run
from sparkinfer.engine.metrics import Metrics
from sparkinfer.errors import HostError
from sparkinfer.spec import ModelSpec
from tests.unit.helpers import ClassifierOracle, assert_classification_matches

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh executor scope and host directory; every host started in it is killed afterwards."""
    monkeypatch.setenv("SPARK_LOCAL_DIRS", str(tmp_path / "blockmgr"))
    monkeypatch.setenv(host.DIR_ENV, str(tmp_path / "hosts"))
    monkeypatch.setenv(host.IDLE_ENV, "120")
    monkeypatch.setenv(host.THREADS_ENV, "1")
    monkeypatch.delenv(faults.ENV, raising=False)
    yield tmp_path / "hosts"
    for client in host._CLIENTS.values():
        client.close()
    host._CLIENTS.clear()
    for pid in hosts_in(tmp_path / "hosts"):
        os.kill(pid, signal.SIGKILL)


def hosts_in(directory: Path) -> list[int]:
    """Pids of the running host processes started with `directory` (from the process table)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if host.SERVER_MODULE.encode() in argv and str(directory).encode() in argv:
            pids.append(int(proc.name))
    return pids


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def log_text(directory: Path) -> str:
    return "".join(p.read_text() for p in sorted(directory.glob("*.log")))


TEXTS = [f"document number {i} " + "word " * (i % 11) for i in range(60)] + [None, ""]


def test_a_host_computes_what_the_worker_computes(executor: Path, tiny_classifier: str) -> None:
    spec = ModelSpec(tiny_classifier, task="classification", device="cpu")
    texts = pa.array(TEXTS)
    hosted, metrics = run(spec.with_options(host="executor"), texts)
    assert_classification_matches(hosted, TEXTS, ClassifierOracle(tiny_classifier))
    assert (metrics.model_loads, metrics.host_loads, metrics.host_requests) == (0, 1, 1)
    assert metrics.micro_batches >= 1 and metrics.padded_tokens >= metrics.real_tokens
    # The worker held no weights: its cache has the skeleton only, on the meta device.
    assert cache.get_model(spec.with_options(host="executor"), device="meta")[0].memory_bytes == 0
    [pid] = hosts_in(executor)
    assert pid not in (os.getpid(), os.getppid())
    log = log_text(executor)
    assert f"started: pid {pid}" in log and "loaded the model" in log


CLIENT = """
import json, os, sys, time
import pyarrow as pa
from sparkinfer.engine import run
from sparkinfer.spec import ModelSpec
path, wait_for, out = sys.argv[1], sys.argv[2], sys.argv[3]
texts = pa.array(json.loads(os.environ["TEXTS"]))
result, metrics = run(ModelSpec(path, task="classification", device="cpu", host="executor"), texts)
json.dump({"rows": result.to_pylist(), "metrics": metrics.to_dict(), "pid": os.getpid()}, open(out, "w"))
while wait_for != "-" and not os.path.exists(wait_for):
    time.sleep(0.1)
"""


def start_client(path: str, wait_for_file: str, out: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, path, wait_for_file, str(out)], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def test_processes_of_one_executor_share_one_host_that_ends_with_the_process_it_serves(
    executor: Path, tiny_classifier: str, tmp_path: Path
) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    env = {**os.environ, faults.ENV: f"trace_loads={traces}", "TEXTS": json.dumps(TEXTS), "HF_HUB_OFFLINE": "1"}
    release = tmp_path / "release"
    first = start_client(tiny_classifier, str(release), tmp_path / "first.json", env)
    assert wait_for(lambda: (tmp_path / "first.json").exists(), 120), first.stderr and first.stderr.read()
    second = start_client(tiny_classifier, "-", tmp_path / "second.json", env)
    assert second.wait(120) == 0, second.stderr and second.stderr.read()
    results = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("first", "second")]
    assert results[0]["rows"] == results[1]["rows"]
    assert_classification_matches(pa.array(results[0]["rows"]), TEXTS, ClassifierOracle(tiny_classifier))
    [pid] = hosts_in(executor)
    # One load, made by the host (not by a client), counted by the first client only.
    [trace] = traces.glob("loads-*.txt")
    assert trace.name == f"loads-{pid}.txt" and len(trace.read_text().splitlines()) == 1
    assert [r["metrics"]["host_loads"] for r in results] == [1, 0]
    assert [r["metrics"]["model_loads"] for r in results] == [0, 0]
    # The first client started the host and is all it serves outside Spark: when it ends, the host ends.
    release.touch()
    assert first.wait(60) == 0
    assert wait_for(lambda: not hosts_in(executor), 15), log_text(executor)
    assert f"pid {results[0]['pid']}, which it serves, ended" in log_text(executor)


def _server_with_two_clients(spec: ModelSpec, directory: Path) -> tuple[Any, Any, list[Any], list[Any]]:
    """The spec's model here, a host's server in this process, and two connected clients (pipe ends).

    Returns:
        The loaded model, the server, each client's (its end, the server's end), and the server's clients.
    """
    loaded, _ = cache.get_model(spec, device="cpu")
    boot = host.Bootstrap(spec=spec, device="cpu", secret=b"", watch=(), executor=None, idle_timeout=60, threads=1)
    server = host_server._Server(boot, "test", directory / "test.log")
    ends = [Pipe() for _ in range(2)]
    return loaded, server, ends, [host_server._Client(n, theirs) for n, (_, theirs) in enumerate(ends)]


def test_rows_of_several_tasks_share_micro_batches(executor: Path, tiny_classifier: str) -> None:
    """The host's round puts the queued requests of two connections into the same micro-batches."""
    spec = ModelSpec(tiny_classifier, task="classification", device="cpu", batch_tokens=4096)
    loaded, server, ends, clients = _server_with_two_clients(spec, executor)
    tokenized = [loaded.head.prepare([t for t in TEXTS[i::2] if t is not None]) for i in range(2)]
    requests = [
        host_server._Request(c, 7, spec, [np.asarray(e.ids, np.int32) for e in encodings], time.monotonic())
        for c, encodings in zip(clients, tokenized)
    ]
    server.compute(spec.cache_key, requests)
    replies = [mine.recv() for mine, _ in ends]
    oracle = ClassifierOracle(tiny_classifier)
    for (kind, number, (outputs, failed, counters)), encodings, i in zip(replies, tokenized, range(2)):
        assert (kind, number, failed) == ("done", 7, {})
        texts: list[str | None] = [t for t in TEXTS[i::2] if t is not None]
        assert len(outputs) == len(texts)
        column = loaded.head.to_arrow(outputs, np.ones(len(texts), bool), None)
        assert_classification_matches(column, texts, oracle)
        # 62 short rows fit one budget: one micro-batch, shared by both tasks.
        assert counters["micro_batches"] == 1 and counters["cross_task_batches"] == 1, counters


def test_a_failing_decoding_step_refuses_its_requests_and_the_decoder_serves_on(
    executor: Path, tiny_causal_lm: str
) -> None:
    spec = ModelSpec(tiny_causal_lm, task="generation", device="cpu", max_new_tokens=4)
    loaded, server, ends, clients = _server_with_two_clients(spec, executor)
    ids = [np.asarray(e.ids, np.int32) for e in loaded.head.prepare(["a short prompt", "another one"])]
    server.compute(spec.cache_key, [host_server._Request(c, 3, spec, ids, time.monotonic()) for c in clients])
    decoder = server.decoders[spec.cache_key]  # a causal GPT-2: decoded continuously

    def broken() -> None:
        raise RuntimeError("the step broke")

    decoder.step = broken
    server.decode_step()
    for mine, _ in ends:
        assert mine.poll(10), "a request with rows in the failed step was not answered"
        kind, number, (name, message) = mine.recv()
        assert (kind, number, name) == ("error", 3, "RuntimeError") and "the step broke" in message
    assert server.decoding == {} and not decoder.busy
    del decoder.step  # mended: the same decoder takes the next request
    server.compute(spec.cache_key, [host_server._Request(clients[0], 4, spec, ids, time.monotonic())])
    while server.decoding:
        server.decode_step()
    assert ends[0][0].poll(10)
    kind, number, (outputs, failed, _) = ends[0][0].recv()
    assert (kind, number, failed, len(outputs)) == ("done", 4, {}, 2)
    assert list(outputs) == list(loaded.head.forward(*_padded(loaded, ids)))


def _padded(loaded: Any, ids: list[Any]) -> tuple[Any, Any]:
    """The rows as one left-padded micro-batch, for the static head (the reference)."""
    import torch

    from sparkinfer.engine.batching import pad

    input_ids, mask = pad([list(map(int, x)) for x in ids], np.arange(len(ids)), pad_id=loaded.pad_id, side="left")
    return torch.from_numpy(input_ids), torch.from_numpy(mask)


def test_per_row_errors_and_out_of_memory_splits_behave_as_in_the_worker(
    executor: Path, tiny_classifier: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = ModelSpec(tiny_classifier, task="classification", device="cpu", on_error="column", max_batch_size=16)
    loaded, _ = cache.get_model(spec, device="cpu")
    bad = loaded.head.prepare(["word"])[0].ids[1]  # a token of the rows with i % 11 > 0 only
    monkeypatch.setenv(faults.ENV, f"fail_on_token={bad},oom_above_rows=4")  # the host inherits it
    texts = pa.array(TEXTS)
    here, here_metrics = run(spec.with_options(host="worker"), texts)
    hosted, hosted_metrics = run(spec.with_options(host="executor"), texts)
    assert 0 < hosted_metrics.error_rows < len(TEXTS) - 2
    assert hosted_metrics.error_rows == here_metrics.error_rows
    assert hosted_metrics.oom_splits == here_metrics.oom_splits > 0
    for i, (a, b) in enumerate(zip(here.to_pylist(), hosted.to_pylist())):
        assert (a is None) == (b is None), i
        if a is not None:
            assert a["error"] == b["error"], i
            if a["result"] is not None:
                assert a["result"]["label"] == b["result"]["label"], i
                assert a["result"]["score"] == pytest.approx(b["result"]["score"], abs=1e-6), i


def test_a_killed_host_fails_the_request_clearly_and_the_retry_elects_a_new_one(
    executor: Path, tiny_classifier: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(faults.ENV, f"kill_host_at_batch=1,once={tmp_path / 'once'}")
    spec = ModelSpec(tiny_classifier, task="classification", device="cpu", host="executor")
    texts = pa.array(TEXTS)
    with pytest.raises(HostError, match="went away before it answered") as failure:
        run(spec, texts)
    assert str(executor) in str(failure.value)  # the message names the host's log
    assert wait_for(lambda: not hosts_in(executor), 10)
    again, metrics = run(spec, texts)  # what Spark's retry of the task does
    assert_classification_matches(again, TEXTS, ClassifierOracle(tiny_classifier))
    assert metrics.host_loads == 1 and len(hosts_in(executor)) == 1


def test_a_host_that_cannot_load_its_model_names_its_log(executor: Path, tiny_classifier: str, tmp_path: Path) -> None:
    # The worker's skeleton (config and tokenizer) loads; the weights, which only the host reads, do not.
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_classifier, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    spec = ModelSpec(str(broken), task="classification", device="cpu", host="executor")
    with pytest.raises(HostError) as failure:
        run(spec, pa.array(["a text"]))
    message = str(failure.value)
    assert f"exited with status {host_server.LOAD_FAILED} while loading the model" in message
    assert str(executor) in message and "could not load" in message and "host='worker'" in message


def test_an_idle_host_exits(executor: Path, tiny_classifier: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(host.IDLE_ENV, "1")
    run(ModelSpec(tiny_classifier, task="classification", device="cpu", host="executor"), pa.array(TEXTS))
    [pid] = hosts_in(executor)
    time.sleep(2)
    assert hosts_in(executor) == [pid]  # a connected client keeps it alive
    for client in host._CLIENTS.values():
        client.close()
    assert wait_for(lambda: not hosts_in(executor), 10)
    assert "exiting: idle for 1 s without a client" in log_text(executor)


def test_a_host_ends_at_its_first_signal_and_logs_one_exit(executor: Path, tiny_classifier: str) -> None:
    """PySpark's daemon sends its process group SIGHUP twice when it stops: a signal arriving while the host
    is exiting must not log a second exit line (nor run the exit twice)."""
    run(ModelSpec(tiny_classifier, task="classification", device="cpu", host="executor"), pa.array(TEXTS[:4]))
    [pid] = hosts_in(executor)
    while hosts_in(executor):  # a burst, as fast as the process table can be read, until the host is gone
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            break
    assert re.findall(r"exiting: (.*)", log_text(executor)) == ["signal SIGHUP"], log_text(executor)


def test_an_exit_signal_that_interrupts_the_exit_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second SIGHUP arriving while the first one's handler logs (what the daemon's double SIGHUP can do)."""
    handler = host_server._on_signal("k")
    ended: list[int] = []
    monkeypatch.setattr(os, "_exit", ended.append)  # the host's os and logging modules are these
    monkeypatch.setattr(logging, "shutdown", lambda: None)
    lines: list[str] = []

    class Interrupting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())
            if len(lines) == 1:
                handler(signal.SIGHUP, None)  # the second signal, in the middle of the first one's exit

    monkeypatch.setattr(host_server, "_exiting", threading.Lock())
    interrupting, level = Interrupting(), host_server.log.level
    host_server.log.addHandler(interrupting)
    host_server.log.setLevel(logging.INFO)
    try:
        handler(signal.SIGHUP, None)
    finally:
        host_server.log.removeHandler(interrupting)
        host_server.log.setLevel(level)
    assert lines == ["sparkinfer host k exiting: signal SIGHUP"] and ended == [0]


def test_the_host_directory_must_be_private(executor: Path) -> None:
    executor.mkdir(parents=True, exist_ok=True)
    executor.chmod(0o755)
    with pytest.raises(HostError, match="must belong to this user .* and be private"):
        host.host_dir()


def test_host_counters_add_up_and_clients_take_the_maximum() -> None:
    total = Metrics(host_clients=3, host_requests=2) + Metrics(host_clients=2, host_requests=1)
    assert (total.host_clients, total.host_requests) == (3, 3)
