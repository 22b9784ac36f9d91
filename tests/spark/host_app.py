"""A driver application for tests/spark/test_host.py: several host scenarios on one local-cluster, in sequence.

A pytest process can hold only one SparkContext (the suite's local[2] one), so each cluster shape runs here,
in a subprocess: ``python tests/spark/host_app.py CONFIG.json``. The config names the master, a base
directory and the scenarios; the result JSON (``config["out"]``) holds, per scenario, the collected rows,
the load trace (``SPARKINFER_FAULTS=trace_loads``), the host processes seen, the peak PSS of the job's
Python processes when asked, and, after ``spark.stop()``, the host logs and the processes left behind.

Each scenario gets its own environment through ``sc.environment`` (its own host directory, faults and
idle timeout) and its own copy of the model (its own load key, so its own host). A new environment also
gives it a new pyspark daemon and Python workers: Spark keys its worker pools by the environment.

The process-table helpers below are Linux /proc readers shared with the test.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "tests" / "data" / "stdlib_docs_sample.parquet"
HOST_MODULE = "sparkinfer.engine.host_server"
EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"


# ------------------------------------------------------------------------------------------ rows


def texts(n: int) -> list[tuple[int, str | None]]:
    """The scenarios' input rows: (id, docstring), with a null text every 23 rows."""
    import pyarrow.parquet as pq

    docs = pq.read_table(DOCS).column("text").to_pylist()
    return [(i, None if i % 23 == 5 else str(docs[i % len(docs)])) for i in range(n)]


def texts_frame(spark: Any, rows: list[tuple[int, str | None]], path: Path) -> Any:
    """`rows` as a DataFrame (id, text) read from a Parquet file at `path`.

    Not ``spark.createDataFrame(rows)``: that parallelizes the rows as a Python RDD, whose tasks run a Python
    worker of the same pool upstream of the UDF's, so the UDF's tasks spread over twice as many workers.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids, values = zip(*rows)
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "text": pa.array(values, pa.string())}), path)
    return spark.read.parquet(str(path))


# ------------------------------------------------------------------------------------------ /proc


def process_table() -> dict[int, tuple[int, list[str]]]:
    """pid → (parent pid, argv) of every process this user can read."""
    table: dict[int, tuple[int, list[str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:  # it just exited
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        table[int(entry)] = (ppid, [a.decode(errors="replace") for a in argv if a])
    return table


def executor_jvms(table: dict[int, tuple[int, list[str]]], app_id: str) -> set[int]:
    """The executor JVMs of application `app_id`."""
    return {pid for pid, (_, argv) in table.items()
            if any(a.endswith(EXECUTOR_CLASS) for a in argv) and app_id in argv}


def descendants(table: dict[int, tuple[int, list[str]]], roots: set[int]) -> set[int]:
    """Every process below `roots` (not the roots themselves)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def hosts_under(table: dict[int, tuple[int, list[str]]], directory: str) -> dict[int, list[str]]:
    """pid → argv of the model hosts whose ``--dir`` lies in `directory` (or is it)."""
    root = os.path.realpath(directory)
    found: dict[int, list[str]] = {}
    for pid, (_, argv) in table.items():
        if HOST_MODULE not in argv:
            continue
        dirs = [os.path.realpath(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a == "--dir"]
        if any(d == root or d.startswith(root + os.sep) for d in dirs):
            found[pid] = argv
    return found


def pss_bytes(pid: int) -> tuple[int, int]:
    """The process's proportional set size, and its anonymous part (``Pss_Anon``); zeros when it is gone.

    PSS counts the pages of mapped files too: shared libraries, and a model's weights file while the loader
    maps it (safetensors maps the file; a float16 file loaded as float32 is mapped until the copy is done).
    """
    sizes = {"Pss:": 0, "Pss_Anon:": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name = line.split(maxsplit=1)[0] if line else ""
            if name in sizes:
                sizes[name] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return sizes["Pss:"], sizes["Pss_Anon:"]


class Sampler(threading.Thread):
    """Samples, every `interval` s, the Python processes serving one job and the hosts of its directory.

    The processes are those below the executor JVMs, plus the hosts whose ``--dir`` is `host_dir` (a host may
    leave the JVM's tree), minus every process that was already there when the sampler started: the
    daemons and workers of earlier scenarios (other environments) keep running, but serve other jobs.
    With ``measure=True`` it sums their PSS and keeps the peak.
    """

    def __init__(self, app_id: str, host_dir: str, *, measure: bool, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.app_id = app_id
        self.host_dir = host_dir
        self.measure = measure
        self.interval = interval
        table = process_table()
        self.before = descendants(table, executor_jvms(table, app_id)) | set(hosts_under(table, host_dir))
        self.hosts: dict[int, list[str]] = {}
        self.members: set[int] = set()
        self.seen: set[int] = set()
        self.peak = 0
        self.peak_anon = 0
        self.peak_detail: dict[str, int] = {}
        self.series: list[tuple[float, int, int]] = []  # (seconds since start, PSS, anonymous PSS)
        self.started = time.monotonic()
        self.samples = 0
        self._done = threading.Event()

    def sample(self) -> None:
        table = process_table()
        hosts = hosts_under(table, self.host_dir)
        self.hosts.update(hosts)
        below = descendants(table, executor_jvms(table, self.app_id))
        self.seen |= below | set(hosts)
        members = (below | set(hosts)) - self.before
        self.members |= members
        self.samples += 1
        if self.measure:
            sizes = {pid: pss_bytes(pid) for pid in members}
            total, anon = (sum(s[i] for s in sizes.values()) for i in (0, 1))
            self.series.append((round(time.monotonic() - self.started, 2), total, anon))
            self.peak_anon = max(self.peak_anon, anon)
            if total > self.peak:
                self.peak = total
                self.peak_detail = {
                    f"{pid} {'host' if pid in hosts else ' '.join(table[pid][1][-2:])}": size[0]
                    for pid, size in sizes.items()
                }

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.sample()


# ------------------------------------------------------------------------------------------ scenarios


def _column(scenario: dict[str, Any]) -> Any:
    import sparkinfer as si

    options = {"device": "cpu", "host": scenario["host"], **scenario.get("options", {})}
    return si.predict("text", scenario["model"], task=scenario["task"], **options)


def _plain(value: Any) -> Any:
    """A collected value as JSON: Rows become dicts."""
    if hasattr(value, "asDict"):
        return value.asDict(recursive=True)
    return value


def run_scenario(spark: Any, app_id: str, base: Path, scenario: dict[str, Any]) -> dict[str, Any]:
    """Run one scenario's job (and its follow-up) in its own environment; return what it saw."""
    name = scenario["name"]
    home = base / scenario.get("env", name)
    host_dir, trace = home / "host", home / "trace"  # the host directory is sparkinfer's to create (mode 700)
    trace.mkdir(parents=True, exist_ok=True)
    faults = ",".join(filter(None, [scenario.get("faults", "").replace("{home}", str(home)), f"trace_loads={trace}"]))
    spark.sparkContext.environment.update({
        "SPARKINFER_FAULTS": faults,
        "SPARKINFER_HOST_DIR": str(host_dir),
        "SPARKINFER_HOST_IDLE_TIMEOUT": str(scenario.get("idle_timeout", 600)),
    })
    result: dict[str, Any] = {"home": str(home), "host_dir": str(host_dir), "trace_dir": str(trace), "faults": faults}
    df = texts_frame(spark, texts(scenario["rows"]), home / f"{name}.parquet").repartition(scenario["partitions"])
    column = _column(scenario)  # after the environment: the UDF takes it when it is built
    sampler = Sampler(app_id, str(host_dir), measure=bool(scenario.get("memory")))
    sampler.start()
    started = time.monotonic()
    try:
        collected = df.select("id", column.alias("pred")).collect()
    finally:
        result["seconds"] = round(time.monotonic() - started, 2)
        sampler.stop()
    result["rows"] = [[row.id, _plain(row.pred)] for row in collected]
    if scenario.get("drop_rows"):  # large outputs (embeddings): keep only what the test checks
        result["rows"] = [[i, pred is not None] for i, pred in result["rows"]]
    result["hosts_seen"] = {str(pid): argv for pid, argv in sampler.hosts.items()}
    result["members"] = sorted(sampler.members)
    result["seen"] = sorted(sampler.seen)
    result["samples"] = sampler.samples
    if scenario.get("memory"):
        result["peak_pss_bytes"] = sampler.peak
        result["peak_anon_pss_bytes"] = sampler.peak_anon
        result["peak_detail"] = sampler.peak_detail
        result["series"] = sampler.series
    result["hosts_after_job"] = sorted(hosts_under(process_table(), str(host_dir)))
    result["job_ended"] = time.monotonic()
    return result


class HostWatch(threading.Thread):
    """Watches, from the end of a scenario's job, until its hosts are gone; says how many seconds that took.

    Nothing is done to the workers: a Python worker keeps its connection to the host while it lives, and
    Spark stops the idle workers of a pool one minute after the pool was last used (``PythonWorkerFactory``'s
    ``IDLE_WORKER_TIMEOUT_NS``); only then has the host no client, and its own idle timeout starts. Later
    scenarios run in other pools meanwhile, so most of that minute is not waited for.
    """

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.host_dir = result["host_dir"]
        self.ended = float(result["job_ended"])
        self.gone_after: float | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            if not hosts_under(process_table(), self.host_dir):
                self.gone_after = round(time.monotonic() - self.ended, 2)
                return
            self._halt.wait(0.25)

    def report(self, deadline: float) -> dict[str, Any]:
        """Wait until the hosts are gone or `deadline` s have passed since the job ended; what was seen."""
        self.join(max(0.0, self.ended + deadline - time.monotonic()))
        self._halt.set()
        self.join()
        return {
            "gone_after_seconds": self.gone_after,
            "deadline_seconds": deadline,
            "hosts_left": sorted(hosts_under(process_table(), self.host_dir)),
            "logs": _logs(Path(self.host_dir)),
            "app_up": True,  # measured before spark.stop()
        }


def _logs(host_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text(errors="replace") for p in sorted(host_dir.glob("*.log"))}


def _trace(trace: Path) -> list[list[str]]:
    return [line.split(maxsplit=2) for f in sorted(trace.glob("loads-*.txt")) for line in f.read_text().splitlines()]


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[1]).read_text())
    base = Path(config["base"])
    out: dict[str, Any] = {"scenarios": {}, "master": config["master"]}
    sys.path.insert(0, str(ROOT))
    from pyspark.sql import SparkSession

    default = base / "default"
    default.mkdir(parents=True)
    builder = (
        SparkSession.builder.master(config["master"]).appName("sparkinfer-host-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.scheduler.minRegisteredResourcesRatio", "1.0")  # every executor up before any task
        .config("spark.executorEnv.SPARKINFER_FAULTS", f"trace_loads={default}")
        .config("spark.executorEnv.SPARKINFER_HOST_DIR", str(default / "host"))
        .config("spark.executorEnv.SPARKINFER_HOST_IDLE_TIMEOUT", "600")
        .config("spark.executorEnv.HF_HUB_OFFLINE", "1")
    )
    watches: dict[str, HostWatch] = {}
    for key, value in config.get("conf", {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    app_id = spark.sparkContext.applicationId
    out["app_id"] = app_id
    try:
        for scenario in config["scenarios"]:
            started = time.monotonic()
            try:
                result = run_scenario(spark, app_id, base, scenario)
                out["scenarios"][scenario["name"]] = {"ok": True, **result}
                if "await_exit" in scenario:
                    watches[scenario["name"]] = HostWatch(result)
                    watches[scenario["name"]].start()
            except Exception as error:  # noqa: BLE001 - one failing scenario must not hide the others
                out["scenarios"][scenario["name"]] = {"ok": False, "error": "".join(traceback.format_exception(error))}
            out["scenarios"][scenario["name"]]["wall_seconds"] = round(time.monotonic() - started, 2)
            print(f"host_app: {scenario['name']} done in {time.monotonic() - started:.1f} s", file=sys.stderr)
        for scenario in config["scenarios"]:
            if scenario["name"] in watches:
                watch = watches[scenario["name"]].report(float(scenario["await_exit"]))
                out["scenarios"][scenario["name"]]["await_exit"] = watch
        table = process_table()
        out["executors"] = sorted(executor_jvms(table, app_id))
        out["hosts_before_stop"] = sorted(hosts_under(table, str(base)))
    finally:
        spark.stop()
        stopped = time.monotonic()
        left = hosts_under(process_table(), str(base))
        while left and time.monotonic() - stopped < float(config.get("stop_wait", 20)):
            time.sleep(0.25)
            left = hosts_under(process_table(), str(base))
        out["hosts_left_after_stop"] = {str(pid): argv for pid, argv in left.items()}
        out["stop_seconds"] = round(time.monotonic() - stopped, 2)
        for scenario in config["scenarios"]:
            result = out["scenarios"][scenario["name"]]
            home = base / scenario.get("env", scenario["name"])
            result["logs"] = _logs(home / "host")
            result["trace"] = [line for line in _trace(home / "trace") if line[2:] == [scenario["model"]]]
        Path(config["out"]).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
