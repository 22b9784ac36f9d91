"""The one loop every task goes through: tokenize, sort, micro-batch, forward, restore order."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from sparkinfer.engine import cache
from sparkinfer.engine.batching import pad, plan_batches
from sparkinfer.engine.metrics import Metrics
from sparkinfer.errors import SpecError
from sparkinfer.spec import ModelSpec


def run(spec: ModelSpec, texts: pa.Array, *, num_threads: int | None = None) -> tuple[pa.Array, Metrics]:
    """Run the model of `spec` over `texts` and return one output per row, in input order.

    Rows are tokenized (truncated to the model's max length), sorted by token count, cut into
    micro-batches by ``spec.batch_tokens`` / ``spec.max_batch_size``, padded to the longest row of
    each micro-batch and run under ``torch.inference_mode()``. Null rows give null outputs and never
    reach the model.

    Args:
        spec: What to run; the model is taken from the per-process cache.
        texts: A string (or large_string) Arrow array.
        num_threads: torch intra-op threads for this call (e.g. Spark's ``spark.task.cpus``);
            ``None`` leaves torch's setting alone.

    Returns:
        The output column (Arrow type given by the task) and the metrics of this call.

    Raises:
        SpecError: When `texts` is not a string array.
    """
    import torch

    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        raise SpecError(
            f"sparkinfer input must be a string column (got Arrow type {texts.type}); "
            "cast it first, e.g. F.col('x').cast('string')"
        )
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    loaded, fresh = cache.get_model(spec)
    valid: npt.NDArray[np.bool_] = np.asarray(texts.is_valid(), dtype=bool)
    metrics = Metrics(
        rows=len(texts),
        null_rows=int((~valid).sum()),
        model_loads=int(fresh),
        model_load_seconds=loaded.load_seconds if fresh else 0.0,
    )

    started = time.perf_counter()
    encodings = loaded.tokenizer.encode_batch(texts.filter(pa.array(valid)).to_pylist())
    ids = [e.ids for e in encodings]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    metrics.truncated_rows = sum(1 for e in encodings if e.overflowing)
    metrics.real_tokens = int(lengths.sum())
    metrics.tokenize_seconds = time.perf_counter() - started

    started = time.perf_counter()
    outputs: npt.NDArray[Any] | None = None
    with torch.inference_mode():
        for rows in plan_batches(lengths, batch_tokens=spec.batch_tokens, max_batch_size=spec.max_batch_size):
            input_ids, mask = pad(ids, rows, pad_id=loaded.pad_id)
            out = loaded.head.forward(
                torch.from_numpy(input_ids).to(loaded.device), torch.from_numpy(mask).to(loaded.device)
            )
            if outputs is None:
                outputs = np.empty((len(ids), *out.shape[1:]), dtype=out.dtype)
            outputs[rows] = out
            metrics.padded_tokens += input_ids.size
            metrics.micro_batches += 1
    if outputs is None:  # no valid row: the head still decides the (all-null) column's shape
        outputs = np.empty((0, 0), dtype=np.float32)
    result = loaded.head.to_arrow(outputs, valid)
    metrics.forward_seconds = time.perf_counter() - started
    return result, metrics


def run_stream(
    spec: ModelSpec,
    batches: Iterable[pa.Array],
    *,
    num_threads: int | None = None,
    on_metrics: Callable[[Metrics], None] | None = None,
) -> Iterator[pa.Array]:
    """Run over a stream of Arrow batches, sorting ``spec.buffer_rows`` rows together.

    Small batches (Spark's ``maxRecordsPerBatch``) are pooled until ``buffer_rows`` rows are waiting;
    large ones are cut into even chunks of at most ``buffer_rows``. Each input batch gets exactly one
    output batch of the same length, in order, as Spark's iterator UDFs require.

    Args:
        spec: What to run.
        batches: String Arrow arrays.
        num_threads: As in `run`.
        on_metrics: Called with the metrics of every engine call.

    Yields:
        One output array per input batch.
    """
    pending: list[pa.Array] = []
    waiting = 0
    for batch in batches:
        pending.append(batch)
        waiting += len(batch)
        if waiting >= spec.buffer_rows:
            yield from _flush(spec, pending, num_threads, on_metrics)
            pending, waiting = [], 0
    if pending:
        yield from _flush(spec, pending, num_threads, on_metrics)


def _flush(
    spec: ModelSpec,
    pending: list[pa.Array],
    num_threads: int | None,
    on_metrics: Callable[[Metrics], None] | None,
) -> Iterator[pa.Array]:
    texts = pa.concat_arrays(pending) if len(pending) > 1 else pending[0]
    chunks = -(-len(texts) // spec.buffer_rows)
    bounds = np.linspace(0, len(texts), chunks + 1, dtype=np.int64) if len(texts) else np.zeros(2, np.int64)
    pieces = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        out, metrics = run(spec, texts.slice(start, stop - start), num_threads=num_threads)
        if on_metrics is not None:
            on_metrics(metrics)
        pieces.append(out)
    result = pa.concat_arrays(pieces) if len(pieces) > 1 else pieces[0]
    offset = 0
    for batch in pending:
        yield result.slice(offset, len(batch))
        offset += len(batch)
