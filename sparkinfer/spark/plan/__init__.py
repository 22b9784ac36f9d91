"""Plan a run before paying for it: token lengths, padding, suggested settings, and a projected time.

``sparkinfer plan`` (same input, model and task options as ``sparkinfer run``) or `plan`:

1. **Count and sample.** ``df.count()`` rows; ``sample`` texts drawn with ``df.sample`` (all of them when the
   table holds fewer), collected to the driver and tokenized there by the engine's own tokenizer and task
   head (a weightless skeleton of the model: no GPU, no weights read), truncated at the model's
   ``max_length`` as the engine truncates. Token statistics are after truncation; the truncated fraction
   counts the texts longer than ``max_length``.
2. **Padding.** The runner sorts each task's texts in windows of up to ``buffer_rows`` and cuts them into
   micro-batches of at most ``batch_tokens`` padded tokens (``engine/batching.py``). The plan replays that on
   windows of the sampled lengths, for each candidate budget (1024 to 65536), and reports real over padded
   tokens.
3. **Recommendations.** ``batch_tokens``: the largest budget whose padding efficiency is within 0.05 of the
   best, and no larger than the one at which ``max_batch_size`` caps nearly every micro-batch (see
   `_estimate.recommend_batch_tokens`). ``partitions``: `partitioning.partitions_for` for the rows (per
   chunk with a key) on the cluster's task slots. ``chunk_rows``: about 10 minutes of the cluster at the
   calibrated rate (at least a full buffer per slot), or the job's 100000 without calibration.
4. **Calibration** (``calibrate=N``): the model runs on N sampled texts in one Spark task (the job's engine
   path, ``udf._run_task``, with the task's ``spark.task.cpus`` threads and GPU), in chunks of N/8 texts (at
   least 32). Each chunk reports its tokenizing and forward seconds and padded tokens; the chunks after the
   first give the per-slot seconds per padded token (per padded token, because the calibration's small chunks
   pad more than a job's windows), the first one's excess is the warm-up; the model's load time is measured,
   and whatever else the calibration job took on the driver's clock (scheduling, starting the Python worker
   and importing torch) is its overhead.
5. **Projection** for the job as given (its ``batch_tokens``, its ``partitions`` or the recommended ones, its
   chunks) on the cluster shape: the input count, the overhead, the model load and the warm-up, paid once
   (every slot pays them at the same time), plus, per chunk, its waves (``ceil(partitions / slots)``) times a
   task's texts times the seconds per text (padded tokens per text, simulated for the task's windows, times
   the seconds per padded token). The 90 % interval bootstraps the calibration chunks and the sampled
   lengths. It assumes the projected slots are like the one that calibrated (same hardware, same
   ``spark.task.cpus``) and does not include writing the output beyond what the tasks' time holds, nor
   slots slowing each other down by sharing memory bandwidth.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkinfer.errors import SpecError
from sparkinfer.spark import partitioning
from sparkinfer.spark.plan import _estimate
from sparkinfer.spark.plan._command import plan_main
from sparkinfer.spark.plan._estimate import Padding, TokenStats
from sparkinfer.spark.plan._gather import (
    DEFAULT_CHUNK_ROWS,
    Target,
    calibrate_task,
    check_options,
    chunk_share,
    cluster_shape,
    sample_texts,
    target_of,
    tokenize,
)
from sparkinfer.spark.plan._result import Calibration, Cluster, Plan, Projection
from sparkinfer.spec import ModelSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from sparkinfer.spark.job import Job

__all__ = ["Calibration", "Cluster", "Padding", "Plan", "Projection", "TokenStats", "plan", "plan_main"]


def plan(
    spark: SparkSession,
    source: Job | str | DataFrame,
    spec: ModelSpec | None = None,
    *,
    input_cols: Sequence[str] = ("text",),
    prompt_template: str | None = None,
    sample: int = 2000,
    calibrate: int | None = None,
    executors: int | None = None,
    slots_per_executor: int | None = None,
    gpus_per_executor: int | None = None,
    seed: int = 0,
) -> Plan:
    """Plan a prediction run: token lengths, padding, suggested settings, and with `calibrate` its time.

    Example:
        >>> p = si.plan(spark, "/data/docs", si.ModelSpec("/models/minilm", task="embedding"), calibrate=500)
        >>> print(p.summary()); p.recommended["batch_tokens"]

    Args:
        spark: The session (its cluster runs the calibration and, without `executors`, is projected for).
        source: A `Job` (its input, model, columns, partitions and key), an input table path or name, or a
            DataFrame of the rows.
        spec: The model, for a table or DataFrame `source`.
        input_cols: For a table or DataFrame: the text column(s).
        prompt_template: For a table or DataFrame: predict this template (`sparkinfer.prompt`) instead.
        sample: Texts to sample and tokenize on the driver.
        calibrate: Run the model on this many sampled texts in one Spark task and project the job's time.
        executors: Project for this many executors, with `slots_per_executor` or `gpus_per_executor`;
            None projects for the session's task slots.
        slots_per_executor: Task slots per executor (cores over ``spark.task.cpus``).
        gpus_per_executor: GPUs per executor, one task each.
        seed: Seed of the sampling and of the simulation.

    Returns:
        The `Plan`.

    Raises:
        SpecError: For a bad option, a missing or non-string column, or a table without texts.
    """
    from pyspark import TaskContext

    if TaskContext.get() is not None:
        raise RuntimeError("sparkinfer.plan runs on the driver, not inside a Spark task")
    check_options(sample, calibrate, executors, slots_per_executor, gpus_per_executor)
    target = target_of(spark, source, spec, tuple(input_cols), prompt_template)
    started = time.perf_counter()
    rows = target.df.count()
    count_seconds = time.perf_counter() - started
    if rows == 0:
        raise SpecError(f"nothing to plan: the input {target.label!r} has no rows")
    texts_total = rows * target.width
    rng = np.random.default_rng(seed)
    sampled = sample_texts(target.df, target, texts_total, max(sample, calibrate or 0), seed, rng)
    strings = [s for s in sampled if s is not None]
    if not strings:
        raise SpecError(f"nothing to plan: the {len(sampled)} text(s) sampled from {target.label!r} are all null")
    lengths, truncated, max_length, new_tokens = tokenize(target.spec, strings)
    null_share = (len(sampled) - len(strings)) / len(sampled)
    texts = texts_total * (1 - null_share)  # the texts the model will see
    cluster = cluster_shape(spark, executors, slots_per_executor, gpus_per_executor)
    spec_ = target.spec

    windows = _Windows(lengths, seed)
    calibration = projection = None
    rate = None  # table rows per second on the cluster, for the chunk size
    if calibrate is not None:
        chosen = rng.permutation(len(strings))[:calibrate]
        calibration = calibrate_task(spark, spec_, [strings[i] for i in chosen])
        projection = _project(target, calibration, cluster, windows, new_tokens, rows, texts, count_seconds, rng)
        rate = projection.texts_per_second_per_slot * cluster.slots / (target.width * max(1 - null_share, 1e-9))
    chunk_rows = _estimate.recommend_chunk_rows(rate, slots=cluster.slots, buffer_rows=spec_.buffer_rows,
                                                default=DEFAULT_CHUNK_ROWS)
    per_chunk = chunk_share(rows, chunk_rows if target.key is not None else None)
    partitions = partitioning.partitions_for(per_chunk, cluster.slots, spec_.buffer_rows)
    window = _estimate.window_rows(per_chunk * target.width / partitions, spec_.buffer_rows)
    groups = windows(window)
    costs = lengths + new_tokens
    paddings = tuple(_estimate.simulate_padding(groups, batch_tokens=b, max_batch_size=spec_.max_batch_size,
                                                new_tokens=new_tokens)
                     for b in _estimate.candidate_budgets(max_length + new_tokens))
    budget = _estimate.recommend_batch_tokens(paddings, p90_cost=float(np.quantile(costs, 0.9)),
                                              max_batch_size=spec_.max_batch_size)
    recommended = {"batch_tokens": budget, "partitions": partitions, "chunk_rows": chunk_rows}
    return Plan(
        target.label, spec_.model, spec_.task, rows, texts_total, len(sampled), len(sampled) - len(strings),
        tuple(int(n) for n in lengths), max_length, truncated / len(strings), TokenStats.of(lengths), paddings,
        window, cluster, spec_.batch_tokens, recommended, count_seconds, calibration, projection,
    )


class _Windows:
    """The sampled lengths cut into windows of a given size, the same windows every time a size is asked for
    (so the padding table and the projection see the same texts)."""

    def __init__(self, lengths: np.ndarray[Any, np.dtype[np.int64]], seed: int) -> None:
        self.lengths = lengths
        self._seed = seed
        self._cut: dict[int, list[np.ndarray[Any, np.dtype[np.int64]]]] = {}

    def __call__(self, window: int) -> list[np.ndarray[Any, np.dtype[np.int64]]]:
        if window not in self._cut:
            self._cut[window] = _estimate.windows(self.lengths, window, np.random.default_rng([self._seed, window]))
        return self._cut[window]


def _project(target: Target, cal: Calibration, cluster: Cluster, windows: _Windows, new_tokens: int, rows: int,
             texts: float, count_seconds: float, rng: np.random.Generator) -> Projection:
    """The job's time on `cluster` and on 1 to twice its executors (see the module docstring)."""
    spec = target.spec
    chunk_rows = target.chunk_rows if target.key is not None else None
    chunks = 1 if chunk_rows is None else math.ceil(rows / chunk_rows)
    per_chunk = chunk_share(rows, chunk_rows)
    fixed = count_seconds + cal.overhead_seconds + cal.model_load_seconds + cal.warmup_seconds
    seconds = np.array(cal.chunk_seconds)
    padded = np.array(cal.chunk_padded_tokens, dtype=np.int64)
    steady = _estimate.steady_rate(seconds, padded)

    def shape(slots: int) -> tuple[int, int, float, float]:
        partitions = target.partitions or partitioning.partitions_for(per_chunk, slots, spec.buffer_rows)
        window = _estimate.window_rows(per_chunk * target.width / partitions, spec.buffer_rows)
        ppt = _estimate.simulate_padding(windows(window), batch_tokens=spec.batch_tokens,
                                         max_batch_size=spec.max_batch_size, new_tokens=new_tokens).padded_per_text
        compute = _estimate.compute_seconds(texts, chunks=chunks, partitions=partitions, slots=slots,
                                            per_text_seconds=ppt * cal.seconds_per_padded_token)
        return partitions, window, ppt, compute

    partitions, window, ppt, compute = shape(cluster.slots)
    factors = _estimate.cost_factors(seconds, padded, steady, windows.lengths, window=window, point_padded_per_text=ppt,
                                     batch_tokens=spec.batch_tokens, max_batch_size=spec.max_batch_size,
                                     new_tokens=new_tokens, rng=rng)
    low, high = _estimate.interval(fixed, compute, factors)
    counts = sorted({int(round(e)) for e in np.linspace(1, 2 * cluster.executors, min(2 * cluster.executors, 16))})
    curve = []
    for executors in counts:
        compute_e = shape(executors * cluster.slots_per_executor)[3]
        curve.append((executors, fixed + compute_e, *_estimate.interval(fixed, compute_e, factors)))
    per_slot = 1 / max(ppt * cal.seconds_per_padded_token, 1e-12)
    return Projection(fixed + compute, low, high, cluster.slots, partitions, math.ceil(partitions / cluster.slots),
                      chunks, fixed, compute, ppt, per_slot, tuple(curve))
