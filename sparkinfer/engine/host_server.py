"""The executor model host process: ``python -m sparkinfer.engine.host_server --dir DIR --key KEY``.

Started by `host.connect` (never by hand), with a `host.Bootstrap` on its standard input. It loads the
weights once, then serves every worker of its executor that connects:

* one reader thread per connection queues its requests (a chunk of a task's rows, as token ids);
* the main thread computes them: each round takes every queued request of one spec and runs all their rows
  through `runner.forward_rows` together, in the same length-sorted token-budget micro-batches (with the
  out-of-memory split and the per-row bisection of the in-process engine), and answers each request with
  its rows' outputs, failures and counters. Generation with a causal LM is decoded continuously
  (`continuous.ContinuousDecoder`): rows of every task share the decoding batch, and a finished row's
  slot is refilled from the queue at the next step;
* a watchdog thread ends the process when the executor JVM or the PySpark daemon goes away, or after the
  idle timeout without a client.

A connection that closes (its task was killed) has its queued requests dropped, and its rows in the
decoding batch cancelled. The host logs one line when it starts and one when it exits, in its log file.
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any, NoReturn, cast

import numpy as np
import numpy.typing as npt

from sparkinfer.engine import cache, faults, host
from sparkinfer.engine.batching import IntArray
from sparkinfer.engine.loading import LoadedModel
from sparkinfer.engine.runner import Budget, describe, forward_rows
from sparkinfer.spec import ModelSpec

log = logging.getLogger("sparkinfer.host")
LOAD_FAILED = 3  # the exit status of a host whose model did not load
_exiting = threading.Lock()  # held by the thread that ends the process


@dataclass(eq=False)
class _Client:
    """One connected worker."""

    number: int
    conn: Connection
    pid: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    gone: bool = False

    def send(self, message: Any) -> None:
        if self.gone:
            return
        try:
            with self.lock:
                self.conn.send(message)
        except OSError:  # it went away meanwhile; its reader thread notices
            self.gone = True


@dataclass(eq=False)
class _Request:
    """One chunk of one task's rows, and what the host counted for it."""

    client: _Client
    number: int
    spec: ModelSpec
    ids: list[Any]
    arrived: float
    counters: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    outputs: npt.NDArray[Any] | None = None
    failed: dict[int, str] = field(default_factory=dict)
    left: int = 0  # rows still decoding (continuous generation)

    def answer(self) -> None:
        counters = {k: (v if k.endswith("seconds") else int(v)) for k, v in self.counters.items()}
        self.client.send(("done", self.number, (self.outputs, self.failed, counters)))

    def refuse(self, exc: BaseException) -> None:
        self.client.send(("error", self.number, (type(exc).__name__, f"{type(exc).__name__}: {exc}")))


class _Server:
    def __init__(self, boot: host.Bootstrap, key: str, log_path: Path) -> None:
        self.boot = boot
        self.key = key
        self.log_path = log_path
        self.cond = threading.Condition()
        self.queue: list[_Request] = []
        self.clients: dict[int, _Client] = {}
        self.numbers = itertools.count(1)
        self.idle_since = time.monotonic()
        self.budgets: dict[ModelSpec, Budget] = {}
        self.decoders: dict[ModelSpec, Any] = {}
        self.decoding: dict[Hashable, tuple[_Request, int]] = {}  # decoder row key → (request, row)
        self.load_reported = False

    # ------------------------------------------------------------------------------------------- connections

    def accept(self, listener: Listener) -> None:
        while True:
            try:
                conn = listener.accept()
            except Exception as exc:  # a peer without the secret, or one that hung up during the handshake
                log.warning("sparkinfer host: refused a connection: %s: %s", type(exc).__name__, exc)
                continue
            client = _Client(next(self.numbers), conn)
            threading.Thread(target=self.read, args=(client,), daemon=True, name=f"client-{client.number}").start()

    def read(self, client: _Client) -> None:
        try:
            kind, hello = client.conn.recv()
            if kind != "hello" or hello.get("protocol") != host.PROTOCOL:
                return
            client.pid = int(hello.get("pid", 0))
            with self.cond:
                self.clients[client.number] = client
            client.send(("ready", {"pid": os.getpid(), "log": str(self.log_path)}))
            while True:
                kind, number, spec, flat, lengths = client.conn.recv()
                ids = np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
                with self.cond:
                    self.queue.append(_Request(client, number, spec, ids, time.monotonic()))
                    self.cond.notify()
        except (EOFError, OSError):
            pass
        finally:
            self.leave(client)

    def leave(self, client: _Client) -> None:
        """Forget a connection that closed: drop its queued requests, cancel its rows being decoded."""
        with self.cond:
            client.gone = True
            self.clients.pop(client.number, None)
            dropped = [r for r in self.queue if r.client is client]
            self.queue = [r for r in self.queue if r.client is not client]
            cancelled = [key for key, (request, _) in self.decoding.items() if request.client is client]
            if not self.clients:
                self.idle_since = time.monotonic()
            self.cond.notify()
        for key in cancelled:
            request, _ = self.decoding.pop(key)
            self.decoders[request.spec.cache_key].cancel([key])
        client.conn.close()
        if dropped or cancelled:
            log.info(
                "sparkinfer host: client %d (pid %d) left; dropped %d queued request(s), cancelled %d decoding row(s)",
                client.number, client.pid, len(dropped), len(cancelled),
            )

    # ------------------------------------------------------------------------------------------- computing

    def serve(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.decoding:
                    self.cond.wait(timeout=1.0)
                taken, self.queue = self.queue, []
                clients = len(self.clients)
            started = time.monotonic()
            rounds: dict[ModelSpec, list[_Request]] = defaultdict(list)
            for request in taken:
                request.counters["queue_wait_seconds"] += started - request.arrived
                request.counters["host_clients"] = clients
                if not self.load_reported:  # the host's load is counted once, by the first request it serves
                    request.counters["host_loads"] = 1
                    request.counters["model_load_seconds"] = self.model(request.spec.cache_key).load_seconds
                    self.load_reported = True
                rounds[request.spec.cache_key].append(request)
            for key, requests in rounds.items():
                self.compute(key, requests)
            if self.decoding:
                self.decode_step()

    def model(self, key: ModelSpec) -> LoadedModel:
        loaded, _ = cache.get_model(key, device=self.boot.device)
        return loaded

    def compute(self, key: ModelSpec, requests: list[_Request]) -> None:
        """One round: the rows of every request of one spec, in shared micro-batches; each request answered."""
        try:
            loaded = self.model(key)
            if key in self.decoders or _continuous(loaded):
                self.admit(key, loaded, requests)
                return
            budget = self.budgets.setdefault(key, Budget(min(r.spec.batch_tokens for r in requests)))
            ids = [row for r in requests for row in r.ids]
            owner = np.repeat(np.arange(len(requests)), [len(r.ids) for r in requests])
            lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))

            def count(rows: IntArray, width: int, ok: bool) -> None:
                owners, rows_each = np.unique(owner[rows], return_counts=True)
                shared = len({requests[o].client.number for o in owners}) > 1
                for o, n in zip(owners, rows_each):
                    counters = requests[o].counters
                    if ok:
                        counters["micro_batches"] += 1
                        counters["padded_tokens"] += int(n) * max(width, 1)
                        counters["cross_task_batches"] += shared
                    else:
                        counters["oom_splits"] += 1

            outputs, failed = forward_rows(
                loaded, ids, lengths, budget, max_batch_size=min(r.spec.max_batch_size for r in requests),
                overlap=True, stop_on_error=False, on_batch=count,
            )
        except Exception as exc:  # a spec the model cannot serve, a row too big alone: fail these requests
            log.warning("sparkinfer host: a round of %d request(s) failed: %s", len(requests), describe(exc))
            for request in requests:
                request.refuse(exc)
            return
        start = 0
        for request in requests:
            stop = start + len(request.ids)
            request.outputs = outputs[start:stop]
            request.failed = {row - start: describe(exc) for row, exc in failed.items() if start <= row < stop}
            request.answer()
            start = stop

    def admit(self, key: ModelSpec, loaded: LoadedModel, requests: list[_Request]) -> None:
        """Queue the rows of generation requests into the spec's continuous decoder."""
        from sparkinfer.engine.continuous import ContinuousDecoder
        from sparkinfer.engine.tasks.generation import GenerationHead

        decoder = self.decoders.get(key)
        if decoder is None:
            spec = requests[0].spec
            head = cast(GenerationHead, loaded.head)
            decoder = ContinuousDecoder(head, batch_tokens=spec.batch_tokens, max_batch_size=spec.max_batch_size)
            self.decoders[key] = decoder
        for request in requests:
            request.outputs = np.empty(len(request.ids), dtype=object)
            request.left = len(request.ids)
            if not request.ids:
                request.answer()
            for row, ids in enumerate(request.ids):
                row_key = (request.client.number, request.number, row)
                self.decoding[row_key] = (request, row)
                decoder.submit(row_key, [int(t) for t in ids])

    def decode_step(self) -> None:
        """One step of every decoder that has rows; answer the requests whose last row finished."""
        requests = {id(request): request for request, _ in self.decoding.values()}
        shared = len({request.client.number for request in requests.values()}) > 1
        for request in requests.values():  # every request with rows in the batch takes part in this step
            request.counters["micro_batches"] += 1
            request.counters["cross_task_batches"] += shared
        for decoder in list(self.decoders.values()):
            if not decoder.busy:
                continue
            try:
                finished = decoder.step()
            except Exception as exc:  # not a row's fault (those come back as results): fail every row
                self._fail_decoder(decoder, exc)
                continue
            for row_key, done in finished:
                entry = self.decoding.pop(row_key, None)
                if entry is None:  # cancelled meanwhile
                    continue
                request, row = entry
                assert request.outputs is not None
                result = done.result
                if isinstance(result, Exception):
                    request.failed[row] = describe(result)
                    request.outputs[row] = ("", 0, 0, "length")
                else:
                    request.outputs[row] = result
                    request.counters["padded_tokens"] += result[1] + result[2]
                request.left -= 1
                if request.left == 0:
                    request.answer()

    def _fail_decoder(self, decoder: Any, exc: Exception) -> None:
        """Refuse every request with rows in `decoder`, whose step failed, and drop those rows."""
        log.warning("sparkinfer host: a decoding step failed: %s", describe(exc))
        keys = [k for k, (r, _) in self.decoding.items() if self.decoders.get(r.spec.cache_key) is decoder]
        decoder.cancel(keys)
        for request in {id(self.decoding[k][0]): self.decoding[k][0] for k in keys}.values():
            request.left = 0
            request.refuse(exc)
        for k in keys:
            del self.decoding[k]

    # ------------------------------------------------------------------------------------------- lifetime

    def watch(self) -> None:
        """End the process when a watched process goes away, or after the idle timeout without a client."""
        while True:
            time.sleep(0.5)
            for pid, start in self.boot.watch:
                if host.start_time(pid) != start:
                    _exit(self.key, f"pid {pid}, which it serves, ended (the executor JVM, the PySpark daemon, or the process that started it)")
            with self.cond:
                idle = not self.clients and not self.queue and not self.decoding
                idle_for = time.monotonic() - self.idle_since
            if idle and idle_for > self.boot.idle_timeout:
                _exit(self.key, f"idle for {self.boot.idle_timeout:g} s without a client")


def _continuous(loaded: LoadedModel) -> bool:
    """Whether the head decodes continuously here: generation with a causal LM of plain full attention."""
    from sparkinfer.engine import continuous
    from sparkinfer.engine.tasks.generation import GenerationHead

    return isinstance(loaded.head, GenerationHead) and continuous.supports(loaded.head)


def _exit(key: str, reason: str, status: int = 0) -> NoReturn:
    """Log why the host ends and end it. Once: a second caller (another thread) waits for the first's exit."""
    _exiting.acquire()
    _end(key, reason, status)


def _on_signal(key: str) -> Callable[[int, Any], None]:
    """The handler of SIGHUP, SIGTERM and SIGINT: end the host, unless it is already ending.

    PySpark's daemon, when it stops, sends its process group SIGHUP twice (``shutdown`` is called again from
    the ``finally`` around its loop), and the second can interrupt this handler in the main thread. Taking
    the lock without waiting is one call, which a handler cannot interrupt: the interrupting handler (or one
    racing another thread's exit) finds it taken and returns, and the first exit ends the process.
    """

    def handle(number: int, _: Any) -> None:
        if _exiting.acquire(blocking=False):
            _end(key, f"signal {signal.Signals(number).name}")

    return handle


def _end(key: str, reason: str, status: int = 0) -> NoReturn:
    log.info("sparkinfer host %s exiting: %s", key, reason)
    logging.shutdown()
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparkinfer.engine.host_server")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(process)d %(message)s")
    directory, key = Path(args.dir), args.key
    log_path = directory / f"{key}.log"
    boot: host.Bootstrap = pickle.loads(sys.stdin.buffer.read())
    for number in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(number, _on_signal(key))
    # One host per key: the lock is held for the process's life and released by the kernel when it ends.
    lock = open(os.open(directory / f"{key}.host.lock", os.O_RDWR | os.O_CREAT, 0o600), "wb")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("sparkinfer host %s not started: another host holds %s", key, lock.name)
        return 0
    faults.in_host = True
    faults.host_executor = boot.executor
    if boot.device == "cpu":
        import torch

        torch.set_num_threads(boot.threads)
    log.info(
        "sparkinfer host %s started: pid %d, %s (%s) on %s, %d thread(s), idle timeout %g s",
        key, os.getpid(), boot.spec.model, boot.spec.task, boot.device, boot.threads, boot.idle_timeout,
    )
    try:
        loaded, _ = cache.get_model(boot.spec, device=boot.device)
    except Exception as exc:
        log.exception("sparkinfer host %s could not load the model", key)
        _exit(key, f"the model did not load: {describe(exc)}", LOAD_FAILED)
    log.info("sparkinfer host %s loaded the model in %.2f s (%.1f MiB)", key, loaded.load_seconds, loaded.memory_bytes / 2**20)
    server = _Server(boot, key, log_path)
    listener = Listener(host.address(key), family="AF_UNIX", authkey=boot.secret)
    threading.Thread(target=server.watch, daemon=True, name="watchdog").start()
    threading.Thread(target=server.accept, args=(listener,), daemon=True, name="accept").start()
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
