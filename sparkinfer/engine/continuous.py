"""Continuous (iteration-level) batching for the causal LM behind a bound `GenerationHead`.

`GenerationHead.forward` decodes a micro-batch until its longest row ends: a row that stops at step 3 of
64 keeps its slot, and the model keeps computing it, for 61 more steps. `ContinuousDecoder` instead
keeps one running batch and, at every step, drops the rows that finished and admits queued prompts in
their place. It follows the design of Hugging Face TGI's pre-flash ``CausalLMBatch``:

* the running batch is one left-padded ``DynamicCache`` with its attention mask and per-row position ids
  (positions count real tokens only, as ``generate`` numbers them), so every row's next token sits in
  the last column;
* new prompts are prefilled among themselves (left-padded, in length-sorted groups when that saves
  padding) and put into the running batch: into the slots of rows that left, in place, or concatenated
  after the running rows, the narrower key/value tensors padded on the left;
* slots that no new row takes are removed with ``index_select`` before the next decode step, so no
  finished row is ever computed, and the left columns that every remaining row masks are trimmed.

Refilling in place copies only the new rows' keys and values; removing or appending rows copies the whole
cache once, as each decode step's ``DynamicCache`` update does anyway.

Decoding and stopping are the static head's, row by row: greedy argmax of the float32 logits, or
`_GumbelSampler` with a generator per row seeded by ``row_seed(spec.seed, prompt)`` (one draw per step,
so a row samples the same tokens whatever shares its batch or when it was admitted); a row ends at its
first end-of-sequence token or stop string, or at ``max_new_tokens``. Its result is the tuple
``GenerationHead.forward`` gives it.

Faults and errors follow the runner: ``faults.before_forward`` runs before each prefill; a prefill that
fails is bisected down to the rows that fail alone; an out-of-memory sends the newest half of the rows
back to the front of the queue (they restart from scratch, so outputs do not change) and lowers the token
budget for the rest of the decoder's life.

torch is imported inside the functions, as everywhere in the engine.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkinfer.engine import faults
from sparkinfer.engine.batching import pad
from sparkinfer.engine.tasks.generation import GenerationHead, _GumbelSampler, finished_row, row_seed
from sparkinfer.errors import InferenceError, SpecError

if TYPE_CHECKING:
    import torch

RowResult = tuple[str, int, int, str] | Exception
"""``(text, prompt_tokens, completion_tokens, finish_reason)`` as `GenerationHead.forward` gives it, or the
exception of a row that failed on its own."""

_EMPTY: tuple[str, int, int, str] = ("", 0, 0, "length")  # the static head's answer to an empty prompt


@dataclass(frozen=True)
class Finished:
    """One row that left the decoder, with what it cost, for the caller's metrics.

    Attributes:
        result: Its `RowResult`.
        steps: Decode steps it took part in (its prefill not counted: a row that ended on its first token
            took 0), in the run that produced `result`.
        prefill_tokens: The padded width of the prefill forward that admitted it (0: never prefilled,
            e.g. an empty prompt).
        restarts: Times an out-of-memory sent it back to the queue to start again.
    """

    result: RowResult
    steps: int
    prefill_tokens: int
    restarts: int = 0


@dataclass
class DecoderStats:
    """What a `ContinuousDecoder` did, summed over its calls.

    Attributes:
        forward_passes: Model forwards: `prefills` plus `decode_steps`.
        prefills: Prefill forwards (one per group of admitted prompts, more when bisected).
        decode_steps: Decode forwards (one token for every active row).
        slot_steps: Row-steps computed by decode forwards (active rows summed over decode steps).
        wasted_slot_steps: Decode slots left empty while prompts waited in the queue: per decode step,
            ``max_batch_size`` minus the active rows, when the token budget kept queued rows out. A row
            that finished never holds a slot, so this is the only waste of the continuous batch (the
            static head's is the finished rows it keeps computing).
        refills: Rows admitted while other rows were decoding (slots refilled from the queue).
        prefill_tokens: Padded tokens of the prefill forwards.
        oom_splits: Out-of-memory errors that sent rows back to the queue.
        rows: Rows finished (results returned), failed ones included.
        seconds: Wall time spent in `ContinuousDecoder.step`.
    """

    forward_passes: int = 0
    prefills: int = 0
    decode_steps: int = 0
    slot_steps: int = 0
    wasted_slot_steps: int = 0
    refills: int = 0
    prefill_tokens: int = 0
    oom_splits: int = 0
    rows: int = 0
    seconds: float = 0.0


def supports(head: GenerationHead) -> bool:
    """Whether `ContinuousDecoder` can serve `head`: a causal LM whose cache is plain full attention.

    Sliding-window, chunked and linear-attention layers keep state that a left-padded concatenation does
    not carry; such models stay on `GenerationHead.forward`, as do constrained heads (a grammar's matchers
    live in one ``generate`` call).
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if not head.causal or head.constraint is not None:
        return False
    cache = DynamicCache(config=head.model.config.get_text_config(decoder=True))
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


class ContinuousDecoder:
    """Iteration-level (continuous) batching for one bound `GenerationHead` of a causal LM (``head.causal``).

    The caller `submit`s prompts and calls `step` while `busy`; each step admits queued prompts into free
    slots (prefilling them), runs one decode step for every active row, and returns the rows that
    finished. Not thread-safe: one thread drives it.

    Budget: the active rows' costs (prompt tokens plus ``max_new_tokens`` each, as the runner counts a
    row) sum to at most the token budget, and at most `max_batch_size` rows are active; a single row over
    the budget runs alone. Admission is first come, first served: a queued row that does not fit waits,
    and the rows behind it wait with it.

    Attributes:
        head: The bound head: model, tokenizer, spec (stop strings, sampling, ``max_new_tokens``).
        batch_tokens: The token budget, lowered by out-of-memory errors.
        max_batch_size: Most active rows.
        stats: What it did so far.
    """

    def __init__(self, head: GenerationHead, *, batch_tokens: int, max_batch_size: int) -> None:
        """Bind the decoder to `head`.

        Raises:
            ValueError: When `head` is not a causal LM with a plain full-attention cache (see `supports`),
                or a budget is not positive.
        """
        if batch_tokens < 1 or max_batch_size < 1:
            raise ValueError(
                f"ContinuousDecoder needs batch_tokens >= 1 and max_batch_size >= 1 "
                f"(got batch_tokens={batch_tokens}, max_batch_size={max_batch_size})"
            )
        if not supports(head):
            raise ValueError(
                f"ContinuousDecoder needs a causal LM with a plain full-attention cache (got "
                f"{type(head.model).__name__}, causal={head.causal}); use GenerationHead.forward for it"
            )
        self.head = head
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.stats = DecoderStats()
        self._queue: deque[_Row] = deque()
        # The running batch's rows, slot by slot; None marks a slot whose row left, refilled in place by the
        # next admission or compacted away before the next decode step.
        self._slots: list[_Row | None] = []
        self._batch: _Batch | None = None
        self._done: list[tuple[Hashable, Finished]] = []  # finished, not yet returned by `step`
        self._keys: set[Hashable] = set()
        self._admitted = 0  # admissions so far: each row's `order`, to find the newest rows
        self._sampler = _GumbelSampler(head.spec, []) if head.spec.do_sample else None
        # As generate does: the LM head on the last position only, where the model supports it.
        keeps = getattr(head.model, "_supports_logits_to_keep", None)
        self._keep = {"logits_to_keep": 1} if keeps is not None and keeps() else {}

    @property
    def busy(self) -> bool:
        """Whether rows are queued, active, or finished but not yet returned by `step`."""
        return bool(self._queue or self._done or any(row is not None for row in self._slots))

    def submit(self, key: Hashable, ids: list[int]) -> None:
        """Queue one prompt.

        Args:
            key: Identifies the row to the caller (`step` returns it with the result); unique among the
                rows in the decoder.
            ids: Its token ids, already truncated by ``head.prepare``.

        Raises:
            ValueError: When `key` is already in the decoder.
        """
        if key in self._keys:
            raise ValueError(f"ContinuousDecoder.submit: key {key!r} is already queued or active; keys must be unique")
        self._keys.add(key)
        if not ids:  # nothing to continue, as GenerationHead.forward answers it
            self._done.append((key, Finished(_EMPTY, 0, 0)))
            return
        self._queue.append(_Row(key, list(ids), len(ids) + self.head.new_tokens))

    def cancel(self, keys: Iterable[Hashable]) -> None:
        """Drop these rows, queued, active or finished but not returned (their client went away).

        Unknown keys are ignored.
        """
        drop = set(keys) & self._keys
        if not drop:
            return
        self._keys -= drop
        self._queue = deque(row for row in self._queue if row.key not in drop)
        self._done = [(key, done) for key, done in self._done if key not in drop]
        self._slots = [None if row is None or row.key in drop else row for row in self._slots]

    def step(self) -> list[tuple[Hashable, Finished]]:
        """Admit queued prompts while the slots and the token budget allow (prefilling them), run ONE decode
        step for all active rows, and return the rows that finished during this call.

        Raises:
            SpecError: From the model or the fault hook: a setting, not a row, is wrong.
        """
        import torch

        started = time.perf_counter()
        try:
            with torch.inference_mode():
                # Rows that end on their first token free their slot at once: admit again while that happens.
                while self._admit():
                    pass
                self._compact()
                if self._slots:
                    self._decode()
        finally:
            self.stats.seconds += time.perf_counter() - started
        done, self._done = self._done, []
        for key, _ in done:
            self._keys.discard(key)
        self.stats.rows += len(done)
        return done

    @property
    def _active(self) -> list[_Row]:
        return [row for row in self._slots if row is not None]

    # ------------------------------------------------------------------------------------------ admission

    def _admit(self) -> bool:
        """Move queued rows into free slots, prefill them, and place the unfinished ones in the batch.

        Returns:
            Whether slots are still free for the rows still queued (some ended on their first token).
        """
        active = self._active
        new: list[_Row] = []
        cost = sum(row.cost for row in active)
        while self._queue and len(active) + len(new) < self.max_batch_size:
            row = self._queue[0]
            if (active or new) and cost + row.cost > self.batch_tokens:
                break
            new.append(self._queue.popleft())
            cost += row.cost
        if not new:
            return False
        self.stats.refills += len(new) if active else 0
        groups = deque(_prefill_groups(new))  # prefills still to run: a failing one is split in halves
        while groups:
            group = groups.popleft()
            oom: Exception | None = None
            try:
                piece, logits, width = self._prefill(group)
            except SpecError:
                raise
            except Exception as exc:
                if _is_oom(exc):
                    oom = exc.with_traceback(None)  # hold no frame, so the failed activations can be freed
                elif len(group) > 1:  # bisect a failing prefill down to the rows that fail alone
                    groups.extendleft([group[len(group) // 2 :], group[: len(group) // 2]])
                    continue
                else:
                    self._finish(group[0], exc)
                    continue
            if oom is not None:
                gone = self._out_of_memory(oom, [row for g in (group, *groups) for row in g])
                groups = deque(kept for g in (group, *groups) if (kept := [row for row in g if row not in gone]))
                continue
            self.stats.prefills += 1
            self.stats.forward_passes += 1
            self.stats.prefill_tokens += len(group) * width
            for row in group:
                row.prefill_tokens, row.order = width, self._admitted
                self._admitted += 1
                if self._sampler is not None:
                    row.generator = _generator(self.head.spec.seed, row.ids, logits.device)
            alive, chosen = self._advance(group, logits)
            piece.last = chosen[:, None]
            self._place(piece, alive, [group[i] for i in alive])
        active = self._active
        spare = len(active) < self.max_batch_size and bool(self._queue)
        return spare and sum(row.cost for row in active) + self._queue[0].cost <= self.batch_tokens

    def _prefill(self, rows: list[_Row]) -> tuple[_Batch, torch.Tensor, int]:
        """Run the prompts of `rows` through the model: their batch, last-position logits and padded width."""
        import torch

        model = self.head.model
        ids, mask = pad([row.ids for row in rows], np.arange(len(rows)), pad_id=self.head.pad_id, side="left")
        input_ids = torch.from_numpy(ids).to(model.device)
        attention_mask = torch.from_numpy(mask).to(model.device)
        faults.before_forward(input_ids)
        # As generate numbers a left-padded prompt: real tokens from 0, padding at 0 (it is masked anyway).
        positions = (attention_mask.cumsum(dim=1) - 1).masked_fill(attention_mask == 0, 0)
        cache = _new_cache(model)
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, cache=cache,
                    use_cache=True, **self._keep)
        logits = out.logits[:, -1].float()
        return _Batch(cache, attention_mask, input_ids[:, -1:]), logits, int(ids.shape[1])

    def _place(self, piece: _Batch, index: list[int], rows: list[_Row]) -> None:
        """Put the `index` rows of a prefilled `piece` (`rows`) into free slots, or after the running rows."""
        if not rows:
            return
        if self._batch is None:
            piece.select(index)
            self._batch, self._slots = piece, list(rows)
            return
        free = [slot for slot, row in enumerate(self._slots) if row is None][: len(rows)]
        if free:  # in place: only the new rows' keys and values are copied
            self._batch.place(free, piece, index[: len(free)])
            for slot, row in zip(free, rows):
                self._slots[slot] = row
        if len(rows) > len(free):
            piece.select(index[len(free) :])
            self._batch.extend(piece)
            self._slots.extend(rows[len(free) :])

    def _compact(self) -> None:
        """Drop the slots no row holds (before a decode step, so that none is computed) and trim the batch."""
        if self._batch is None:
            return
        keep = [slot for slot, row in enumerate(self._slots) if row is not None]
        if not keep:
            self._batch, self._slots = None, []
            return
        if len(keep) < len(self._slots):
            self._slots = [self._slots[slot] for slot in keep]
            self._batch.select(keep)
        else:
            self._batch.trim()

    # --------------------------------------------------------------------------------------------- decode

    def _decode(self) -> None:
        """One decode step for every active row; an out-of-memory sheds the newest half and retries."""
        while self._slots and self._batch is not None:
            batch = self._batch
            oom: Exception | None = None
            try:
                logits = batch.decode(self.head.model, self._keep)
            except SpecError:
                raise
            except Exception as exc:
                batch.rollback()
                if not _is_oom(exc):
                    # A decode step cannot be bisected without redoing every row's prefill: its rows fail together.
                    for row in self._active:
                        self._finish(row, exc)
                    self._batch, self._slots = None, []
                    return
                oom = exc.with_traceback(None)
            if oom is not None:
                self._out_of_memory(oom, [])
                self._compact()
                continue
            rows = self._active  # every slot holds a row: `_compact` ran before
            waiting = bool(self._queue)  # slots the token budget kept empty, though rows wait
            self.stats.wasted_slot_steps += self.max_batch_size - len(rows) if waiting else 0
            self.stats.decode_steps += 1
            self.stats.forward_passes += 1
            self.stats.slot_steps += len(rows)
            for row in rows:
                row.steps += 1
            alive, chosen = self._advance(rows, logits)
            batch.last = chosen[:, None]
            kept = set(alive)
            self._slots = [row if slot in kept else None for slot, row in enumerate(rows)]
            return

    def _advance(self, rows: list[_Row], logits: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """Choose each row's next token from its logits and finish the rows that end.

        As the static head's `_Finish`: an end-of-sequence token ends a row first, then a stop string in
        its decoded tokens, then ``max_new_tokens``.

        Returns:
            The indices of the rows still running, and the chosen tokens of all rows (on the device).
        """
        import torch

        if self._sampler is not None:
            # The sampler's warpers run on the whole batch; each row draws from its own generator.
            self._sampler.generators = [row.generator for row in rows if row.generator is not None]
            logits = self._sampler(torch.zeros(len(rows), 1, dtype=torch.long, device=logits.device), logits)
        chosen = logits.argmax(dim=-1)
        tokens: list[int] = chosen.tolist()
        spec, eos = self.head.spec, self.head.eos_ids
        running: list[int] = []
        for i, (row, token) in enumerate(zip(rows, tokens)):
            row.tokens.append(token)
            if token in eos:
                row.stopped = row.by_eos = True
            else:
                running.append(i)
        if spec.stop and running:
            texts = self.head._decode([rows[i].tokens for i in running])
            for i, text in zip(running, texts):
                rows[i].stopped = any(stop in text for stop in spec.stop)
        alive = [i for i in running if not rows[i].stopped and len(rows[i].tokens) < spec.max_new_tokens]
        ended = sorted(set(range(len(rows))) - set(alive))
        if ended:
            texts = self.head._decode([rows[i].tokens[: len(rows[i].tokens) - rows[i].by_eos] for i in ended])
            for i, text in zip(ended, texts):
                row = rows[i]
                self._finish(row, finished_row(text, len(row.ids), len(row.tokens), row.stopped, spec.stop))
        return alive, chosen

    # ------------------------------------------------------------------------------------------ bookkeeping

    def _finish(self, row: _Row, result: RowResult) -> None:
        self._done.append((row.key, Finished(result, row.steps, row.prefill_tokens, row.restarts)))

    def _out_of_memory(self, exc: Exception, waiting: list[_Row]) -> set[_Row]:
        """Send the newest half of the active and `waiting` rows back to the queue, and lower the budget.

        The rows sent back lose their progress and start again from their prompt, so their outputs do not
        change. A row alone that does not fit fails with InferenceError. Their slots are left empty.

        Returns:
            The rows taken out (sent back, or the one that failed).
        """
        import torch

        # Oldest first: the active rows by admission, then those being admitted.
        rows = [*sorted(self._active, key=lambda row: row.order), *waiting]
        if len(rows) == 1:
            row = rows[0]
            error = InferenceError(
                f"a single row of {len(row.ids)} tokens (plus up to {self.head.new_tokens} new ones) does not fit "
                f"in the memory of {self.head.model.device}, even alone (token budget now {self.batch_tokens}); "
                "lower ModelSpec.max_length or max_new_tokens, quantize the model (quantization='8bit' or '4bit'), "
                f"or use a device with more memory: {exc}"
            )
            error.__cause__ = exc
            self._finish(row, error)
            gone = {row}
        else:
            half = len(rows) - len(rows) // 2
            gone = set(rows[half:])
            self.batch_tokens = max(1, min(self.batch_tokens, sum(row.cost for row in rows[:half])))
            self.stats.oom_splits += 1
            for row in rows[half:]:
                row.restart()
            self._queue.extendleft(reversed(rows[half:]))
        self._slots = [None if row in gone else row for row in self._slots]
        if str(self.head.model.device).startswith("cuda"):
            torch.cuda.empty_cache()
        return gone


# A prefill forward costs about as much as this many more padded tokens (reading the weights once, launching
# the kernels): admitted prompts are prefilled in length-sorted groups where splitting saves more padding.
_PREFILL_OVERHEAD_TOKENS = 32


def _prefill_groups(rows: list[_Row]) -> list[list[_Row]]:
    """Cut rows into length-sorted prefill groups that minimise padded tokens plus a per-forward overhead.

    The rows arrive in queue order and of any length; one left-padded prefill would pad them all to the
    longest. Sorted longest first, the best cut into consecutive groups is a small dynamic programme.
    """
    ordered = sorted(rows, key=lambda row: -len(row.ids))
    lengths = [len(row.ids) for row in ordered]
    best = [0] + [0] * len(ordered)  # best[i]: the cost of prefilling the first i rows
    cut = [0] * (len(ordered) + 1)  # where the last group of those i rows starts
    for i in range(1, len(ordered) + 1):
        best[i], cut[i] = min((best[j] + _PREFILL_OVERHEAD_TOKENS + (i - j) * lengths[j], j) for j in range(i))
    groups: list[list[_Row]] = []
    end = len(ordered)
    while end:
        groups.append(ordered[cut[end] : end])
        end = cut[end]
    return groups[::-1]


@dataclass(eq=False)
class _Row:
    """One prompt in the decoder and its progress."""

    key: Hashable
    ids: list[int]
    cost: int  # budget tokens: prompt plus max_new_tokens
    tokens: list[int] = field(default_factory=list)  # generated so far
    generator: Any = None  # torch.Generator when sampling
    steps: int = 0
    prefill_tokens: int = 0
    order: int = 0  # when it was admitted (prefilled), among all rows of the decoder
    restarts: int = 0
    stopped: bool = False  # by an end-of-sequence token or a stop string
    by_eos: bool = False

    def restart(self) -> None:
        self.tokens, self.generator, self.steps, self.prefill_tokens = [], None, 0, 0
        self.stopped = self.by_eos = False
        self.restarts += 1


class _Batch:
    """The running rows as one left-padded batch: KV cache, attention mask and the tokens to feed next.

    Every row's real tokens end in the last column, so one decode step appends one column to all rows.

    Attributes:
        cache: A ``DynamicCache`` of plain layers, keys and values of shape (rows, heads, width, dim).
        mask: (rows, width) int64: 1 over each row's real tokens (prompt and generated ones in the cache).
        last: (rows, 1): each row's latest token, not yet in the cache.
    """

    def __init__(self, cache: Any, mask: torch.Tensor, last: torch.Tensor) -> None:
        self.cache = cache
        self.mask = mask
        self.last = last

    def decode(self, model: Any, keep: dict[str, int]) -> torch.Tensor:
        """Feed `last` to the model; return its float32 logits (rows, vocab) and grow the batch by a column."""
        import torch

        mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        positions = self.mask.sum(dim=1, keepdim=True)  # the real tokens before this one
        out = model(input_ids=self.last, attention_mask=mask, position_ids=positions, cache=self.cache,
                    use_cache=True, **keep)
        self.mask = mask
        logits: torch.Tensor = out.logits[:, -1].float()
        return logits

    def rollback(self) -> None:
        """Undo a decode step that failed part-way: cut the layers it grew back to the mask's width."""
        width = self.mask.shape[1]
        for layer in self.cache.layers:
            if layer.keys is not None and layer.keys.dim() == 4 and layer.keys.shape[-2] > width:
                layer.keys, layer.values = layer.keys[..., :width, :], layer.values[..., :width, :]

    def select(self, rows: list[int]) -> None:
        """Keep these rows (copying their keys and values), then `trim`."""
        import torch

        if len(rows) < self.mask.shape[0]:
            index = torch.tensor(rows, device=self.mask.device)
            self.mask, self.last = self.mask.index_select(0, index), self.last.index_select(0, index)
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys.index_select(0, index), layer.values.index_select(0, index)
        self.trim()

    def trim(self) -> None:
        """Drop the left columns that every row masks (views: the next decode step's concatenation copies)."""
        start = self.mask.shape[1] - int(self.mask.sum(dim=1).max())
        if start > 0:
            self.mask = self.mask[:, start:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., start:, :], layer.values[..., start:, :]

    def place(self, slots: list[int], piece: _Batch, rows: list[int]) -> None:
        """Overwrite the rows at `slots` (rows that left) with the `rows` of `piece`, right-aligned."""
        import torch

        if piece.mask.shape[1] > self.mask.shape[1]:
            self._widen(piece.mask.shape[1])
        width, theirs = self.mask.shape[1], piece.mask.shape[1]
        to = torch.tensor(slots, device=self.mask.device)
        take = torch.tensor(rows, device=self.mask.device)
        self.mask[to] = 0
        self.mask[to, width - theirs :] = piece.mask.index_select(0, take)
        self.last[to] = piece.last.index_select(0, take)
        for mine, new in zip(self.cache.layers, piece.cache.layers):
            for name in ("keys", "values"):
                tensor = getattr(mine, name)
                tensor[to, :, : width - theirs] = 0  # masked, but stale values could be inf or NaN
                tensor[to, :, width - theirs :] = getattr(new, name).index_select(0, take)

    def extend(self, other: _Batch) -> None:
        """Append `other`'s rows after these, the narrower batch padded on the left."""
        import torch

        width = max(self.mask.shape[1], other.mask.shape[1])
        self._widen(width)
        other._widen(width)
        self.mask = torch.cat([self.mask, other.mask])
        self.last = torch.cat([self.last, other.last])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([mine.keys, theirs.keys])
            mine.values = torch.cat([mine.values, theirs.values])

    def _widen(self, width: int) -> None:
        """Pad every row on the left to `width` columns (masked zeros)."""
        from torch.nn.functional import pad as fill

        extra = width - self.mask.shape[1]
        if extra <= 0:
            return
        self.mask = fill(self.mask, (extra, 0))
        for layer in self.cache.layers:
            layer.keys, layer.values = fill(layer.keys, (0, 0, extra, 0)), fill(layer.values, (0, 0, extra, 0))


def _new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=model.config.get_text_config(decoder=True))


def _generator(seed: int, prompt: list[int], device: Any) -> torch.Generator:
    """A row's sampling generator, as `_GumbelSampler` makes it: seeded by `row_seed`, on the logits' device."""
    import torch

    return torch.Generator(device=device).manual_seed(row_seed(seed, prompt))


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError)
