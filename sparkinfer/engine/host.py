"""The executor model host, client side: find the host of (executor, device, weights), or elect and start it.

With ``ModelSpec.host="executor"``, the Python workers of one Spark executor (one per task slot) share one
copy of the weights per device: a host process (`host_server`) holds them, and every worker tokenizes its
rows, sends their token ids to the host, and builds the output column from what comes back. The host puts
the rows of all its clients into the same token-budget micro-batches (and decodes generation
continuously), so partition tails and small partitions still fill a batch.

Identity and rendezvous. A host is keyed by the executor (``SPARK_LOCAL_DIRS``, which Spark sets to the
executor's own block-manager directories in every worker it starts; outside Spark, this process), the
device and the spec's `LoadKey`. Its socket is a Unix domain socket in Linux's abstract namespace, named
from the key: no TCP port to clash, no file to clean up, gone when the host dies. Connections are
authenticated with a secret only this user can read (``multiprocessing.connection``'s HMAC handshake).

Election. A worker that finds no host takes an exclusive ``flock`` on the key's lock file, looks again, and
if there is still none, starts one with ``subprocess.Popen`` (a fresh interpreter, never a fork of a
process that imported torch) and waits until it answers; workers waiting on the lock then find it. There
is no barrier job, no driver registry and no port: a new executor (dynamic allocation) elects its own.

Lifetime. The host stays in the PySpark daemon's process group, so the daemon's shutdown at the end of the
application hangs it up; it also watches the executor JVM and the daemon and exits when either goes, and
exits by itself after ``SPARKINFER_HOST_IDLE_TIMEOUT`` seconds (default 300) without a client. It never
depends on the worker that started it: that worker may be recycled or killed while others use the host.

Environment (set on executors with ``spark.executorEnv.NAME``):

* ``SPARKINFER_HOST_DIR``: where the hosts' lock, secret and log files live (default
  ``<tempdir>/sparkinfer-host-<uid>``, created private to the user). Each host logs to ``<dir>/<key>.log``.
* ``SPARKINFER_HOST_IDLE_TIMEOUT``: seconds without a client before the host exits (default 300).
* ``SPARKINFER_HOST_START_TIMEOUT``: seconds a worker waits for a new host to load its model (default 900).
* ``SPARKINFER_HOST_THREADS``: torch threads of a CPU host (default: the CPUs this process may use).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import logging
import os
import pickle
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sparkinfer.engine import faults
from sparkinfer.engine.metrics import MAXIMA, Metrics
from sparkinfer.errors import HostError, InferenceError, SpecError
from sparkinfer.spec import ModelSpec

log = logging.getLogger("sparkinfer")

PROTOCOL = 1  # part of the key: a worker never talks to a host of another sparkinfer protocol
DIR_ENV = "SPARKINFER_HOST_DIR"
IDLE_ENV = "SPARKINFER_HOST_IDLE_TIMEOUT"
START_ENV = "SPARKINFER_HOST_START_TIMEOUT"
THREADS_ENV = "SPARKINFER_HOST_THREADS"
SERVER_MODULE = "sparkinfer.engine.host_server"
class RowFailure(Exception):
    """A row's failure as a model host reported it: the message already names the original exception's type."""


@dataclass(frozen=True)
class Bootstrap:
    """What a new host is told on its standard input by the worker that starts it.

    Attributes:
        spec: A spec of the weights to load (any spec of the host's `LoadKey`).
        device: The torch device to load them on.
        secret: The connection secret (also in the key's secret file, for the other workers).
        watch: ``(pid, start time)`` of the processes whose end ends the host: the executor JVM and the
            PySpark daemon above the starting worker (outside Spark, the starting process itself).
        executor: The executor JVM's pid, for load traces (``None`` outside Spark).
        idle_timeout: Seconds without a client before the host exits.
        threads: torch threads (on CPU).
    """

    spec: ModelSpec
    device: str
    secret: bytes
    watch: tuple[tuple[int, int], ...]
    executor: int | None
    idle_timeout: float
    threads: int


def host_dir() -> Path:
    """The directory of the hosts' lock, secret and log files, created private to this user.

    Raises:
        HostError: When it exists but another user owns it or others may read it (secrets live there).
    """
    chosen = os.environ.get(DIR_ENV) or os.path.join(tempfile.gettempdir(), f"sparkinfer-host-{os.getuid()}")
    path = Path(chosen)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise HostError(
            f"the model host directory {str(path)!r} must belong to this user (uid {os.getuid()}) and be private "
            f"to it (mode 700), since it holds the hosts' secrets (got uid {info.st_uid}, mode "
            f"{oct(info.st_mode & 0o777)}); chmod 700 it, or point {DIR_ENV} to a directory of your own"
        )
    return path


def host_key(spec: ModelSpec, device: str, directory: Path) -> str:
    """The key of the host serving `spec`'s weights on `device` in this executor, with its files in `directory`.

    The directory is part of the key: workers told of another directory (``SPARKINFER_HOST_DIR``) hold other
    secrets, so they must not meet the same socket.
    """
    scope = os.environ.get("SPARK_LOCAL_DIRS") or f"process-{os.getpid()}"
    text = f"{PROTOCOL}|{scope}|{device}|{spec.load_key!r}|{directory.resolve()}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def address(key: str) -> str:
    """The host's socket: a name in Linux's abstract namespace (no file; freed when the host dies)."""
    return f"\0sparkinfer-{key}"


class HostClient:
    """One worker's connection to a host. A worker has one request (one chunk of rows) in flight at a time.

    Attributes:
        key: The host's key.
        pid: The host's process id.
        log_path: The host's log file, named in every error.
    """

    def __init__(self, conn: Connection, key: str, info: dict[str, Any]) -> None:
        self._conn = conn
        self.key = key
        self.pid: int = info["pid"]
        self.log_path: str = info["log"]
        self._ids = itertools.count()
        self.broken = False

    def run(
        self, spec: ModelSpec, ids: list[list[int]], metrics: Metrics
    ) -> tuple[npt.NDArray[Any], dict[int, Exception]]:
        """Compute rows in the host: their outputs, and the rows that failed alone (as `RowFailure`).

        The host's counters for this request are added to `metrics`.

        Raises:
            HostError: When the host goes away before it answers.
            SpecError: When the host finds the spec invalid for its model.
            InferenceError: When the host could not compute the request (e.g. one row too big for memory).
        """
        request = next(self._ids)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
        try:
            self._conn.send(("run", request, spec, flat, lengths))
            faults.after_request()
            reply = self._conn.recv()
        except (EOFError, OSError) as exc:
            self.close()
            raise HostError(
                f"the model host (pid {self.pid}) serving {spec.model!r} went away before it answered "
                f"({type(exc).__name__}: {exc or 'connection closed'}); it was probably killed (out of memory?). "
                f"Spark's retry of this task starts a new host. Its log: {self.log_path}"
            ) from exc
        kind, answered, payload = reply
        if answered != request:
            self.close()
            raise HostError(f"the model host (pid {self.pid}) answered request {answered}, expected {request}")
        metrics.host_requests += 1
        if kind == "error":
            name, message = payload
            error = SpecError if name == "SpecError" else InferenceError
            raise error(f"{message} (in the model host, pid {self.pid}; its log: {self.log_path})")
        outputs, failed, counters = payload
        for name, value in counters.items():
            before = getattr(metrics, name)
            setattr(metrics, name, max(before, value) if name in MAXIMA else before + value)
        return outputs, {row: RowFailure(message) for row, message in failed.items()}

    def close(self) -> None:
        self.broken = True
        with contextlib.suppress(OSError):
            self._conn.close()


# The connections of this process, by host key (like the model cache, one per process).
_CLIENTS: dict[str, HostClient] = {}


def connect(spec: ModelSpec, device: str) -> HostClient:
    """This process's connection to the host of `spec`'s weights on `device`, electing and starting one if none.

    Raises:
        HostError: When the host cannot start (its log's last lines are in the message) or the directory of
            the hosts' files is not private.
    """
    directory = host_dir()
    key = host_key(spec, device, directory)
    client = _CLIENTS.get(key)
    if client is not None and not client.broken:
        return client
    client = _try_connect(directory, key)
    if client is None:
        with _locked(directory / f"{key}.lock"):
            client = _try_connect(directory, key) or _start(spec, device, directory, key)
    _CLIENTS[key] = client
    return client


def _try_connect(directory: Path, key: str) -> HostClient | None:
    """A connection to a running host, or None when none answers (or it was started with another secret)."""
    from multiprocessing import AuthenticationError

    try:
        secret = (directory / f"{key}.secret").read_bytes()
        conn = Client(address(key), family="AF_UNIX", authkey=secret)
    except (OSError, EOFError, AuthenticationError):
        return None
    try:
        conn.send(("hello", {"pid": os.getpid(), "protocol": PROTOCOL}))
        kind, info = conn.recv()
    except (OSError, EOFError):
        conn.close()
        return None
    if kind != "ready":
        conn.close()
        return None
    return HostClient(conn, key, info)


def _start(spec: ModelSpec, device: str, directory: Path, key: str) -> HostClient:
    """Start a host (the caller holds the key's lock) and wait until it has loaded the model and answers."""
    secret = secrets.token_bytes(32)
    secret_path = directory / f"{key}.secret"
    temporary = secret_path.with_suffix(f".{os.getpid()}.tmp")
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        out.write(secret)
    os.replace(temporary, secret_path)
    log_path = directory / f"{key}.log"
    watch = _watched()
    bootstrap = Bootstrap(
        spec=spec, device=device, secret=secret, watch=watch, executor=faults.executor_pid(),
        idle_timeout=float(os.environ.get(IDLE_ENV, "300")), threads=_threads(),
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env["OMP_NUM_THREADS"] = str(bootstrap.threads)  # Spark sets spark.task.cpus for its workers
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", SERVER_MODULE, "--dir", str(directory), "--key", key],
            stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=env, close_fds=True,
        )
    assert process.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        process.stdin.write(pickle.dumps(bootstrap))
        process.stdin.close()
    _STARTED.append(process)
    timeout = float(os.environ.get(START_ENV, "900"))
    deadline = time.monotonic() + timeout
    log.info("sparkinfer: started a model host (pid %d) for %s on %s; log %s", process.pid, spec.model, device, log_path)
    while True:
        client = _try_connect(directory, key)
        if client is not None:
            return client
        status = process.poll()
        if status is not None:
            raise HostError(
                f"the model host for {spec.model!r} on {device} exited with {_status(status)} while loading the "
                f"model; its log {str(log_path)!r} ends with:\n{_tail(log_path)}\nFix the cause, or use "
                "host='worker' to load the model in each Python worker"
            )
        if time.monotonic() > deadline:
            process.kill()
            raise HostError(
                f"the model host for {spec.model!r} on {device} did not answer within {timeout:g} s "
                f"({START_ENV}); its log {str(log_path)!r} ends with:\n{_tail(log_path)}"
            )
        time.sleep(0.05)


# Hosts this process started: kept so that they are reaped (no zombie) when they exit first.
_STARTED: list[subprocess.Popen[bytes]] = []


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on `path`: the election of the worker that starts a host."""
    with open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "wb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _watched() -> tuple[tuple[int, int], ...]:
    """The processes whose end must end the host: this worker's ancestors up to the JVM that runs it.

    Under Spark that is the PySpark daemon and the executor JVM (or the JVM alone, without the daemon);
    outside Spark, no JVM is found and the host watches the process that started it.
    """
    chain: list[tuple[int, int]] = []
    pid = os.getppid()
    while pid > 1:
        start = start_time(pid)
        if start is None:
            break
        chain.append((pid, start))
        try:
            if b"java" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]:
                return tuple(chain)
        except OSError:
            break
        pid = _parent(pid)
    own = start_time(os.getpid())
    return ((os.getpid(), own),) if own is not None else ()


def start_time(pid: int) -> int | None:
    """A process's start time in clock ticks (Linux), to tell it from a later process given the same pid."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _threads() -> int:
    value = os.environ.get(THREADS_ENV)
    if value:
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _status(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    return f"status {code}"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(unreadable: {exc})"
