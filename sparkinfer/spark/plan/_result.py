"""What a plan found: the `Plan` and its parts, as JSON (`Plan.to_dict`), a table (`Plan.summary`) and a PNG."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sparkinfer.spark.plan import _estimate
from sparkinfer.spark.plan._estimate import Padding, TokenStats


@dataclass(frozen=True)
class Cluster:
    """The cluster shape a plan projects for.

    Attributes:
        executors: Executors (1 for a local session).
        slots_per_executor: Task slots per executor.
        gpus_per_executor: GPUs per executor, when given (one task per GPU).
        slots: Task slots in all.
        source: ``"session"`` (the session's own task slots) or ``"given"`` (``executors=``).
    """

    executors: int
    slots_per_executor: int
    gpus_per_executor: int | None
    slots: int
    source: str


@dataclass(frozen=True)
class Calibration:
    """What running the model on sampled texts in one Spark task measured.

    Attributes:
        rows: Texts run.
        chunks: Engine chunks they ran in.
        seconds: Wall time of the calibration job, on the driver.
        model_load_seconds: The model's load in the task (0 when the Python worker had it cached already).
        compute_seconds: Tokenizing and forward seconds of every chunk.
        warmup_seconds: The first chunk's excess over the steady rate.
        overhead_seconds: `seconds` less load and compute: scheduling, the Python worker's start, imports.
        seconds_per_padded_token: Steady seconds per padded token in one task slot.
        rows_per_second: Steady texts per second in one task slot, in the calibration's chunks (which, smaller
            than a job's windows, pad more: see `Projection.texts_per_second_per_slot`).
        tokens_per_second: Steady real tokens per second in one task slot, in those chunks.
        task_cpus: The task's CPUs (``spark.task.cpus``): torch's threads.
        chunk_seconds: Tokenizing plus forward seconds of each chunk.
        chunk_padded_tokens: Padded tokens of each chunk.
        chunk_rows: Texts of each chunk.
    """

    rows: int
    chunks: int
    seconds: float
    model_load_seconds: float
    compute_seconds: float
    warmup_seconds: float
    overhead_seconds: float
    seconds_per_padded_token: float
    rows_per_second: float
    tokens_per_second: float
    task_cpus: int
    chunk_seconds: tuple[float, ...]
    chunk_padded_tokens: tuple[int, ...]
    chunk_rows: tuple[int, ...]


@dataclass(frozen=True)
class Projection:
    """The projected wall time of the whole job on a cluster shape.

    Attributes:
        seconds: The estimate.
        low: Lower end of the 90 % interval.
        high: Upper end.
        slots: Task slots projected for.
        partitions: Tasks per chunk.
        waves: Task waves per chunk (``ceil(partitions / slots)``).
        chunks: Chunks (1 without a key).
        fixed_seconds: Paid once: the input count, the calibration's overhead, the model load, the warm-up.
        compute_seconds: The chunks' waves of tasks.
        padded_per_text: Padded tokens per text in the job's task windows at its ``batch_tokens``.
        texts_per_second_per_slot: The calibrated rate at those windows (the calibration's own chunks, smaller,
            pad more).
        curve: ``(executors, seconds, low, high)`` from 1 to twice the shape's executors.
    """

    seconds: float
    low: float
    high: float
    slots: int
    partitions: int
    waves: int
    chunks: int
    fixed_seconds: float
    compute_seconds: float
    padded_per_text: float
    texts_per_second_per_slot: float
    curve: tuple[tuple[int, float, float, float], ...]


@dataclass(frozen=True)
class Plan:
    """What `plan` found; `to_dict` is the ``--json`` object, `summary` the table, `save_plot` the PNG.

    Attributes:
        input: The input table (or ``"DataFrame"``).
        model: The model.
        task: The task.
        rows: Input rows.
        texts: Texts to predict (rows times input columns).
        sampled_rows: Texts sampled (nulls included).
        null_rows: Sampled texts that are null (never sent to the model).
        lengths: Tokens of each sampled non-null text, after truncation, in sample order.
        max_length: The model's truncation length.
        truncated_fraction: Sampled non-null texts longer than `max_length`.
        tokens: Statistics of `lengths`.
        padding: Padding of each candidate ``batch_tokens`` in the recommended tasks' windows.
        window: Texts a recommended task sorts together.
        cluster: The shape projected for.
        batch_tokens: The job's ``batch_tokens`` (what the projection runs with).
        recommended: ``batch_tokens``, ``partitions`` and ``chunk_rows``.
        count_seconds: Wall time of the input's count.
        calibration: With ``calibrate``: what it measured.
        projection: With ``calibrate``: the job's projected time.
    """

    input: str
    model: str
    task: str
    rows: int
    texts: int
    sampled_rows: int
    null_rows: int
    lengths: tuple[int, ...]
    max_length: int
    truncated_fraction: float
    tokens: TokenStats
    padding: tuple[Padding, ...]
    window: int
    cluster: Cluster
    batch_tokens: int
    recommended: dict[str, int]
    count_seconds: float
    calibration: Calibration | None = None
    projection: Projection | None = None

    @property
    def projected_seconds(self) -> float | None:
        """The projected wall time of the job, with ``calibrate``."""
        return self.projection.seconds if self.projection is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-able data (``sparkinfer plan --json``)."""
        p = self.projection
        return {
            "input": self.input, "model": self.model, "task": self.task,
            "rows": self.rows, "texts": self.texts, "sampled_rows": self.sampled_rows, "null_rows": self.null_rows,
            "max_length": self.max_length, "tokens": dataclasses.asdict(self.tokens),
            "truncated_fraction": self.truncated_fraction,
            "padding": [dataclasses.asdict(x) for x in self.padding], "window": self.window,
            "cluster": dataclasses.asdict(self.cluster), "batch_tokens": self.batch_tokens,
            "recommended": dict(self.recommended), "count_seconds": self.count_seconds,
            "calibration": None if self.calibration is None else dataclasses.asdict(self.calibration),
            "projected_seconds": None if p is None else p.seconds,
            "projection": None if p is None else {**dataclasses.asdict(p), "interval": _estimate.INTERVAL,
                                                  "curve": [list(c) for c in p.curve]},
        }

    def summary(self) -> str:
        """The plan as a table, for a terminal or a notebook."""
        t, c = self.tokens, self.cluster
        lines = [
            f"sparkinfer plan: {self.input} with {self.model} ({self.task})",
            f"rows {self.rows:,} ({self.texts:,} texts); sampled {self.sampled_rows:,} texts, {self.null_rows:,} null",
            f"tokens after truncation at max_length {self.max_length}: p50 {t.p50:g}  p90 {t.p90:g}  p99 {t.p99:g}"
            f"  max {t.max}  mean {t.mean:.1f};  truncated {self.truncated_fraction:.1%}",
            f"padding in task windows of {self.window:,} texts:",
            "  batch_tokens  efficiency  padded/text  micro-batches/1000 texts",
            *(f"  {p.batch_tokens:>12}  {p.efficiency:>10.3f}  {p.padded_per_text:>11.1f}  "
              f"{p.micro_batches_per_1000:>8.1f}" + ("  <- recommended" if p.batch_tokens ==
                                                     self.recommended["batch_tokens"] else "")
              for p in self.padding),
            f"cluster: {c.executors} executor(s) x {c.slots_per_executor} slot(s) = {c.slots} task slot(s) "
            f"({'the session' if c.source == 'session' else 'as given'})",
            "recommended: " + ", ".join(f"{k} {v:,}" for k, v in self.recommended.items()),
        ]
        cal, p = self.calibration, self.projection
        if cal is not None and p is not None:
            lines += [
                f"calibration: {cal.rows} texts in one task ({cal.task_cpus} cpu(s)), {cal.chunks} chunks, "
                f"{cal.seconds:.1f}s: model load {cal.model_load_seconds:.1f}s, compute {cal.compute_seconds:.1f}s, "
                f"warm-up {cal.warmup_seconds:.1f}s, overhead {cal.overhead_seconds:.1f}s",
                f"  per slot: {cal.seconds_per_padded_token * 1e6:,.1f} us per padded token; "
                f"{p.texts_per_second_per_slot:,.1f} texts/s at the job's {p.padded_per_text:.1f} padded tokens "
                "per text",
                f"projected for batch_tokens {self.batch_tokens} on {p.slots} slot(s), {p.partitions} partition(s) "
                f"({p.waves} wave(s)) x {p.chunks} chunk(s): {_clock(p.seconds)} "
                f"(90% {_clock(p.low)} to {_clock(p.high)}); fixed {p.fixed_seconds:.1f}s + compute "
                f"{p.compute_seconds:.1f}s",
            ]
        else:
            lines.append("projected time: run with calibrate=N (--calibrate N) to measure the model")
        return "\n".join(lines)

    def save_plot(self, path: str) -> None:
        """Write a PNG: the token-length histogram, and the projected time against executors.

        Raises:
            MissingDependencyError: Without matplotlib (``pip install 'sparkinfer[plot]'``).
        """
        from sparkinfer.spark.plan._plot import save

        save(self, path)


def _clock(seconds: float) -> str:
    """``95.2s``, ``12m 05s`` or ``3h 20m``."""
    if seconds < 120:
        return f"{seconds:.1f}s"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes}m {int(seconds % 60):02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"
