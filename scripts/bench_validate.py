"""Profiling cost of `si.validate`: `profile` against one plain Spark pass over the same prediction table.

Acceptance: profiling 1M prediction rows keeps driver memory bounded (nothing is collected but one small
partial per partition) and takes at most 1.2x one Spark pass over the table.

Two Parquet tables of ``--rows`` rows are generated once with Spark itself (``spark.range`` plus ``rand``/
``randn`` expressions, no Python rows) and cached under ``--workdir``; a table whose recorded rows, dimension
or partitions differ is generated again:

* **classification**: ``id``, ``text`` (a short string), ``prediction struct<label string, score double>``
  (5 labels), ``sparkinfer_fingerprint``;
* **embedding**: ``id``, ``text``, ``embedding array<float>`` of ``--dim`` (384) normal draws.

On ``--master`` (``local[2]``), per table, after one warm-up of each, ``--repeats`` times interleaved (the order
alternates, so a drifting background load hits all three alike):

* **anchor**: one Spark pass over the whole table, ``df.write.format("noop").mode("overwrite").save()``;
* **profiled columns**: the same pass over only the profiled columns, ``df.select(cols)``;
* **profile**: ``sparkinfer.spark.validate.profile(df)`` with its default columns (``prediction``,
  ``embedding``). The script wraps the module's ``merge`` (its partials iterator) to split the time into the
  row count (everything before the first partial is pulled) and the ``mapInArrow`` pass plus the merge, and to
  add up the partials' bytes: all that reaches the driver. Each system's Spark jobs and their tasks are
  counted too (a job group per call): ``toLocalIterator`` runs one job per partition, one after the other.

Driver memory: a thread samples this process's RSS (``/proc/self/statm``) every 5 ms during each profile; the
peak increase over its start is reported, with ``ru_maxrss`` and the size of the profile's JSON. In local mode
the executors run inside the driver's JVM, so the JVM heap says nothing about collection; the partials'
total size does. Prints the setup, markdown rows for BENCHMARKS.md (medians) and one JSON object. Exits 1
when a ratio profile/anchor is above ``--target`` (1.2).

Example:
    .venv/bin/python scripts/bench_validate.py --rows 1000000 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
LABELS = ("billing", "shipping", "returns", "account", "other")
META = "_bench_meta.json"
TABLES = ("classification", "embedding")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384, help="embedding dimensions")
    parser.add_argument("--workdir", default="/tmp/sparkinfer_bench_validate", help="where the tables are cached")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="1g")
    parser.add_argument("--partitions", type=int, default=2, help="files written per table")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tables", default=",".join(TABLES), help="comma-separated subset of " + ", ".join(TABLES))
    parser.add_argument("--target", type=float, default=1.2, help="largest acceptable profile/anchor ratio")
    args = parser.parse_args(argv)
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    if not tables or set(tables) - set(TABLES):
        parser.error(f"--tables must name some of {TABLES} (got {args.tables!r})")

    sys.path.insert(0, str(REPO_ROOT))
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    import pyspark
    from pyspark.sql import SparkSession

    import sparkinfer.spark.validate as validate_module

    spark = (SparkSession.builder.master(args.master).appName("sparkinfer-bench-validate")
             .config("spark.driver.memory", args.driver_memory).config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    edited = [line for line in _git("status", "--porcelain", "--", "sparkinfer", "scripts").splitlines() if line]
    print(f"commit:  {_git('rev-parse', '--short', 'HEAD').strip()}"
          + (f" + uncommitted: {', '.join(e[3:] for e in edited)}" if edited else ""))
    print(f"python {platform.python_version()}, pyspark {pyspark.__version__}, {args.master}, driver memory "
          f"{args.driver_memory}, {_cpu_model()}, load average before: {os.getloadavg()[0]:.2f}")

    phases: dict[str, Any] = {}
    _wrap_merge(validate_module, phases)
    summary: dict[str, Any] = {"rows": args.rows, "dim": args.dim, "master": args.master, "repeats": args.repeats,
                               "driver_memory": args.driver_memory, "pyspark": pyspark.__version__,
                               "python": platform.python_version(), "cpu": _cpu_model(),
                               "load_average_before": round(os.getloadavg()[0], 2), "tables": {}}
    for name in tables:
        path = Path(args.workdir) / name
        seconds = _generate(spark, name, path, args)
        df = spark.read.parquet(str(path))
        kinds, _ = validate_module.resolve_columns(df, None)
        columns = list(kinds)
        files = sorted(path.glob("*.parquet"))
        on_disk = sum(f.stat().st_size for f in files)
        partitions = df.rdd.getNumPartitions()
        print(f"\n{name}: {path} ({len(files)} files, {on_disk / 2**20:.0f} MiB, {partitions} read partitions; "
              + (f"generated in {seconds:.1f}s" if seconds is not None else "cached") + f"); profiled: {kinds}")
        systems: dict[str, Callable[[], Any]] = {
            "anchor": lambda: df.write.format("noop").mode("overwrite").save(),
            "profiled_columns": lambda: df.select(*columns).write.format("noop").mode("overwrite").save(),
            "profile": lambda: validate_module.profile(df),
        }
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
        for system in systems:  # warm-up: Python workers, file cache, JIT
            _timed(systems[system], phases, system == "profile")
        for repeat in range(args.repeats):
            for system in list(systems)[:: 1 if repeat % 2 == 0 else -1]:
                runs[system].append(_timed(systems[system], phases, system == "profile"))
                print(f"  {system:<16} run {repeat + 1}: {runs[system][-1]['seconds']:.2f}s", file=sys.stderr)
        count_seconds = [_time(df.count) for _ in range(args.repeats)]  # the row count alone, for reference
        last = runs["profile"][-1]
        median = {s: statistics.median(r["seconds"] for r in got) for s, got in runs.items()}
        summary["tables"][name] = {
            "path": str(path), "files": len(files), "bytes_on_disk": on_disk, "read_partitions": partitions,
            "profiled": kinds, "generated_seconds": seconds,
            **{f"{s}_seconds": [round(r["seconds"], 3) for r in got] for s, got in runs.items()},
            **{f"{s}_median_seconds": round(m, 3) for s, m in median.items()},
            "profile_vs_anchor": median["profile"] / median["anchor"],
            "profile_vs_profiled_columns": median["profile"] / median["profiled_columns"],
            **{f"{s}_tasks_per_job": got[-1]["tasks_per_job"] for s, got in runs.items()},
            "profile_count_phase_seconds": [round(r["count_phase"], 3) for r in runs["profile"]],
            "profile_map_phase_seconds": [round(r["map_phase"], 3) for r in runs["profile"]],
            "count_alone_seconds": [round(s, 3) for s in count_seconds],
            "partials": last["partials"], "partials_bytes": last["partials_bytes"],
            "profile_json_bytes": last["json_bytes"],
            "driver_rss_peak_increase_bytes": max(r["rss_increase"] for r in runs["profile"]),
            "target_met": median["profile"] / median["anchor"] <= args.target,
        }
    summary["driver_ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    summary["target"] = args.target
    spark.stop()

    print("\n| table | rows | profiled | anchor: one pass, all columns (s) | pass over profiled columns (s) | "
          "profile (s) | **profile / anchor** | profile / profiled-columns pass | count + mapInArrow phases (s) | "
          "partials to the driver | profile JSON | driver Python peak RSS increase |")
    print("| --- | ---: | --- |" + " ---: |" * 9)
    for name, got in summary["tables"].items():
        count_phase = statistics.median(got["profile_count_phase_seconds"])
        map_phase = statistics.median(got["profile_map_phase_seconds"])
        print(f"| {name} | {args.rows:,} | {', '.join(f'{c} ({k})' for c, k in got['profiled'].items())} | "
              f"{got['anchor_median_seconds']:.2f} | {got['profiled_columns_median_seconds']:.2f} | "
              f"{got['profile_median_seconds']:.2f} | **{got['profile_vs_anchor']:.2f}x** | "
              f"{got['profile_vs_profiled_columns']:.2f}x | {count_phase:.2f} + {map_phase:.2f} | "
              f"{got['partials']} ({got['partials_bytes'] / 1024:.0f} KiB) | "
              f"{got['profile_json_bytes'] / 1024:.0f} KiB | "
              f"{got['driver_rss_peak_increase_bytes'] / 2**20:.1f} MiB |")
    print(json.dumps(summary, default=float))
    return 0 if all(t["target_met"] for t in summary["tables"].values()) else 1


def _generate(spark: Any, name: str, path: Path, args: argparse.Namespace) -> float | None:
    """Write table `name` to `path` unless it is there with the same rows, dimension and files; the seconds taken."""
    from pyspark.sql import functions as F

    wanted = {"table": name, "rows": args.rows, "dim": args.dim if name == "embedding" else None,
              "partitions": args.partitions, "version": 1}
    meta = path / META
    if meta.exists() and json.loads(meta.read_text()) == wanted:
        return None
    shutil.rmtree(path, ignore_errors=True)
    started = time.perf_counter()
    base = spark.range(0, args.rows, numPartitions=args.partitions)
    text = F.expr("concat('document ', cast(id as string), ' ', repeat('lorem ipsum ', cast(rand(1) * 8 as int)))")
    if name == "classification":
        labels = F.array(*(F.lit(label) for label in LABELS))
        # Skewed labels (rand squared) and scores in [0.2, 1): shaped like a classifier's output.
        label = F.element_at(labels, (F.pow(F.rand(2), 2) * len(LABELS)).cast("int") + 1)
        score = F.lit(0.2) + F.lit(0.8) * F.rand(3)
        frame = base.select("id", text.alias("text"), F.struct(label.alias("label"), score.alias("score"))
                            .alias("prediction"), F.lit("bench-fingerprint-0000").alias("sparkinfer_fingerprint"))
    else:
        vector = F.array(*(F.randn(100 + i).cast("float") for i in range(args.dim)))
        frame = base.select("id", text.alias("text"), vector.alias("embedding"))
    frame.write.mode("overwrite").parquet(str(path))
    meta.write_text(json.dumps(wanted))
    return time.perf_counter() - started


def _wrap_merge(module: Any, phases: dict[str, Any]) -> None:
    """Wrap `module.merge` (what `profile` calls on the streamed partials) to time it and size the partials."""
    merge = module.merge

    def timed_merge(partials: Iterator[bytes], *args: Any, **kwargs: Any) -> Any:
        sizes: list[int] = []

        def counted() -> Iterator[bytes]:
            for blob in partials:
                sizes.append(len(blob))
                yield blob

        phases["merge_called"] = time.perf_counter()
        result = merge(counted(), *args, **kwargs)
        phases["merge_returned"] = time.perf_counter()
        phases["sizes"] = sizes
        return result

    module.merge = timed_merge


class _RssPeak:
    """Samples this process's resident set size every `interval` seconds on a thread; `peak` is the largest."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.start = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> _RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


_GROUPS = iter(range(1_000_000))


def _timed(run: Callable[[], Any], phases: dict[str, Any], is_profile: bool) -> dict[str, Any]:
    from pyspark import SparkContext

    context = SparkContext.getOrCreate()
    group = f"bench-{next(_GROUPS)}"
    context.setJobGroup(group, group)  # to count the jobs and tasks each system runs
    phases.clear()
    with _RssPeak() as rss:
        started = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - started
    tracker = context.statusTracker()
    tasks = []
    for job in sorted(tracker.getJobIdsForGroup(group)):
        info = tracker.getJobInfo(job)
        stages = [tracker.getStageInfo(stage) for stage in (info.stageIds if info else [])]
        tasks.append(sum(stage.numTasks for stage in stages if stage is not None))
    got: dict[str, Any] = {"seconds": seconds, "tasks_per_job": tasks}
    if is_profile:
        got.update(count_phase=phases["merge_called"] - started,
                   map_phase=phases["merge_returned"] - phases["merge_called"],
                   partials=len(phases["sizes"]), partials_bytes=sum(phases["sizes"]),
                   json_bytes=len(result.to_json()), rss_increase=rss.peak - rss.start)
    return got


def _time(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*command: str) -> str:
    try:
        return subprocess.run(["git", *command], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    except OSError:
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
