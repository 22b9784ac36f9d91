"""A running job's progress: rows done and to do, rows/s, tokens/s and an ETA, while the rows are predicted.

Spark tells the driver nothing of a task until it ends, and a prediction task can run for an hour. So the
tasks say it themselves: every Python worker sends a small UDP datagram to the driver at most once a second,
holding the rows and tokens it has tokenized and finished since the last one (`Sender`, fed by the engine
after every micro-batch). The driver (`Progress`) sums them, and every ``interval`` seconds logs one line
(the command line prints sparkinfer's log on stderr) or, in a Jupyter/Databricks notebook, moves a tqdm bar.
The moment every row is predicted it logs at once ("... predicted; writing and committing"), not an interval late.

The ETA weighs rows and tokens. A task computes its longest rows first (length-sorted micro-batches), so
its rows/s rises as it goes and its tokens/s falls: an ETA from either rate alone is wrong by the length
spread. Time is modelled as ``a * rows + b * tokens``, fitted (non-negative least squares) to the run's
history, sampled every second; the tokens still to do are the rows to do times the tokens per row seen so
far (rows are tokenized a buffer ahead of computing). When that cost model holds, the true remaining time
lies between the rows-only and the tokens-only estimates, so the ETA is kept between them.

The address travels inside the prediction function itself (its closure, pickled to the executors), so it
works the same on classic Spark and on Spark Connect. Datagrams carry a random token that names the job and
the chunk, so strays (an earlier chunk's late tasks, another job) are ignored. Nothing here can fail a task:
a lost datagram only makes the estimate late, and chunk commits (exact counts, from the rows themselves)
correct it. Where executors cannot reach the driver (a Connect client outside the cluster's network), the
counts come from the commits alone. A retried task's rows are counted twice until its chunk commits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sparkinfer.spark.partitioning import FEW

log = logging.getLogger("sparkinfer")

SEND_EVERY = 1.0  # seconds between a worker's datagrams, at most one per this
SAMPLE_EVERY = 1.0  # seconds between the driver's samples of the counts, for the ETA's fit
KEEP = 600  # samples kept before thinning the history to every other one
FIT_GAIN = 0.5  # the rows term is used when it halves the residual of the tokens-only fit
WATCH_GRACE = 30.0  # seconds a prediction stage runs before `Watch` judges its task count
WATCH_EVERY = 1.0  # seconds between the watch's checks


class Sender:
    """Executor side: sums ``(rows, tokens)`` and sends them to the driver at most every `SEND_EVERY` s.

    Args:
        address: ``"host:port/token"`` from `Progress.address`.
    """

    def __init__(self, address: str) -> None:
        where, self._token = address.rsplit("/", 1)
        host, port = where.rsplit(":", 1)
        self._to = (host, int(port))
        self._counts = [0, 0, 0, 0]  # rows done, their tokens, rows tokenized, their tokens
        self._last = time.monotonic()
        self._socket: socket.socket | None = None

    def __call__(self, rows: int, tokens: int, seen_rows: int, seen_tokens: int) -> None:
        for i, value in enumerate((rows, tokens, seen_rows, seen_tokens)):
            self._counts[i] += value
        if time.monotonic() - self._last >= SEND_EVERY:
            self.flush()

    def flush(self) -> None:
        """Send what is summed (nothing when nothing is), ignoring any network error."""
        self._last = time.monotonic()
        if not any(self._counts):
            return
        payload = json.dumps({"t": self._token, "c": self._counts}).encode()
        self._counts = [0, 0, 0, 0]
        try:
            if self._socket is None:
                family = socket.AF_INET6 if ":" in self._to[0] else socket.AF_INET
                self._socket = socket.socket(family, socket.SOCK_DGRAM)
            self._socket.sendto(payload, self._to)
        except OSError:  # progress is best effort: never fail a task over it
            pass

    def close(self) -> None:
        """Flush and close the socket."""
        self.flush()
        if self._socket is not None:
            self._socket.close()
            self._socket = None


@dataclass(frozen=True)
class Snapshot:
    """Progress at one moment.

    Attributes:
        done: Rows done (committed chunks exactly, plus what the running chunk's tasks reported).
        total: Rows to predict in this run (None when unknown).
        tokens: Real tokens done.
        elapsed: Seconds since the first rows were done (None before).
        rows_per_second: `done` over `elapsed` (None before the first rows).
        tokens_per_second: `tokens` over `elapsed`.
        eta: Seconds left: the tokens still to do at `tokens_per_second` (None when unknown).
    """

    done: int
    total: int | None
    tokens: int
    elapsed: float | None
    rows_per_second: float | None
    tokens_per_second: float | None
    eta: float | None

    def line(self) -> str:
        """``9,720/19,444 rows (50.0%), 71.2 rows/s, 9,512 tokens/s, ETA 2m17s``."""
        of = f"/{self.total:,}" if self.total is not None else ""
        share = f" ({100 * self.done / self.total:.1f}%)" if self.total else ""
        if self.rows_per_second is None:
            return f"{self.done:,}{of} rows{share}, waiting for the first rows (loading the model)"
        if self.total is not None and self.done >= self.total:
            return f"{self.done:,}{of} rows{share} predicted; writing and committing"
        return (f"{self.done:,}{of} rows{share}, {self.rows_per_second:,.1f} rows/s, "
                f"{self.tokens_per_second or 0:,.0f} tokens/s, ETA {duration(self.eta)}")


def duration(seconds: float | None) -> str:
    """``2h03m``, ``4m05s``, ``12s``; ``?`` for unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Driver side: receives the tasks' datagrams and reports every `interval` seconds.

    Use it as a context manager around the chunks of one run::

        with Progress(total, interval=30, host=driver_host) as progress:
            for index, rows in enumerate(chunks):
                address = progress.start_chunk(index)         # passed to the prediction function
                ...                                           # the chunk's Spark job
                progress.commit(rows_written, tokens)

    Args:
        total: Rows this run predicts (None when unknown).
        interval: Seconds between lines (a notebook's bar moves every second).
        host: The address executors reach the driver at (``spark.driver.host``).
        bar: Show a tqdm bar instead of log lines; None decides (a notebook kernel gets the bar).
    """

    def __init__(self, total: int | None, *, interval: float = 30.0, host: str = "127.0.0.1",
                 bar: bool | None = None) -> None:
        self.total = total
        self.interval = interval
        self._host = host
        self._job = secrets.token_hex(8)
        self._chunk = ""
        self._committed = self._committed_tokens = 0
        self._streamed = [0, 0, 0, 0]  # the running chunk's: rows done, their tokens, rows tokenized, tokens
        self._first: float | None = None
        self._history: list[tuple[float, int, int]] = []  # (seconds since the first rows, rows, tokens)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socket: socket.socket | None = None
        self._bar_wanted = in_notebook() if bar is None else bar
        self._bar: Any = None

    # ---- the run's side

    def __enter__(self) -> Progress:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        self._socket.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        self._socket.settimeout(0.2)
        if self._bar_wanted:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, unit="rows", desc="sparkinfer", smoothing=0)
        self._threads = [threading.Thread(target=self._receive, name="sparkinfer-progress", daemon=True),
                         threading.Thread(target=self._tick, name="sparkinfer-progress-report", daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        if self._socket is not None:
            self._socket.close()
        if self._bar is not None:
            self._update_bar()
            self._bar.close()

    @property
    def address(self) -> str:
        """Where the running chunk's tasks send their datagrams: ``host:port/token``."""
        assert self._socket is not None, "Progress is used as a context manager"
        port = self._socket.getsockname()[1]
        return f"{self._host}:{port}/{self._job}.{self._chunk}"

    def start_chunk(self, index: int) -> str:
        """Begin chunk `index`; returns the address its tasks report to."""
        with self._lock:
            self._chunk = str(index)
            self._streamed = [0, 0, 0, 0]
        return self.address

    def commit(self, rows: int, tokens: int) -> None:
        """The running chunk committed `rows` rows of `tokens` real tokens: exact counts replace the reported."""
        with self._lock:
            self._committed += rows
            self._committed_tokens += tokens
            self._streamed = [0, 0, 0, 0]
            self._chunk = ""  # late datagrams of this chunk are ignored
            if self._first is None and rows:
                self._first = time.monotonic()

    def snapshot(self) -> Snapshot:
        """Where the run stands now."""
        with self._lock:
            done = self._committed + self._streamed[0]
            tokens = self._committed_tokens + self._streamed[1]
            seen = self._committed + self._streamed[2]
            seen_tokens = self._committed_tokens + self._streamed[3]
            first = self._first
        if self.total is not None:
            done = min(done, self.total)
        if first is None or done == 0:
            return Snapshot(done, self.total, tokens, None, None, None, None)
        elapsed = max(time.monotonic() - first, 1e-9)
        eta = None
        if self.total is not None:
            tokens_left = max(0.0, seen_tokens / seen * self.total - tokens) if seen and done < self.total else 0.0
            eta = estimate(self._history + [(elapsed, done, tokens)], self.total - done, tokens_left)
        return Snapshot(done, self.total, tokens, elapsed, done / elapsed, tokens / elapsed, eta)

    # ---- threads

    def _receive(self) -> None:
        assert self._socket is not None
        while not self._stop.is_set():
            try:
                data = self._socket.recv(4096)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with contextlib.suppress(ValueError, KeyError, TypeError):
                message = json.loads(data)
                with self._lock:
                    if message["t"] != f"{self._job}.{self._chunk}" or not self._chunk:
                        continue
                    counts = [int(c) for c in message["c"]]
                    if len(counts) != 4:
                        continue
                    self._streamed = [a + b for a, b in zip(self._streamed, counts)]
                    if self._first is None and counts[0]:
                        self._first = time.monotonic()

    def _tick(self) -> None:
        """Sample every `SAMPLE_EVERY` s; log on a fixed grid of `interval` s (no drift), the first line a sample
        early, so that no two lines (nor the run's start line and the first) are more than `interval` apart."""
        now = time.monotonic()
        next_sample, next_line, announced = now + SAMPLE_EVERY, now + self.interval - SAMPLE_EVERY, False
        while not self._stop.wait(max(0.0, min(next_sample, next_line) - time.monotonic())):
            now = time.monotonic()
            snapshot = self.snapshot()
            sampled = now >= next_sample
            if sampled:
                next_sample = max(next_sample + SAMPLE_EVERY, now)
                if snapshot.elapsed is not None:
                    self._history.append((snapshot.elapsed, snapshot.done, snapshot.tokens))
                    if len(self._history) > 2 * KEEP:
                        self._history = self._history[::2]
            finished = self.total is not None and snapshot.done >= self.total > 0
            if self._bar is not None:
                if sampled:
                    self._update_bar()
                next_line = math.inf
            elif now >= next_line or finished and not announced:  # the last rows at once, not a line late
                self._log()
                while next_line <= now:
                    next_line += max(self.interval, SAMPLE_EVERY / 10)
            announced = announced or finished

    def _log(self) -> None:
        snapshot = self.snapshot()
        log.info("sparkinfer: %s", snapshot.line(), extra={"progress": snapshot})

    def _update_bar(self) -> None:
        snap = self.snapshot()
        self._bar.n = snap.done
        self._bar.set_postfix_str(f"{snap.tokens_per_second or 0:,.0f} tokens/s", refresh=False)
        self._bar.refresh()


def estimate(history: list[tuple[float, int, int]], rows_left: float, tokens_left: float) -> float | None:
    """Seconds left for `rows_left` rows of `tokens_left` tokens, from ``(seconds, rows, tokens)`` done so far.

    Fits ``seconds = a * rows + b * tokens`` (a, b >= 0) to the history and clamps its answer between the
    rows-only and the tokens-only extrapolations (see the module docstring). A forward pass costs by the
    token, so ``seconds = b * tokens`` is preferred unless the rows term cuts the fit's residual to under
    `FIT_GAIN` of it: while rows of one length are computed (texts truncated at ``max_length``), rows and
    tokens are collinear and the history cannot tell them apart. With too little history for a fit, the
    geometric mean of the two extrapolations.
    """
    import numpy as np
    from scipy.optimize import nnls

    seconds, rows, tokens = history[-1]
    if rows <= 0 or seconds <= 0:
        return None
    by_rows = rows_left * seconds / rows
    by_tokens = tokens_left * seconds / tokens if tokens > 0 else by_rows
    low, high = min(by_rows, by_tokens), max(by_rows, by_tokens)
    points = np.array([p for p in history if p[1] > 0], dtype=float)
    if len(points) >= 3:
        (per_token,), tokens_only = nnls(points[:, 2:], points[:, 0])
        (a, b), both = nnls(points[:, 1:], points[:, 0])
        if both > FIT_GAIN * tokens_only:  # rows add nothing the tokens do not explain (or are collinear)
            a, b = 0.0, per_token
        if a > 0 or b > 0:
            return float(min(max(a * rows_left + b * tokens_left, low), high))
    return float(np.sqrt(low * high)) if low > 0 else float(high)


class Watch:
    """Driver side, for the Column API: warns when a prediction runs on far fewer tasks than the cluster has slots.

    A column builder (``si.embed`` ...) never sees its DataFrame, so it cannot count its partitions; its tasks
    can say they run. Each task sends a datagram when it starts and when it ends; a Spark stage whose first
    task started `WATCH_GRACE` seconds ago and that has still started fewer than half the slots' worth of
    tasks (at least 2) is running on too few partitions, and gets one warning. One watch per driver
    process, started by the first column builder on a classic session (Spark Connect gets none: sizing the
    cluster there costs a job).
    """

    _current: Watch | None = None
    _lock = threading.Lock()

    def __init__(self, slots: int, host: str) -> None:
        self.slots = slots
        self.token = secrets.token_hex(8)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        self._socket.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        self._socket.settimeout(WATCH_EVERY)
        self.address = f"{host}:{self._socket.getsockname()[1]}/{self.token}"
        self._stages: dict[int, tuple[float, set[int], set[int]]] = {}  # stage → (first start, started, ended)
        self._warned: set[int] = set()
        threading.Thread(target=self._run, name="sparkinfer-watch", daemon=True).start()

    @classmethod
    def address_for(cls, spark: Any) -> str | None:
        """The process's watch address (started on first use), or None where there is no watch."""
        with cls._lock:
            if cls._current is None:
                if spark is None or _is_connect(spark):
                    return None
                from sparkinfer.spark.partitioning import task_slots

                try:
                    cls._current = Watch(task_slots(spark), driver_host(spark))
                except OSError:  # no socket for it: no warning, never a failure
                    return None
            return cls._current.address

    def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError, socket.timeout, OSError, ValueError, KeyError, TypeError):
                message = json.loads(self._socket.recv(4096))
                if message["t"] == self.token:
                    stage, partition, event = int(message["s"]), int(message["p"]), str(message["e"])
                    first, started, ended = self._stages.setdefault(stage, (time.monotonic(), set(), set()))
                    (started if event == "start" else ended).add(partition)
            self._check()

    def _check(self) -> None:
        now = time.monotonic()
        wanted = max(2, math.ceil(FEW * self.slots))
        for stage, (first, started, ended) in list(self._stages.items()):
            if started <= ended and now - first > WATCH_GRACE:
                del self._stages[stage]  # every task it started has ended
            elif stage not in self._warned and now - first >= WATCH_GRACE and len(started) < wanted <= self.slots:
                self._warned.add(stage)
                log.warning(
                    "sparkinfer: a prediction (Spark stage %d) has run on %d task(s) for %.0f s while the cluster "
                    "has %d task slots, so %d of them idle. A file smaller than spark.sql.files.maxPartitionBytes "
                    "is read as one partition: call df = si.repartition_for_inference(df) before adding the "
                    "prediction column", stage, len(started), now - first, self.slots, self.slots - len(started),
                )


def notify(address: str | None, event: str) -> None:
    """Executor side: tell the driver's `Watch` that this task starts or ends (best effort, never raises)."""
    if address is None:
        return
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return
    where, token = address.rsplit("/", 1)
    host, port = where.rsplit(":", 1)
    payload = json.dumps({"t": token, "s": context.stageId(), "p": context.partitionId(), "e": event}).encode()
    with contextlib.suppress(OSError), socket.socket(
        socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM
    ) as out:
        out.sendto(payload, (host, int(port)))


def in_notebook() -> bool:
    """Whether this process is a Jupyter (or Databricks) notebook kernel, where a bar beats log lines."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    with contextlib.suppress(Exception):
        ip = shell.get_ipython()
        return ip is not None and "IPKernelApp" in ip.config
    return False


def driver_host(spark: Any) -> str:
    """The address executors reach this driver at: ``spark.driver.host`` on classic Spark; on Spark Connect,
    this client's address on the route to the server (``SPARKINFER_PROGRESS_HOST`` overrides either)."""
    import os

    override = os.environ.get("SPARKINFER_PROGRESS_HOST")
    if override:
        return override
    with contextlib.suppress(Exception):
        host = spark.conf.get("spark.driver.host", None)
        if host and not _is_connect(spark):
            return str(host)
    server = _connect_server(spark)
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((server or "8.8.8.8", 9))  # no packet is sent: this only picks the route
        return str(probe.getsockname()[0])
    return "127.0.0.1"


def _is_connect(spark: Any) -> bool:
    return type(spark).__module__.startswith("pyspark.sql.connect")


def _connect_server(spark: Any) -> str | None:
    with contextlib.suppress(Exception):
        return str(spark.client._builder.host)
    return None


@contextlib.contextmanager
def sending(address: str | None) -> Iterator[Sender | None]:
    """Executor side: a `Sender` for `address` (None when the job asked for no progress), closed at the end."""
    if address is None:
        yield None
        return
    sender = Sender(address)
    try:
        yield sender
    finally:
        sender.close()
