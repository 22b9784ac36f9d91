"""Rows with identical token ids are computed once per task, and each still gets its own right answer.

The oracle is the per-row reference of each task (sentence-transformers, transformers' pipeline) and, for
what batching must not change, the engine's own run over the distinct rows alone: the duplicated run must
form the same micro-batches (same padded tokens) and give bit-identical outputs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

from sparkinfer import ModelSpec
from sparkinfer.engine import Metrics, faults, run, run_stream
from tests.unit.helpers import (
    ClassifierOracle,
    SentenceTransformerOracle,
    assert_classification_matches,
    assert_embeddings_match,
)


def _repeated(texts: list[str], seed: int) -> list[str | None]:
    """Each text one to three times, with nulls, shuffled: duplicates far apart and side by side."""
    rng = random.Random(seed)
    rows: list[str | None] = [t for t in texts for _ in range(rng.randint(1, 3))] + [None] * 3
    rng.shuffle(rows)
    return rows


def _stream(spec: ModelSpec, texts: list[str | None], rows_per_batch: int) -> tuple[list[Any], list[Metrics]]:
    batches = [pa.array(texts[i : i + rows_per_batch], pa.string()) for i in range(0, len(texts), rows_per_batch)]
    seen: list[Metrics] = []
    out = [v for array in run_stream(spec, batches, on_metrics=seen.append) for v in array.to_pylist()]
    return out, seen


def test_repeats_in_a_chunk_run_once_and_equal_the_oracle(
    minilm_path: str, minilm_oracle: SentenceTransformerOracle, docs: list[str]
) -> None:
    distinct = [d[:300] for d in docs[:40]]
    assert len(set(distinct)) == len(distinct)
    texts = _repeated(distinct, seed=1)
    spec = ModelSpec(minilm_path, task="embedding", batch_tokens=1024, device="cpu")
    out, metrics = run(spec, pa.array(texts, pa.string()))
    assert_embeddings_match(out, texts, minilm_oracle)
    assert metrics.duplicate_rows == len(texts) - 3 - len(distinct) > 20
    assert metrics.rows == len(texts) and metrics.null_rows == 3
    # What is computed is the distinct rows' run exactly: the same micro-batches, bit for bit the same vectors.
    in_order = list(dict.fromkeys(t for t in texts if t is not None))  # as the chunk meets them
    alone, once = run(spec, pa.array(in_order, pa.string()))
    assert (metrics.padded_tokens, metrics.micro_batches) == (once.padded_tokens, once.micro_batches)
    assert metrics.real_tokens - metrics.duplicate_tokens == once.real_tokens
    assert metrics.padding_efficiency == pytest.approx(once.padding_efficiency)
    vectors = dict(zip(in_order, alone.to_pylist()))
    assert all(row == vectors[text] for text, row in zip(texts, out.to_pylist()) if text is not None)


def test_a_later_chunks_repeats_are_answered_without_a_forward_pass(
    tiny_classifier: str, classifier_oracle: Callable[[str], ClassifierOracle], docs: list[str]
) -> None:
    first, second = [d[:200] for d in docs[:8]], [d[:200] for d in docs[8:16]]
    spec = ModelSpec(tiny_classifier, task="classification", max_length=64, buffer_rows=8)
    # Chunks of 8 rows: the first, then the same 8 in another order, then 8 new ones, then the second again.
    texts: list[str | None] = [*first, *reversed(first), *second, *second[::-1]]
    out, chunks = _stream(spec, texts, 8)
    assert_classification_matches(pa.array(out), texts, classifier_oracle(tiny_classifier), max_length=64)
    assert [m.duplicate_rows for m in chunks] == [0, 8, 0, 8]
    assert [m.micro_batches > 0 for m in chunks] == [True, False, True, False]
    assert chunks[1].padded_tokens == chunks[3].padded_tokens == 0
    assert chunks[1].duplicate_tokens == chunks[0].real_tokens


def test_a_task_remembers_as_many_distinct_rows_as_one_chunk(tiny_classifier: str, docs: list[str]) -> None:
    """Outputs kept for later chunks are bounded by buffer_rows: the oldest distinct rows are forgotten."""
    a, b = [d[:100] for d in docs[:4]], [d[:100] for d in docs[4:8]]
    spec = ModelSpec(tiny_classifier, task="classification", max_length=64, buffer_rows=4)
    _, chunks = _stream(spec, [*a, *b, *b, *a], 4)
    assert [m.duplicate_rows for m in chunks] == [0, 0, 4, 0]  # a was pushed out by b
    _, chunks = _stream(spec, [*a, *a[:2], *b[:2], *a[:2], *b[:2]], 4)
    assert [m.duplicate_rows for m in chunks] == [0, 2, 4]  # a row used again is kept: a[2:] went, a[:2] stayed


def test_an_uncased_tokenizer_shares_a_forward_pass_but_each_row_keeps_its_own_offsets(tiny_ner: str) -> None:
    """"Paris" and "paris" (and a second space) have the same ids under MiniLM's uncased WordPiece, but not
    the same words and offsets: each row's entities must be the pipeline's for that row's own text."""
    import transformers

    base = ["Angela Merkel visited Zürich and São Paulo in 2019.",
            "Dr. O'Neill-Smith flew from Reykjavík to Kraków."]
    texts = [variant for text in base for variant in (text, text.lower(), text.replace(" ", "   "), text)]
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_ner)
    assert len({tuple(tokenizer(t)["input_ids"]) for t in texts}) == len(base)
    pipe = transformers.pipeline("token-classification", model=tiny_ner, device="cpu")
    spec = ModelSpec(tiny_ner, task="token-classification", aggregation_strategy="simple", max_length=64)
    out, metrics = run(spec, pa.array(texts, pa.string()))
    assert metrics.duplicate_rows == len(texts) - len(base)
    expected = [[(e["entity_group"], e["word"], e["start"], e["end"], float(e["score"]))
                 for e in pipe(t, aggregation_strategy="simple")] for t in texts]
    got = [[(e["entity"], e["word"], e["start"], e["end"], e["score"]) for e in row] for row in out.to_pylist()]
    assert sum(len(row) for row in expected) >= len(texts)  # the random model finds entities to place
    assert expected[0] != expected[2]  # the offsets really differ between duplicates
    for row, want in zip(got, expected):
        assert [e[:4] for e in row] == [e[:4] for e in want]
        assert [e[4] for e in row] == pytest.approx([e[4] for e in want], abs=1e-5)


def test_identical_prompts_sample_once_and_draw_what_they_draw_alone(tiny_causal_lm: str, docs: list[str]) -> None:
    """A row's sampling seed comes from the spec's seed and its prompt's tokens, so equal prompts draw equal
    samples whether computed or fanned out; a run over the distinct prompts alone is the reference."""
    prompts = [d[:60] for d in docs[:12]]
    texts = _repeated(prompts, seed=2)
    spec = ModelSpec(tiny_causal_lm, task="generation", max_new_tokens=10, do_sample=True, seed=7, top_k=50)
    out, metrics = run(spec, pa.array(texts, pa.string()))
    assert metrics.duplicate_rows == len(texts) - 3 - len(prompts) > 5
    alone, _ = run(spec, pa.array(prompts, pa.string()))
    samples = dict(zip(prompts, alone.to_pylist()))
    assert len(set(samples.values())) > len(prompts) // 2  # the samples tell the prompts apart
    assert out.to_pylist() == [None if t is None else samples[t] for t in texts]


def test_every_copy_of_a_failing_row_gets_its_error_in_every_chunk(
    tiny_classifier: str, docs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed row's output is not remembered: its repeats fail too, here and in later chunks."""
    from transformers import AutoTokenizer

    poison = "zebra"
    ids = AutoTokenizer.from_pretrained(tiny_classifier)(poison, add_special_tokens=False)["input_ids"]
    monkeypatch.setenv(faults.ENV, f"fail_on_token={ids[0]}")
    bad, good = f"{docs[0][:80]} {poison}", docs[1][:80]
    texts: list[str | None] = [bad, good, bad, good, good, bad, None, bad]
    spec = ModelSpec(tiny_classifier, task="classification", max_length=64, buffer_rows=4, on_error="column")
    out, chunks = _stream(spec, texts, 4)
    assert [row is not None and row["error"] is not None for row in out] == [t == bad for t in texts]
    assert all(row["error"].startswith("ValueError: injected by") for row, t in zip(out, texts) if t == bad)
    assert [m.error_rows for m in chunks] == [2, 2]
    # The second chunk: its good row from the first chunk's, its second bad row from its first (failing) one.
    assert [m.duplicate_rows for m in chunks] == [2, 2]
    results = [row["result"] for row, t in zip(out, texts) if t == good]
    assert len(results) == 3 and results[0] == results[1] == results[2] is not None
