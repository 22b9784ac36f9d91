"""The continuous decoder against plain ``model.generate`` on each row ALONE, and against the static head.

The oracle tokenizes a prompt with the transformers tokenizer, keeps its last 128 - max_new_tokens tokens,
runs ``model.generate`` on it alone (no padding, no batch) and cuts the output at the first end-of-sequence
token and stop string itself. It shares no code with sparkinfer's padding, caching, stopping or decoding.
Two tiny random models: the GPT-2 of tests/conftest.py (learned positions) and a Llama (rotary positions,
grouped-query attention) built here the same way; both end rows with </s> at varied steps.

Every test runs with ``max_batch_size`` below the number of prompts, so that slots are refilled while
other rows decode, and checks that they were.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sparkinfer import ModelSpec
from sparkinfer.engine import cache, faults
from sparkinfer.engine.batching import pad
from sparkinfer.engine.continuous import ContinuousDecoder, Finished, _Row, supports
from sparkinfer.engine.tasks.generation import GenerationHead
from tests.conftest import build_tiny_causal_lm, build_tiny_tokenizer

POSITIONS = 128  # both tiny models' position limit
EOS = 1
NEW = 16


@pytest.fixture(autouse=True, scope="module")
def empty_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def build_tiny_llama(path: Path, *, seed: int = 0, eos_boost: float = 2.5) -> str:
    """A random Llama (2 layers, width 32, 4 query / 2 key-value heads, rotary, 128 positions) with the tiny
    BPE tokenizer; the </s> row of its (untied) output head is scaled so that greedy rows end early."""
    import torch
    import transformers

    tokenizer = build_tiny_tokenizer(path)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=POSITIONS, bos_token_id=1, eos_token_id=1, pad_token_id=0,
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        model.lm_head.weight[EOS] *= eos_boost
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model_path(request: pytest.FixtureRequest, tiny_causal_lm: str, tiny_llama: str) -> str:
    return tiny_causal_lm if request.param == "gpt2" else tiny_llama


class Oracle:
    """Plain transformers, one row at a time: the prompt's ids, and what ``generate`` makes of them."""

    def __init__(self, path: str) -> None:
        import transformers

        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
        self._memo: dict[tuple[tuple[int, ...], int], list[int]] = {}

    def ids(self, text: str, new_tokens: int = NEW) -> list[int]:
        ids: list[int] = self.tokenizer(text).input_ids
        return ids[-(POSITIONS - new_tokens) :]

    def generate(self, ids: list[int], new_tokens: int = NEW) -> list[int]:
        """The generated ids, EOS included, nothing after it."""
        key = (tuple(ids), new_tokens)
        if key not in self._memo:
            import torch

            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                    max_new_tokens=new_tokens, do_sample=False,
                )[0, len(ids) :].tolist()
            self._memo[key] = out[: out.index(EOS) + 1] if EOS in out else out
        return self._memo[key]

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode([i for i in ids if i != EOS], skip_special_tokens=True))

    def details(self, ids: list[int], new_tokens: int = NEW, stops: tuple[str, ...] = ()) -> tuple[str, int, int, str]:
        """What the row must give: the first stop string ends it, found by decoding every prefix."""
        if not ids:
            return ("", 0, 0, "length")
        generated = self.generate(ids, new_tokens)
        for n in range(1, len(generated) + 1):
            text = self.decode(generated[:n])
            hits = [text.find(s) for s in stops if s in text]
            if hits:
                return (text[: min(hits)], len(ids), n, "stop")
        ended = generated[-1:] == [EOS]
        return (self.decode(generated), len(ids), len(generated), "stop" if ended else "length")


@pytest.fixture(scope="module")
def oracles() -> Callable[[str], Oracle]:
    """``oracles(path)``: one memoizing oracle per model directory for the module."""
    made: dict[str, Oracle] = {}

    def get(path: str) -> Oracle:
        if path not in made:
            made[path] = Oracle(path)
        return made[path]

    return get


@pytest.fixture(scope="module")
def oracle(model_path: str, oracles: Callable[[str], Oracle]) -> Oracle:
    return oracles(model_path)


@pytest.fixture
def gpt2_oracle(tiny_causal_lm: str, oracles: Callable[[str], Oracle]) -> Oracle:
    return oracles(tiny_causal_lm)


@pytest.fixture(scope="module")
def prompts(words: list[str]) -> list[str]:
    """32 prompts of 1 to ~150 words (2 over the prompt limit)."""
    rng = random.Random(7)
    sizes = [1, 2, 150, 60, *(rng.choice([1, 3, 6, 12, 24, 48]) + rng.randrange(6) for _ in range(28))]
    return [" ".join(words[(i * 173) % 5000 :][:n]) for i, n in enumerate(sizes)]


def head_for(path: str, **options: Any) -> GenerationHead:
    spec = ModelSpec(path, task="generation", device="cpu", **{"max_new_tokens": NEW, **options})
    head = cache.get_model(spec, device="cpu")[0].head
    assert isinstance(head, GenerationHead)
    return head


def drain(decoder: ContinuousDecoder) -> dict[Hashable, Finished]:
    out: dict[Hashable, Finished] = {}
    while decoder.busy:
        for key, done in decoder.step():
            assert key not in out
            out[key] = done
    return out


def static(head: GenerationHead, rows: list[list[int]]) -> list[Any]:
    """`GenerationHead.forward` on all rows as one left-padded micro-batch."""
    import torch

    ids, mask = pad(rows, np.arange(len(rows)), pad_id=head.pad_id, side="left")
    with torch.inference_mode():
        return [tuple(r) for r in head.forward(torch.from_numpy(ids), torch.from_numpy(mask))]


# ---------------------------------------------------------------------------------------------- greedy


def test_greedy_equals_per_row_generate_and_the_static_head_with_refills(
    model_path: str, oracle: Oracle, prompts: list[str]
) -> None:
    head = head_for(model_path)
    rows = [oracle.ids(p) for p in prompts]
    budget = 400  # about 5 rows of the mix: the token budget binds as well as max_batch_size
    decoder = ContinuousDecoder(head, batch_tokens=budget, max_batch_size=6)
    seen: list[tuple[int, int]] = []  # (rows, budget cost) of every decode forward

    def record(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if kwargs["input_ids"].shape[1] == 1:
            seen.append((kwargs["input_ids"].shape[0], sum(row.cost for row in decoder._active)))

    hook = head.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        for i, ids in enumerate(rows):
            decoder.submit(i, ids)
        out = drain(decoder)
    finally:
        hook.remove()
    expected = [oracle.details(ids) for ids in rows]
    assert [out[i].result for i in range(len(rows))] == expected
    assert [out[i].result for i in range(len(rows))] == static(head, rows)
    # Rows end at many different steps, and their slots were refilled while others decoded.
    lengths = [e[2] for e in expected]
    assert len(set(lengths)) >= 4 and min(lengths) < NEW // 2 and lengths.count(NEW) >= 3
    stats = decoder.stats
    assert stats.refills >= 10 and stats.rows == len(rows)
    assert stats.forward_passes == stats.prefills + stats.decode_steps
    assert stats.slot_steps == sum(f.steps for f in out.values()) == sum(n for n, _ in seen)
    assert all(f.steps == max(0, f.result[2] - 1) for f in out.values())  # type: ignore[index]
    assert all(n <= 6 and (cost <= budget or n == 1) for n, cost in seen)
    assert max(n for n, _ in seen) >= 3
    # Fewer decode steps than the static micro-batches of 6 rows would run to their longest row.
    assert stats.decode_steps < sum(max(lengths[i : i + 6]) - 1 for i in range(0, len(rows), 6)) + 1
    assert not decoder.busy and decoder.step() == []


def test_a_row_over_the_budget_runs_alone(tiny_causal_lm: str, gpt2_oracle: Oracle, prompts: list[str]) -> None:
    oracle = gpt2_oracle
    head = head_for(tiny_causal_lm)
    rows = [oracle.ids(p) for p in prompts[:8]]
    decoder = ContinuousDecoder(head, batch_tokens=10, max_batch_size=8)  # every row costs more than 10
    for i, ids in enumerate(rows):
        decoder.submit(i, ids)
    widths: list[int] = []
    while decoder.busy:
        decoder.step()
        widths.append(len(decoder._active))
    assert max(widths) == 1 and decoder.stats.prefills == len(rows)


def test_stop_strings_and_finish_reasons_equal_the_static_head(
    model_path: str, oracle: Oracle, prompts: list[str]
) -> None:
    rows = [oracle.ids(p) for p in prompts]
    full = [oracle.decode(oracle.generate(ids)) for ids in rows]
    # Two frequent 2-character pieces of the greedy outputs: stops that end some rows, at different places.
    counts: dict[str, int] = {}
    for text in full:
        for piece in {text[i : i + 2] for i in range(len(text) - 1)}:
            counts[piece] = counts.get(piece, 0) + 1
    ranked = sorted((c, s) for s, c in counts.items() if c <= len(full) * 0.4 and s.isascii() and s.strip())
    stops = (ranked[-1][1], ranked[-2][1])
    head = head_for(model_path, stop=stops)
    decoder = ContinuousDecoder(head, batch_tokens=100_000, max_batch_size=5)
    for i, ids in enumerate(rows):
        decoder.submit(i, ids)
    out = drain(decoder)
    got = [out[i].result for i in range(len(rows))]
    assert got == [oracle.details(ids, NEW, stops) for ids in rows] == static(head, rows)
    cut = [r for r, text in zip(got, full) if isinstance(r, tuple) and r[0] != text]
    assert len(cut) >= 4 and all(r[3] == "stop" for r in cut)
    assert {r[3] for r in got if isinstance(r, tuple)} == {"stop", "length"}
    assert decoder.stats.refills > 0


def test_empty_prompt_gives_the_static_heads_answer(tiny_causal_lm: str, gpt2_oracle: Oracle) -> None:
    oracle = gpt2_oracle
    head = head_for(tiny_causal_lm, max_new_tokens=4)
    decoder = ContinuousDecoder(head, batch_tokens=1000, max_batch_size=2)
    decoder.submit("empty", [])
    decoder.submit("text", oracle.ids("Return the", 4))
    assert decoder.busy
    out = drain(decoder)
    assert out["empty"] == Finished(("", 0, 0, "length"), steps=0, prefill_tokens=0)
    assert out["text"].result == oracle.details(oracle.ids("Return the", 4), 4)
    assert static(head, [[], oracle.ids("Return the", 4)])[0] == out["empty"].result


# ---------------------------------------------------------------------------------------------- padding


def test_padded_merged_and_trimmed_batch_gives_the_logits_of_unpadded_runs(
    model_path: str, oracle: Oracle, prompts: list[str]
) -> None:
    """Every way rows enter and leave the running batch, each followed by decode steps whose logits must be
    those of a forward of each row's whole sequence alone (no padding, no cache):

    prefill two prompts; append a wider one (the running rows padded on the left); drop it (the columns only
    it used are trimmed); put a new row in place of a row that left; put one wider than the batch in place
    of another (the batch widened first)."""
    import torch

    head = head_for(model_path)
    decoder = ContinuousDecoder(head, batch_tokens=100_000, max_batch_size=8)
    words = oracle.ids(prompts[2])
    short, middle, long, fresh, wide = words[:3], words[:20], words[-70:], words[30:40], words[-60:]
    assert len(long) == 70 and len(wide) == 60
    sequences: list[list[int]] = []  # per batch row: its whole sequence, the token in `last` included

    def check(rows: list[list[int]], logits: torch.Tensor) -> torch.Tensor:
        for seq, got in zip(rows, logits):
            alone = oracle.model(input_ids=torch.tensor([seq])).logits[0, -1]
            torch.testing.assert_close(got, alone, rtol=0, atol=1e-4)
        return logits.argmax(dim=-1)

    def prefill(*prompts: list[int]) -> tuple[Any, list[list[int]]]:
        piece, logits, _ = decoder._prefill([_Row(i, list(p), 0) for i, p in enumerate(prompts)])
        chosen = check(list(prompts), logits)
        piece.last = chosen[:, None]
        return piece, [[*p, t] for p, t in zip(prompts, chosen.tolist())]

    def decode(batch: Any, steps: int) -> None:
        for _ in range(steps):
            chosen = check(sequences, batch.decode(head.model, decoder._keep))
            batch.last = chosen[:, None]
            for seq, token in zip(sequences, chosen.tolist()):
                seq.append(token)

    with torch.inference_mode():
        batch, sequences = prefill(short, middle)
        assert batch.mask.tolist()[0] == [0] * (len(middle) - 3) + [1] * 3
        decode(batch, 3)
        piece, more = prefill(long)
        batch.extend(piece)  # the running rows are narrower: padded on the left
        sequences += more
        assert batch.mask.shape == (3, len(long)) and batch.cache.layers[0].keys.shape[2] == len(long)
        decode(batch, 2)
        batch.select([0, 1])  # drop the long row: the columns only it used go
        sequences = sequences[:2]
        assert batch.mask.shape[1] == len(sequences[1]) - 1 == batch.cache.layers[1].values.shape[2]
        decode(batch, 2)
        piece, more = prefill(fresh)
        for layer in batch.cache.layers:  # what a row leaves behind must not leak, even NaN
            layer.keys[0], layer.values[0] = float("nan"), float("nan")
        batch.place([0], piece, [0])  # where the short row was: narrower than the batch
        sequences[0] = more[0]
        assert batch.mask[0].tolist() == [0] * (batch.mask.shape[1] - len(fresh)) + [1] * len(fresh)
        decode(batch, 2)
        piece, more = prefill(short, wide)
        batch.place([1], piece, [1])  # where the middle row was: wider than the batch
        sequences[1] = more[1]
        assert batch.mask.shape[1] == len(wide)
        decode(batch, 3)


# ---------------------------------------------------------------------------------------------- sampling


def test_seeded_sampling_equals_the_static_head_whatever_the_admission_order(
    model_path: str, oracle: Oracle, prompts: list[str]
) -> None:
    options: dict[str, Any] = {"do_sample": True, "seed": 11, "temperature": 0.8, "top_k": 50, "top_p": 0.95}
    head = head_for(model_path, **options)
    rows = [oracle.ids(p) for p in prompts]
    expected = static(head, rows)
    for order_seed, size in ((1, 4), (2, 7)):
        order = list(range(len(rows)))
        random.Random(order_seed).shuffle(order)
        decoder = ContinuousDecoder(head, batch_tokens=100_000, max_batch_size=size)
        for i in order:
            decoder.submit(i, rows[i])
        out = drain(decoder)
        assert [out[i].result for i in range(len(rows))] == expected
        assert decoder.stats.refills > 0
    # It really sampled: most rows differ from greedy decoding.
    greedy = [oracle.details(ids) for ids in rows]
    assert sum(a != b for a, b in zip(expected, greedy)) > len(rows) * 0.6


# ---------------------------------------------------------------------------------------------- cancel


def test_cancel_drops_queued_and_active_rows(model_path: str, oracle: Oracle, prompts: list[str]) -> None:
    head = head_for(model_path)
    rows = [oracle.ids(p) for p in prompts]
    long_runs = [i for i, ids in enumerate(rows) if len(oracle.generate(ids)) == NEW]
    assert len(long_runs) >= 4
    decoder = ContinuousDecoder(head, batch_tokens=100_000, max_batch_size=4)
    order = [*long_runs[:4], *(i for i in range(len(rows)) if i not in long_runs[:4])]
    for i in order:
        decoder.submit(i, rows[i])
    first = dict(decoder.step())
    assert not first and {row.key for row in decoder._active} == set(long_runs[:4])
    gone = {long_runs[1], long_runs[2], order[-1], "unknown"}  # two active rows and a queued one
    decoder.cancel(gone)
    assert {row.key for row in decoder._active} == {long_runs[0], long_runs[3]}
    out = {**first, **drain(decoder)}
    assert set(out) == set(range(len(rows))) - gone
    assert all(out[i].result == oracle.details(rows[i]) for i in out)
    decoder.submit(long_runs[1], rows[long_runs[1]])  # a cancelled key may come again
    assert drain(decoder)[long_runs[1]].result == oracle.details(rows[long_runs[1]])


def test_keys_must_be_unique_and_the_model_causal(tiny_causal_lm: str, tiny_seq2seq: str) -> None:
    head = head_for(tiny_causal_lm)
    assert supports(head)
    decoder = ContinuousDecoder(head, batch_tokens=100, max_batch_size=2)
    decoder.submit("k", [5, 6])
    with pytest.raises(ValueError, match=r"key 'k' is already queued or active"):
        decoder.submit("k", [7])
    seq2seq = cache.get_model(ModelSpec(tiny_seq2seq, task="text2text", device="cpu"), device="cpu")[0].head
    assert isinstance(seq2seq, GenerationHead) and not supports(seq2seq)
    with pytest.raises(ValueError, match=r"needs a causal LM .*causal=False"):
        ContinuousDecoder(seq2seq, batch_tokens=100, max_batch_size=2)


# ---------------------------------------------------------------------------------------------- faults


def test_fail_on_token_fails_only_the_rows_holding_it(
    monkeypatch: pytest.MonkeyPatch, model_path: str, oracle: Oracle, prompts: list[str]
) -> None:
    rows = [oracle.ids(p) for p in prompts]
    # The smallest token id that 4 to 8 of the prompts hold.
    token = min(t for t in range(3, 512) if 4 <= sum(t in ids for ids in rows) <= 8)
    holding = {i for i, ids in enumerate(rows) if token in ids}
    monkeypatch.setenv(faults.ENV, f"fail_on_token={token}")
    decoder = ContinuousDecoder(head_for(model_path), batch_tokens=100_000, max_batch_size=8)
    for i, ids in enumerate(rows):
        decoder.submit(i, ids)
    out = drain(decoder)
    failed = {i for i, done in out.items() if isinstance(done.result, Exception)}
    assert failed == holding
    assert all(isinstance(out[i].result, ValueError) and "injected by SPARKINFER_FAULTS" in str(out[i].result)
               for i in failed)
    assert all(out[i].result == oracle.details(rows[i]) for i in set(out) - failed)
    assert decoder.stats.refills > 0


def test_oom_in_prefill_splits_and_outputs_stay_equal(
    monkeypatch: pytest.MonkeyPatch, model_path: str, oracle: Oracle, prompts: list[str]
) -> None:
    monkeypatch.setenv(faults.ENV, "oom_above_rows=2")
    rows = [oracle.ids(p) for p in prompts]
    decoder = ContinuousDecoder(head_for(model_path), batch_tokens=100_000, max_batch_size=8)
    for i, ids in enumerate(rows):
        decoder.submit(i, ids)
    out = drain(decoder)
    assert [out[i].result for i in range(len(rows))] == [oracle.details(ids) for ids in rows]
    assert decoder.stats.oom_splits >= 2 and decoder.batch_tokens < 100_000
    assert any(done.restarts for done in out.values())


def test_oom_in_a_decode_step_requeues_the_newest_half(
    tiny_causal_lm: str, gpt2_oracle: Oracle, prompts: list[str]
) -> None:
    """An out-of-memory raised inside the second block of a decode step (after the first grew its cache)."""
    import torch

    oracle = gpt2_oracle
    head = head_for(tiny_causal_lm)
    rows = [oracle.ids(p) for p in prompts]
    decoder = ContinuousDecoder(head, batch_tokens=100_000, max_batch_size=6)
    raised: list[int] = []

    def fail(module: Any, args: Any) -> None:
        hidden = args[0]
        if hidden.shape[1] == 1 and hidden.shape[0] > 3 and len(raised) < 3:
            raised.append(hidden.shape[0])
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")

    hook = head.model.transformer.h[1].register_forward_pre_hook(fail)
    try:
        for i, ids in enumerate(rows):
            decoder.submit(i, ids)
        out = drain(decoder)
    finally:
        hook.remove()
    assert raised and decoder.stats.oom_splits == len(raised)
    assert [out[i].result for i in range(len(rows))] == [oracle.details(ids) for ids in rows]
    assert any(done.restarts for done in out.values())


def test_a_single_row_that_does_not_fit_fails_alone(
    tiny_causal_lm: str, gpt2_oracle: Oracle, prompts: list[str]
) -> None:
    import torch

    from sparkinfer.errors import InferenceError

    oracle = gpt2_oracle
    head = head_for(tiny_causal_lm)
    rows = [oracle.ids(p) for p in prompts[:8]]
    too_long = 2
    target = torch.tensor(rows[too_long])

    def fail(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs["input_ids"]
        if ids.shape[1] >= len(target) and bool((ids[:, -len(target) :] == target).all(dim=1).any()):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")  # its prefill, alone or not

    decoder = ContinuousDecoder(head, batch_tokens=100_000, max_batch_size=3)
    hook = head.model.register_forward_pre_hook(fail, with_kwargs=True)
    try:
        for i, ids in enumerate(rows):
            decoder.submit(i, ids)
        out = drain(decoder)
    finally:
        hook.remove()
    error = out[too_long].result
    assert isinstance(error, InferenceError) and "does not fit in the memory of cpu, even alone" in str(error)
    assert all(out[i].result == oracle.details(rows[i]) for i in out if i != too_long)


def test_a_bad_fault_setting_propagates(monkeypatch: pytest.MonkeyPatch, tiny_causal_lm: str) -> None:
    from sparkinfer import SpecError

    monkeypatch.setenv(faults.ENV, "no_such_fault=1")
    decoder = ContinuousDecoder(head_for(tiny_causal_lm), batch_tokens=1000, max_batch_size=2)
    decoder.submit(0, [5, 6, 7])
    with pytest.raises(SpecError, match=r"SPARKINFER_FAULTS must hold name=value items"):
        decoder.step()
