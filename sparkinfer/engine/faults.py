"""Fault injection and load tracing for tests that need a real executor: off unless asked for.

Recovery code (out-of-memory splits, Spark task retries) must be tested where it runs: inside Spark's
Python workers, which a test cannot monkeypatch. A test asks for faults through the environment the
workers start with: ``spark.sparkContext.environment["SPARKINFER_FAULTS"] = "oom_above_rows=4"`` before
the UDF is built, ``--conf spark.executorEnv.SPARKINFER_FAULTS=...`` for spark-submit, or the environment
of a subprocess. Without the variable the hook costs one dictionary lookup per micro-batch.

Faults (comma-separated ``name=value``):

* ``oom_above_rows=N``: a micro-batch of more than N rows raises ``torch.cuda.OutOfMemoryError``, as a
  GPU out of memory does (the error can be constructed without a GPU).
* ``fail_on_token=ID``: a micro-batch holding token id ID raises ``ValueError``, as a row the model cannot
  handle does: the runner's bisection must then fail exactly the rows holding it.
* ``exit_at_batch=K``: the Python worker process exits abruptly (``os._exit``) before its K-th
  micro-batch, as a worker killed by the OS does.
* ``kill_executor_at_batch=K``: before its K-th micro-batch the worker SIGKILLs the executor JVM it runs
  under (the ``CoarseGrainedExecutorBackend`` among its ancestors), as a lost executor does.
* ``kill_host_at_batch=K``: an executor's model host (``ModelSpec.host="executor"``) SIGKILLs itself
  before its K-th micro-batch, as a host killed by the OS does; other processes ignore it.
* ``exit_after_request=K``: a worker feeding a model host exits abruptly right after sending its K-th
  request, while the host works on it, as a task killed mid-request does.
* ``exit_before_publish=1``: a validated job's driver exits abruptly (``os._exit``) after staging and
  validating its predictions, right before publishing them, as a driver killed there does.
* ``slow_per_token_us=N``: not a fault: every micro-batch sleeps N microseconds per token it holds
  (padded rows x length), so that a job of known length runs long enough to watch its progress.
* ``once=PATH``: the process faults above fire in the first process only, the one that creates PATH, so
  that Spark's retry of the task succeeds.
* ``cpu_4bit_path=reference`` or ``=packed``: not a fault: every 4-bit model this process loads takes that
  bitsandbytes CPU path, whatever the CPU (see `set_cpu_4bit_path`), so that a test runs both paths on
  every machine.
* ``trace_loads=DIR``: not a fault: every load of weights appends a line ``<executor JVM pid> <process pid>
  <model>`` to ``DIR/loads-<process pid>.txt``, so a test can count loads per Python worker and per executor.
  In a model host the host writes it, with the executor of the worker that started it.
* ``trace_fetches=DIR``: not a fault: every step of a remote model's node cache (``engine/sources/_node.py``)
  appends a line ``<event> <process pid> <executor JVM pid> <time.monotonic()> <key>`` to
  ``DIR/fetches-<process pid>.txt``; the events are ``wait`` (another process holds the download lock),
  ``download`` (this process downloads), ``done`` (its download is in place) and ``reuse`` (it found one).
* ``slow_download_ms=N``: not a fault: a remote model's download sleeps N ms after each file, so that a
  test can see other processes wait, or kill a download midway.

Faults that fire "before a micro-batch" fire where micro-batches run: in a model host, in the host.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from sparkinfer.errors import SpecError

ENV = "SPARKINFER_FAULTS"
EXIT_STATUS = 86  # what a worker ended by exit_at_batch exits with
_COUNTS = ("oom_above_rows", "fail_on_token", "exit_at_batch", "kill_executor_at_batch", "kill_host_at_batch",
           "exit_after_request", "exit_before_publish", "slow_per_token_us", "slow_download_ms")
_PATHS = ("once", "trace_loads", "trace_fetches")
_CHOICES = {"cpu_4bit_path": ("reference", "packed")}
_batches = 0  # micro-batches this process has started
_requests = 0  # requests this process has sent to a model host
# Set by a model host process: the executor JVM it serves (for trace_loads), and that it is a host.
host_executor: int | None = None
in_host = False


def _parse(text: str) -> dict[str, str]:
    faults: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if not ((name in _COUNTS and value.isdigit()) or (name in _PATHS and value)
                or value in _CHOICES.get(name, ())):
            raise SpecError(
                f"{ENV} must hold name=value items: {', '.join(f'{n}=<int>' for n in _COUNTS)}, once=<path>, "
                f"trace_loads=<dir>, trace_fetches=<dir> or cpu_4bit_path=reference|packed (got {text!r}); e.g. "
                f"{ENV}=oom_above_rows=4, or unset it"
            )
        faults[name] = value
    return faults


def _asked() -> dict[str, str]:
    """The faults the environment asks for (none without the variable: one dictionary lookup)."""
    text = os.environ.get(ENV)
    return _parse(text) if text else {}


def before_forward(input_ids: Any) -> None:
    """Raise or perform the fault the environment asks for, if any, before a micro-batch runs.

    Args:
        input_ids: The micro-batch's padded token ids (a tensor of shape rows x length).
    """
    global _batches
    faults = _asked()
    if not faults:
        return
    _batches += 1
    rows = int(input_ids.shape[0])
    if "slow_per_token_us" in faults:
        import time

        time.sleep(int(faults["slow_per_token_us"]) * rows * int(input_ids.shape[1]) / 1e6)
    if "oom_above_rows" in faults and rows > int(faults["oom_above_rows"]):
        import torch

        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected by {ENV}: more than {rows} rows)")
    if "fail_on_token" in faults and bool((input_ids == int(faults["fail_on_token"])).any()):
        raise ValueError(f"injected by {ENV}: the micro-batch holds token id {faults['fail_on_token']}")
    acts = [("exit_at_batch", _exit_worker), ("kill_executor_at_batch", _kill_executor)]
    if in_host:
        acts.append(("kill_host_at_batch", _kill_self))
    for name, act in acts:
        if faults.get(name) == str(_batches) and _first_time(faults.get("once")):
            act()


def after_request() -> None:
    """Perform ``exit_after_request`` if asked: called by a worker once a request is on its way to the host."""
    global _requests
    faults = _asked()
    if not faults:
        return
    _requests += 1
    if faults.get("exit_after_request") == str(_requests) and _first_time(faults.get("once")):
        _exit_worker()


def before_publish() -> None:
    """Perform ``exit_before_publish`` if asked: called by the job's driver right before it publishes."""
    if _asked().get("exit_before_publish") == "1":
        os._exit(EXIT_STATUS)


def after_load(name: str, model: Any) -> None:
    """Record a model load (``trace_loads=DIR``) and set its 4-bit CPU path (``cpu_4bit_path``), if asked."""
    faults = _asked()
    if "cpu_4bit_path" in faults:
        set_cpu_4bit_path(model, faults["cpu_4bit_path"])
    directory = faults.get("trace_loads")
    if directory is None:
        return
    executor = host_executor if in_host else executor_pid()
    with open(Path(directory) / f"loads-{os.getpid()}.txt", "a", encoding="utf-8") as out:
        out.write(f"{executor if executor is not None else '-'} {os.getpid()} {name}\n")


def trace_fetch(event: str, key: str) -> None:
    """Record a step of the node cache (``trace_fetches=DIR``), if asked."""
    directory = _asked().get("trace_fetches")
    if directory is None:
        return
    import time

    executor = host_executor if in_host else executor_pid()
    with open(Path(directory) / f"fetches-{os.getpid()}.txt", "a", encoding="utf-8") as out:
        out.write(f"{event} {os.getpid()} {executor if executor is not None else '-'} {time.monotonic():.6f} {key}\n")


def after_download_file() -> None:
    """Sleep ``slow_download_ms`` after a downloaded file, if asked."""
    delay = _asked().get("slow_download_ms")
    if delay is not None:
        import time

        time.sleep(int(delay) / 1000)


def set_cpu_4bit_path(model: Any, path: str) -> int:
    """Make the 4-bit layers of a freshly loaded `model` take one of bitsandbytes' two CPU paths.

    ``"packed"`` repacks each weight at its first forward for the fused AVX-512-BF16 kernel (computing in
    bf16); ``"reference"`` dequantizes and multiplies in the compute dtype. bitsandbytes picks by the CPU,
    in the ``support_avx512bf16_for_cpu`` attribute each ``Linear4bit`` sets when it is built and reads at
    every forward; this sets it. Call it before the first forward: a weight once repacked stays so.

    Returns:
        How many layers were set.

    Raises:
        SpecError: For ``"packed"`` on a CPU without AVX-512-BF16, where the fused kernel cannot run.
    """
    from bitsandbytes.functional import has_avx512bf16

    if path == "packed" and not has_avx512bf16():  # type: ignore[no-untyped-call]
        raise SpecError(
            f"{ENV}: cpu_4bit_path=packed needs a CPU with AVX-512-BF16 (this one has none); use "
            "cpu_4bit_path=reference, or run on such a CPU"
        )
    layers = [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = path == "packed"
    return len(layers)


def _first_time(marker: str | None) -> bool:
    """True in the one process that creates `marker` (always True without one)."""
    if marker is None:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _exit_worker() -> None:
    os._exit(EXIT_STATUS)


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_executor() -> None:
    pid = executor_pid()
    if pid is None:
        raise RuntimeError(f"{ENV}: kill_executor_at_batch found no executor JVM among this process's ancestors")
    os.kill(pid, signal.SIGKILL)


def executor_pid() -> int | None:
    """The executor JVM (``CoarseGrainedExecutorBackend``) among this process's ancestors (Linux /proc)."""
    pid = os.getppid()
    while pid > 1:
        proc = Path(f"/proc/{pid}")
        try:
            if b"CoarseGrainedExecutorBackend" in (proc / "cmdline").read_bytes():
                return pid
            pid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:  # no /proc, or the ancestor just exited
            return None
    return None
