"""The one loop every task goes through: tokenize, sort, micro-batch, forward, restore order.

Three things keep the device busy and the task alive:

* Overlap (``ModelSpec.overlap``): in `run_stream`, a background thread tokenizes the next chunk of
  ``buffer_rows`` rows while the model computes the current one, and a second one pads and copies the next
  micro-batch while the current one runs. Rust tokenizers and torch release the GIL, so the threads
  really run side by side.
* Out-of-memory recovery: a micro-batch that runs out of device memory is split in half and retried, down
  to one row; the smaller token budget is kept for the rest of the stream (one Spark task), and the splits
  are counted in `Metrics.oom_splits`.
* Per-row errors: any other failure of a micro-batch is bisected down to the rows that fail alone, which
  ``ModelSpec.on_error`` then answers (raise naming the row, null, or an error column); they are counted
  in `Metrics.error_rows`, and ``max_error_rate`` stops a stream that is mostly failing.

Rows whose model input is identical (the same token ids, after truncation and any chat template) are
computed once: a chunk computes the first row of each distinct input and fans its output out to the others,
and a stream keeps the outputs of its last ``buffer_rows`` distinct rows (`_Recent`) to answer repeats in
later chunks. Every task's output is a function of the row's token ids alone (a sampled generation draws
from a generator seeded by ``ModelSpec.seed`` and the prompt's tokens), so a duplicate gets exactly what it
would have got computed; what differs is only which rows share a micro-batch, as with any batching. Such
rows are counted in `Metrics.duplicate_rows`; each still has its own text and offsets, so token
classification's entities are placed in each row's own text.

With ``ModelSpec.host="executor"`` the stream still tokenizes here and builds its column here, but its rows'
token ids go to the executor's model host (`host`), which runs the same `forward_rows` loop over the rows of
every task connected to it (or decodes generation continuously) and sends back outputs, per-row failures
and counters; the failures are answered here as ``on_error`` says.
"""

from __future__ import annotations

import logging
import time
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from sparkinfer.engine import cache, faults, host
from sparkinfer.engine.batching import IntArray, pad, plan_batches
from sparkinfer.engine.host import HostClient, RowFailure
from sparkinfer.engine.loading import META, LoadedModel, resolve_device
from sparkinfer.engine.metrics import Metrics
from sparkinfer.engine.placement import TaskResources, resolve_host, shared_gpu_warning
from sparkinfer.engine.tasks import Inputs
from sparkinfer.errors import InferenceError, SpecError
from sparkinfer.spec import ModelSpec

log = logging.getLogger("sparkinfer")

_MIN_ROWS_FOR_RATE = 100  # max_error_rate is not judged on fewer rows, except at the end of a stream

T = TypeVar("T")
# (rows done, their real tokens, rows tokenized, their real tokens) since the last call
Progress = Callable[[int, int, int, int], None]


def run(
    spec: ModelSpec, texts: pa.Array, *, num_threads: int | None = None, resources: TaskResources | None = None
) -> tuple[pa.Array, Metrics]:
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
        resources: The GPU assignment of the calling task (see `placement.choose_device`).

    Returns:
        The output column (Arrow type given by the task) and the metrics of this call.

    Raises:
        SpecError: When `texts` is not a string array.
        InferenceError: When a single row does not fit in device memory.
    """
    _check_strings(texts)
    _set_threads(num_threads)
    model, metrics = _get_model(spec, resources)
    stream = _Stream(spec.batch_tokens)
    out, metrics = _compute(spec, model, _tokenize(model.loaded, texts, 0), stream, metrics)
    stream.count(spec, metrics, last=True)
    return out, metrics


def run_stream(
    spec: ModelSpec,
    batches: Iterable[pa.Array],
    *,
    num_threads: int | None = None,
    resources: TaskResources | None = None,
    on_metrics: Callable[[Metrics], None] | None = None,
    on_progress: Progress | None = None,
) -> Iterator[pa.Array]:
    """Run over a stream of Arrow batches, sorting ``spec.buffer_rows`` rows together.

    Small batches (Spark's ``maxRecordsPerBatch``) are pooled until ``buffer_rows`` rows are waiting;
    large ones are cut into even chunks of at most ``buffer_rows``. Each input batch gets exactly one
    output batch of the same length, in order, as Spark's iterator UDFs require. With ``spec.overlap``
    the next chunk is read and tokenized while the current one computes, so outputs come one chunk later.

    Args:
        spec: What to run.
        batches: String Arrow arrays.
        num_threads: As in `run`.
        resources: As in `run`.
        on_metrics: Called with the metrics of every chunk.
        on_progress: Called with ``(rows done, their tokens, rows tokenized, their tokens)``: when a chunk
            starts computing (its tokenized rows), after each micro-batch that runs here, and for the rest of
            the chunk (null rows, failed rows, rows a model host computed) when it is done. Each pair adds up
            to the stream's rows and real tokens; the tokenized pair tells the work ahead.

    Yields:
        One output array per input batch.
    """
    _set_threads(num_threads)
    # The budget shrinks after an out-of-memory, for the rest of the stream; repeats of recent rows reuse them.
    budget = _Stream(spec.batch_tokens, recent=_Recent(spec.buffer_rows))
    offset = 0  # the stream position of the next chunk's first row
    model: _Model | None = None
    first: Metrics | None = None
    ahead: deque[tuple[list[pa.Array] | None, Future[_Tokenized]]] = deque()
    pieces: list[pa.Array] = []
    with ThreadPoolExecutor(1, thread_name_prefix="sparkinfer-tokenize") as pool:
        submit: Callable[[Callable[[], _Tokenized]], Future[_Tokenized]] = (
            pool.submit if spec.overlap else _done
        )
        for group, chunk in _chunks(spec, batches):
            _check_strings(chunk)
            if model is None:
                model, first = _get_model(spec, resources)
            ahead.append((group, submit(partial(_tokenize, model.loaded, chunk, offset))))
            offset += len(chunk)
            # Keep one chunk tokenizing in the background while the one before it computes.
            while len(ahead) > (1 if spec.overlap else 0):
                yield from _step(spec, model, ahead.popleft(), budget, first or Metrics(), pieces, on_metrics,
                                 on_progress)
                first = None  # the load counters belong to the first chunk only
        while ahead and model is not None:
            yield from _step(spec, model, ahead.popleft(), budget, first or Metrics(), pieces, on_metrics,
                                 on_progress)
            first = None
    budget.check(spec, last=True)


# ----------------------------------------------------------------------------------------------- stream


def _chunks(spec: ModelSpec, batches: Iterable[pa.Array]) -> Iterator[tuple[list[pa.Array] | None, pa.Array]]:
    """Pool input batches into chunks of at most ``buffer_rows`` rows.

    Yields ``(group, chunk)``: ``group`` is the list of input batches whose outputs are due once this chunk
    is computed (on the last chunk of a pool), else ``None``.
    """
    pending: list[pa.Array] = []
    waiting = 0
    for batch in batches:
        pending.append(batch)
        waiting += len(batch)
        if waiting >= spec.buffer_rows:
            yield from _split(spec, pending)
            pending, waiting = [], 0
    if pending:
        yield from _split(spec, pending)


def _split(spec: ModelSpec, pending: list[pa.Array]) -> Iterator[tuple[list[pa.Array] | None, pa.Array]]:
    texts = pa.concat_arrays(pending) if len(pending) > 1 else pending[0]
    chunks = -(-len(texts) // spec.buffer_rows)
    bounds = np.linspace(0, len(texts), chunks + 1, dtype=np.int64) if len(texts) else np.zeros(2, np.int64)
    last = len(bounds) - 2
    for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        yield (pending if i == last else None), texts.slice(start, stop - start)


def _step(
    spec: ModelSpec,
    model: _Model,
    item: tuple[list[pa.Array] | None, Future[_Tokenized]],
    budget: _Stream,
    metrics: Metrics,
    pieces: list[pa.Array],
    on_metrics: Callable[[Metrics], None] | None,
    on_progress: Progress | None,
) -> Iterator[pa.Array]:
    """Compute one chunk; when it closes a pool, yield the outputs of the pool's input batches."""
    group, tokenized = item
    out, metrics = _compute(spec, model, tokenized.result(), budget, metrics, on_progress)
    if on_metrics is not None:
        on_metrics(metrics)
    budget.count(spec, metrics, last=False)
    pieces.append(out)
    if group is not None:
        result = pa.concat_arrays(pieces) if len(pieces) > 1 else pieces[0]
        pieces.clear()
        offset = 0
        for batch in group:
            yield result.slice(offset, len(batch))
            offset += len(batch)


def _done(fn: Callable[[], T]) -> Future[T]:
    """Run `fn` now: the ``submit`` of a stream without overlap."""
    future: Future[T] = Future()
    future.set_result(fn())
    return future


# ---------------------------------------------------------------------------------------------- helpers


@dataclass
class Budget:
    """The micro-batch token budget of a stream of micro-batches, lowered by out-of-memory splits.

    Attributes:
        tokens: ``spec.batch_tokens`` at first; an out-of-memory split lowers it for what follows.
    """

    tokens: int


class _Recent:
    """The outputs of the last `size` distinct rows a stream computed, by their token ids (least recently used
    first out), so that a later chunk's repeats are not computed again. Each output is a one-row array."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._outputs: OrderedDict[bytes, npt.NDArray[Any]] = OrderedDict()

    def get(self, key: bytes) -> npt.NDArray[Any] | None:
        output = self._outputs.get(key)
        if output is not None:
            self._outputs.move_to_end(key)
        return output

    def put(self, key: bytes, output: npt.NDArray[Any]) -> None:
        if self.size <= 0:
            return
        self._outputs[key] = output
        self._outputs.move_to_end(key)
        while len(self._outputs) > self.size:
            self._outputs.popitem(last=False)


class _Distinct:
    """The rows of a chunk to compute: the first row of each distinct token-id sequence that `recent` lacks.

    Attributes:
        first: The row of each sequence to compute, ascending.
        duplicates: Rows answered from another row: repeats within the chunk and rows `recent` holds.
    """

    def __init__(self, ids: list[list[int]], recent: _Recent) -> None:
        self._recent = recent
        self._keys = [array("q", row).tobytes() for row in ids]
        self._index = np.empty(len(ids), dtype=np.int64)  # each row's position in `first`, -1 if recent has it
        self._cached: dict[int, npt.NDArray[Any]] = {}
        position: dict[bytes, int] = {}
        first: list[int] = []
        for row, key in enumerate(self._keys):
            at = position.get(key)
            if at is None:
                output = recent.get(key)
                if output is not None:
                    self._cached[row], self._index[row] = output, -1
                    continue
                at = position[key] = len(first)
                first.append(row)
            self._index[row] = at
        self.first = np.asarray(first, dtype=np.int64)
        self.duplicates = len(ids) - len(first)

    def fan_out(
        self, computed: npt.NDArray[Any], failed: dict[int, Exception]
    ) -> tuple[npt.NDArray[Any], dict[int, Exception]]:
        """Every row's output and failure, from those of the `first` rows (`computed`, `failed`, by position)."""
        index = self._index.tolist() if failed or self._cached else []
        failures = {row: failed[at] for row, at in enumerate(index) if at in failed} if failed else {}
        if not self._cached:
            return computed[self._index], failures
        filler = next(iter(self._cached.values()))  # where a failed row's output goes (never read)
        pieces = [self._cached[row] if at < 0 else filler if at in failed else computed[at : at + 1]
                  for row, at in enumerate(index)]
        return np.concatenate(pieces), failures

    def remember(self, computed: npt.NDArray[Any], failed: dict[int, Exception]) -> None:
        """Keep the computed rows' outputs (copies, not views of the chunk's array) for later chunks."""
        for at, row in enumerate(self.first.tolist()):
            if at not in failed:
                self._recent.put(self._keys[row], computed[at : at + 1].copy())


@dataclass
class _Stream(Budget):
    """What one stream (one Spark task) carries from chunk to chunk: its `Budget`, for ``max_error_rate``
    the rows and errors so far, and the outputs of its recent rows.

    Attributes:
        rows: Non-null rows computed so far.
        errors: Those of them that failed.
        recent: Outputs of its last distinct rows, for their repeats in later chunks.
    """

    rows: int = 0
    errors: int = 0
    recent: _Recent = field(default_factory=lambda: _Recent(0))

    def count(self, spec: ModelSpec, metrics: Metrics, *, last: bool) -> None:
        """Add a chunk's rows and errors, then `check`."""
        self.rows += metrics.rows - metrics.null_rows
        self.errors += metrics.error_rows
        self.check(spec, last=last)

    def check(self, spec: ModelSpec, *, last: bool) -> None:
        """Fail once the error rate is over ``spec.max_error_rate`` (`last`: the stream has ended)."""
        rate = spec.max_error_rate
        if rate is None or not self.errors or (self.rows < _MIN_ROWS_FOR_RATE and not last):
            return
        if self.errors > rate * self.rows:
            raise InferenceError(
                f"{self.errors} of {self.rows} rows failed in this task, more than max_error_rate={rate} "
                "allows; the input is probably not what the model expects (see the errors with "
                "on_error='column'), or raise max_error_rate"
            )


@dataclass(frozen=True)
class _Tokenized:
    """One chunk after tokenization: what the forward loop needs, and what it cost."""

    rows: int
    valid: npt.NDArray[np.bool_]
    ids: list[list[int]]
    lengths: IntArray
    truncated_rows: int
    seconds: float
    inputs: Inputs
    offset: int  # the stream position of the chunk's first row, for error messages


def _strings(texts: pa.Array) -> list[str]:
    """The Python strings of a string array; invalid UTF-8 (which Arrow does not check when it reads Parquet,
    e.g. lone surrogates written by another engine) is decoded with U+FFFD replacement characters."""
    try:
        strings: list[str] = texts.to_pylist()
    except UnicodeDecodeError:
        binary = pa.large_binary() if pa.types.is_large_string(texts.type) else pa.binary()
        strings = [raw.decode("utf-8", errors="replace") for raw in texts.cast(binary).to_pylist()]
    return strings


def _check_strings(texts: pa.Array) -> None:
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        raise SpecError(
            f"sparkinfer input must be a string column (got Arrow type {texts.type}); "
            "cast it first, e.g. F.col('x').cast('string')"
        )


def _set_threads(num_threads: int | None) -> None:
    if num_threads is not None:
        import torch

        torch.set_num_threads(num_threads)


@dataclass(frozen=True)
class _Model:
    """What computes a stream's rows: the model here, or a model host fed with the rows' token ids.

    Attributes:
        loaded: The spec's tokenizer and head; over the weights, or over a skeleton when `host` computes.
        host: The executor's model host (``ModelSpec.host="executor"``), or None to compute in this process.
    """

    loaded: LoadedModel
    host: HostClient | None = None


def _get_model(spec: ModelSpec, resources: TaskResources | None) -> tuple[_Model, Metrics]:
    """The cached model on the task's device (or its host), and Metrics holding its load (if this call loaded it)."""
    device = resolve_device(spec.device, resources)
    # Only "auto" generation in a Spark task asks whether the host would decode it continuously.
    decodes = spec.host == "auto" and spec.task == "generation" and resources is not None
    continuous = decodes and _decodes_continuously(spec)
    if resolve_host(spec.host, resources, device, continuous=continuous) == "executor":
        skeleton, _ = cache.get_model(spec, device=META)
        return _Model(skeleton, host.connect(spec, device)), Metrics()
    loaded, fresh = cache.get_model(spec, device=device)
    if fresh:
        warning = shared_gpu_warning(resources, device=device, model=spec.model, model_bytes=loaded.memory_bytes)
        if warning is not None:
            log.warning("sparkinfer: %s", warning)
    return _Model(loaded), Metrics(model_loads=int(fresh), model_load_seconds=loaded.load_seconds if fresh else 0.0)


def _decodes_continuously(spec: ModelSpec) -> bool:
    """Whether a model host would decode `spec`'s generation continuously (read from the model's skeleton)."""
    from sparkinfer.engine import continuous
    from sparkinfer.engine.tasks.generation import GenerationHead

    skeleton, _ = cache.get_model(spec, device=META)
    return isinstance(skeleton.head, GenerationHead) and continuous.supports(skeleton.head)


def _tokenize(loaded: LoadedModel, texts: pa.Array, offset: int) -> _Tokenized:
    started = time.perf_counter()
    valid: npt.NDArray[np.bool_] = np.asarray(texts.is_valid(), dtype=bool)
    strings = _strings(texts.filter(pa.array(valid)))
    encodings = loaded.head.prepare(strings)
    ids = [e.ids for e in encodings]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    truncated = sum(1 for e in encodings if e.overflowing)
    inputs = Inputs(strings, encodings)
    return _Tokenized(len(texts), valid, ids, lengths, truncated, time.perf_counter() - started, inputs, offset)


def _compute(
    spec: ModelSpec, model: _Model, tokenized: _Tokenized, budget: _Stream, metrics: Metrics,
    on_progress: Progress | None = None,
) -> tuple[pa.Array, Metrics]:
    """Forward every micro-batch of a tokenized chunk, here or in the host; `metrics` arrives holding the loads."""
    reported = [0, 0]  # rows and tokens passed to on_progress so far
    if on_progress is not None:
        on_progress(0, 0, tokenized.rows, int(tokenized.lengths.sum()))
    metrics.rows = tokenized.rows
    metrics.null_rows = int((~tokenized.valid).sum())
    metrics.truncated_rows = tokenized.truncated_rows
    metrics.real_tokens = int(tokenized.lengths.sum())
    metrics.tokenize_seconds = tokenized.seconds
    started = time.perf_counter()
    distinct = _Distinct(tokenized.ids, budget.recent)
    ids, lengths = [tokenized.ids[i] for i in distinct.first], tokenized.lengths[distinct.first]
    metrics.duplicate_rows = distinct.duplicates
    metrics.duplicate_tokens = metrics.real_tokens - int(lengths.sum())
    computed: npt.NDArray[Any] = np.empty((0, 0), dtype=np.float32)
    failed: dict[int, Exception] = {}
    if ids and model.host is not None:
        computed, failed = model.host.run(spec, ids, metrics)
    elif ids:

        def count(rows: IntArray, width: int, ok: bool) -> None:
            if ok:
                metrics.padded_tokens += len(rows) * max(width, 1)  # `pad` gives all-empty rows width 1
                metrics.micro_batches += 1
                if on_progress is not None:
                    tokens = int(lengths[rows].sum())
                    reported[0], reported[1] = reported[0] + len(rows), reported[1] + tokens
                    on_progress(len(rows), tokens, 0, 0)
            else:
                metrics.oom_splits += 1

        computed, failed = forward_rows(
            model.loaded, ids, lengths, budget, max_batch_size=spec.max_batch_size,
            overlap=spec.overlap, stop_on_error=spec.on_error == "raise", on_batch=count,
        )
    outputs, failures = distinct.fan_out(computed, failed)
    errors = {row: _row_error(spec, tokenized, row, exc) for row, exc in sorted(failures.items())}
    distinct.remember(computed, failed)
    metrics.error_rows = len(errors)
    result = _to_arrow(spec, model.loaded, tokenized, outputs, errors, metrics)
    metrics.forward_seconds = time.perf_counter() - started
    if on_progress is not None:
        on_progress(tokenized.rows - reported[0], metrics.real_tokens - reported[1], 0, 0)
    return result, metrics


def describe(exc: BaseException) -> str:
    """A failed row's error message: ``"<exception type>: <message>"``."""
    return str(exc) if isinstance(exc, RowFailure) else f"{type(exc).__name__}: {exc}"


def forward_rows(
    loaded: LoadedModel,
    ids: list[list[int]],
    lengths: IntArray,
    budget: Budget,
    *,
    max_batch_size: int,
    overlap: bool,
    stop_on_error: bool,
    on_batch: Callable[[IntArray, int, bool], None],
) -> tuple[npt.NDArray[Any], dict[int, Exception]]:
    """Run rows' token ids through the model in length-sorted token-budget micro-batches.

    The loop of every task, in-process and in a model host (which passes the rows of several tasks at once).
    A micro-batch that runs out of memory is split in half and retried (`budget` shrinks for what follows);
    any other failure is bisected down to the rows that fail alone.

    Args:
        loaded: The model and head to run.
        ids: Token ids of every row.
        lengths: Their lengths.
        budget: The token budget, lowered here by out-of-memory splits.
        max_batch_size: Most rows in one micro-batch.
        overlap: Pad and copy the next micro-batch in a background thread while the current one runs.
        stop_on_error: Stop at the first row that fails alone (``on_error="raise"``).
        on_batch: Called with ``(rows, padded width, True)`` after each micro-batch computed, and with
            ``(rows, width, False)`` for each one split after running out of memory.

    Returns:
        The outputs, one per row (rows that failed hold garbage), and the failed rows' exceptions by row.

    Raises:
        SpecError: When a setting, not a row, is wrong.
        InferenceError: When a single row does not fit in device memory.
    """
    import torch

    # The budget counts the tokens a row holds at its largest: its input plus what generation adds.
    costs = lengths + loaded.head.new_tokens
    pending = deque(plan_batches(costs, batch_tokens=budget.tokens, max_batch_size=max_batch_size))
    outputs: npt.NDArray[Any] | None = None
    failed: dict[int, Exception] = {}
    with ThreadPoolExecutor(1, thread_name_prefix="sparkinfer-batch") as pool:
        ahead: tuple[IntArray, Future[tuple[Any, Any]]] | None = None
        with torch.inference_mode():
            while pending and not (stop_on_error and failed):
                rows = pending.popleft()
                width = int(lengths[rows].max()) if len(rows) else 0
                cost = int(costs[rows].max()) if len(rows) else 0
                if len(rows) > 1 and len(rows) * cost > budget.tokens:  # planned before an OOM split
                    size = max(1, budget.tokens // max(cost, 1))
                    pending.extendleft(reversed([rows[i : i + size] for i in range(0, len(rows), size)]))
                    continue
                prefetched = ahead[1] if ahead is not None and ahead[0] is rows else None
                tensors = prefetched.result if prefetched is not None else partial(_tensors, ids, rows, loaded)
                ahead = None
                if overlap and pending:  # pad and copy the next micro-batch while this one runs
                    following = pending[0]
                    ahead = (following, pool.submit(_tensors, ids, following, loaded))
                try:
                    out = _forward(loaded, tensors, rows, width, cost, budget, pending)
                except SpecError:  # a setting, not a row, is wrong
                    raise
                except Exception as exc:  # a failing micro-batch: bisect it down to the guilty rows
                    if len(rows) > 1:
                        pending.extendleft([rows[len(rows) // 2 :], rows[: len(rows) // 2]])
                        continue
                    failed[int(rows[0])] = exc
                    continue
                if out is None:
                    on_batch(rows, width, False)
                    continue
                if outputs is None:
                    outputs = np.empty((len(ids), *out.shape[1:]), dtype=out.dtype)
                outputs[rows] = out
                on_batch(rows, width, True)
    if outputs is None:  # no row computed: the head still decides the (all-null) column's shape
        outputs = np.empty((len(ids), 0), dtype=np.float32)
    return outputs, failed


def output_type(spec: ModelSpec) -> pa.DataType:
    """The Arrow type of the column the engine returns for `spec`: the task's type, or with
    ``on_error="column"`` struct<result: the task's type, error: string>."""
    from sparkinfer.engine.tasks import get_task

    result = get_task(spec.task).arrow_type(spec)
    if spec.on_error != "column":
        return result
    return pa.struct([pa.field("result", result), pa.field("error", pa.string())])


def _row_error(spec: ModelSpec, tokenized: _Tokenized, row: int, exc: Exception) -> str:
    """The error of one failed row (valid-row index `row`), or InferenceError with on_error="raise"."""
    position = tokenized.offset + int(np.flatnonzero(tokenized.valid)[row])
    message = describe(exc)
    if spec.on_error == "raise":
        raise InferenceError(
            f"the prediction of row {position} of this task's input ({len(tokenized.ids[row])} tokens) failed: "
            f"{message}; set on_error='null' or 'column' to answer failing rows instead of failing the task"
        ) from exc
    log.warning("sparkinfer: row %d of this task's input failed: %s", position, message)
    return message


def _to_arrow(
    spec: ModelSpec,
    loaded: LoadedModel,
    tokenized: _Tokenized,
    outputs: npt.NDArray[Any],
    failed: dict[int, str],
    metrics: Metrics,
) -> pa.Array:
    """The head's column for a chunk, failed rows null; with on_error="column", wrapped with the errors.

    A head with a ``tally(outputs)`` adds its counters of the rows that worked to `metrics`.
    """
    valid, inputs = tokenized.valid, tokenized.inputs
    if failed:  # the head sees the rows that worked only, failed ones as if they were null
        ok = np.ones(len(tokenized.ids), dtype=bool)
        ok[list(failed)] = False
        positions = np.flatnonzero(valid)
        valid = valid.copy()
        valid[positions[~ok]] = False
        keep = np.flatnonzero(ok)
        inputs = Inputs([inputs.texts[i] for i in keep], [inputs.encodings[i] for i in keep])
        outputs = outputs[ok]
    result = loaded.head.to_arrow(outputs, valid, inputs)
    tally = getattr(loaded.head, "tally", None)
    for name, value in (tally(outputs) if tally is not None else {}).items():
        setattr(metrics, name, getattr(metrics, name) + value)
    if spec.on_error != "column":
        return result
    errors: list[str | None] = [None] * tokenized.rows
    positions = np.flatnonzero(tokenized.valid)
    for row, message in failed.items():
        errors[int(positions[row])] = message
    return pa.StructArray.from_arrays(
        [result, pa.array(errors, pa.string())], fields=list(output_type(spec)), mask=pa.array(~tokenized.valid)
    )


def _tensors(ids: list[list[int]], rows: IntArray, loaded: LoadedModel) -> tuple[Any, Any]:
    """Pad `rows` and put them on the model's device (pinned + non-blocking on CUDA)."""
    import torch

    cuda = loaded.device.startswith("cuda")

    def put(array: IntArray) -> Any:
        tensor = torch.from_numpy(array)
        return (tensor.pin_memory() if cuda else tensor).to(loaded.device, non_blocking=cuda)

    input_ids, mask = pad(ids, rows, pad_id=loaded.pad_id, side=loaded.head.padding_side)
    return put(input_ids), put(mask)


def _forward(
    loaded: LoadedModel,
    tensors: Callable[[], tuple[Any, Any]],
    rows: IntArray,
    width: int,
    cost: int,
    budget: Budget,
    pending: deque[IntArray],
) -> npt.NDArray[Any] | None:
    """One micro-batch's outputs; ``None`` when it ran out of memory and was split back into `pending`.

    `tensors` gives the padded batch on the device; copying it there can run out of memory too. `width`
    is its padded input length, `cost` the budget tokens of its largest row (input plus new tokens).
    """
    import torch

    try:
        input_ids, attention_mask = tensors()
        faults.before_forward(input_ids)
        return loaded.head.forward(input_ids, attention_mask)
    except torch.cuda.OutOfMemoryError as exc:
        if len(rows) == 1:
            raise InferenceError(
                f"a single row of {width} tokens does not fit in the memory of {loaded.device}, even alone "
                f"(micro-batch token budget now {budget.tokens}); lower ModelSpec.max_length (now "
                f"{loaded.max_length}), quantize the model (quantization='8bit' or '4bit'), or use a device "
                f"with more memory: {exc}"
            ) from exc
        half = len(rows) // 2
        budget.tokens = min(budget.tokens, half * cost)
        log.warning(
            "sparkinfer: out of memory on %s with %d rows x %d tokens; split in half, token budget now %d",
            loaded.device, len(rows), width, budget.tokens,
        )
        pending.extendleft([rows[half:], rows[:half]])
    # Out of the except block, so the traceback no longer holds the failed batch's activations.
    if loaded.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return None
