"""The bad-input corpus: every task answers every case per row, as the row alone would be answered.

Each task runs the whole corpus as one Arrow array (so bad rows share micro-batches with good ones) under
``on_error="null"`` and ``"column"``. Expectations per case: null gives null; every other case gives exactly
what plain transformers / sentence-transformers give for that text alone (the oracles of the task tests),
and no row fails (``error`` is null, ``error_rows`` is 0). Invalid UTF-8, as a Parquet file written by
another engine can hold (Arrow does not validate strings on read), is read with U+FFFD replacements.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from sparkinfer import ModelSpec
from sparkinfer.engine import cache, run
from tests.unit.helpers import ClassifierOracle, SentenceTransformerOracle
from tests.unit.test_generation import GenerateOracle
from tests.unit.test_token_classification import PipelineOracle

SCRIPTS = [
    "Hello", "Bonjour", "Hallo", "Hola", "Olá", "Ciao", "Cześć", "Ahoj", "Merhaba", "Xin chào", "Halo",
    "Привет", "Здраво", "Γειά σου", "Բարեւ", "გამარჯობა", "שלום", "مرحبا", "سلام", "नमस्ते", "নমস্কার",
    "ਸਤ ਸ੍ਰੀ ਅਕਾਲ", "નમસ્તે", "ନମସ୍କାର", "வணக்கம்", "నమస్కారం", "ನಮಸ್ಕಾರ", "നമസ്കാരം", "ආයුබෝවන්",
    "สวัสดี", "ສະບາຍດີ", "မင်္ဂလာပါ", "សួស្តី", "你好", "こんにちは", "안녕하세요", "Сайн байна уу", "ᠰᠠᠶᠢᠨ",
    "བཀྲ་ཤིས་བདེ་ལེགས།", "ሰላም", "ᐊᐃᓐᖓᐃ", "Ꭳ-ᏏᏲ", "ⴰⵣⵓⵍ", "ߊߟߎ߫ ߓߊ߬ߙߊ߬ߞߊ߬", "ܫܠܡܐ", "ދިވެހި",
    "Aloha", "Jambo", "Sawubona", "Kia ora",
]
BAD_UTF8 = b"lone surrogate \xed\xa0\x80 and a broken \xc3 byte"

CORPUS: list[tuple[str, str | None]] = [
    ("null", None),
    ("empty", ""),
    ("space", " "),
    ("whitespace", " \t\n\r  \u00a0\u2003"),
    ("200k characters", "All work and no play makes Jack a dull boy. " * 4546),
    ("control characters", "bell\x07 escape\x1b[31m red\x1b[0m backspace\x08 form feed\x0c"),
    ("NUL", "before\x00after\x00"),
    ("invalid UTF-8", None),  # filled in from BAD_UTF8 by _array, expected as decoded with replacements
    ("right-to-left", "שלום עולם and مرحبا بالعالم mixed \u202eoverride\u202c"),
    ("combining marks", "e\u0301\u0308\u0323 a\u030a Z\u0335\u0336\u0337 n\u0303"),
    ("emoji", "👍🏽 🇺🇳 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️‍🔥"),
    ("50 scripts", " ".join(SCRIPTS)),
    ("CJK", "機械学習は楽しい。深度学习很有趣。"),
    ("BERT special tokens", "[CLS] [SEP] [PAD] [MASK] [UNK]"),
    ("other special tokens", "<s></s><pad><unk><mask><|endoftext|></s>"),
    ("numbers", "3.14159 -0 1e10 0x1F 1,234,567.89"),
    ("single character", "x"),
    ("punctuation only", "?!.,;:-_()[]{}<>/\\|@#$%^&*~`'\""),
    ("zero-width", "\u200b\u200c\u200d\ufeff"),
    ("ordinary", "Return the sum of a and b."),
]
EXPECTED_TEXT = BAD_UTF8.decode("utf-8", errors="replace")


def _array() -> pa.Array:
    """The corpus as one string array, with BAD_UTF8's bytes placed raw (as Parquet hands them over)."""
    values = [BAD_UTF8 if name == "invalid UTF-8" else (None if t is None else t.encode()) for name, t in CORPUS]
    binary = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), len(binary), binary.buffers())


def _texts() -> list[str | None]:
    return [EXPECTED_TEXT if name == "invalid UTF-8" else text for name, text in CORPUS]


@pytest.fixture(autouse=True, scope="module")
def empty_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


Check = Callable[[str, Any], None]


@pytest.fixture(scope="module")
def tasks(
    minilm_path: str, tiny_classifier: str, tiny_ner: str, tiny_causal_lm: str, tiny_seq2seq: str
) -> dict[str, tuple[ModelSpec, Check]]:
    """Per task: the spec, and a check of one row's output against the task's per-row oracle."""
    st = SentenceTransformerOracle(minilm_path)
    clf = ClassifierOracle(tiny_classifier)
    ner = PipelineOracle(tiny_ner, 64)
    lm = GenerateOracle(tiny_causal_lm, causal=True)
    t5 = GenerateOracle(tiny_seq2seq, causal=False)

    def embedding(text: str, got: Any) -> None:
        want = st(text)
        assert float(np.dot(np.asarray(got), want)) / np.linalg.norm(got) >= 0.9999

    def classification(text: str, got: Any) -> None:
        want = clf.scores(text, 64)
        assert got["score"] == pytest.approx(want.max(), abs=1e-5)
        assert want[clf.labels.index(got["label"])] >= want.max() - 1e-5

    def token_classification(text: str, got: Any) -> None:
        want = ner(text, "simple")
        assert [(e["entity"], e["word"], e["start"], e["end"]) for e in got] == [
            (e["entity_group"], e["word"], e["start"], e["end"]) for e in want
        ]
        assert [e["score"] for e in got] == pytest.approx([float(e["score"]) for e in want], abs=1e-5)

    def generation(text: str, got: Any) -> None:
        # A prompt of no tokens cannot be continued (generate needs one): its answer is defined as "".
        assert got == (lm.text(text, 8) if lm.ids(text, 8) else "")

    def text2text(text: str, got: Any) -> None:
        # The same rule for an encoder input of no tokens (the BPE tokenizer adds no special tokens).
        assert got == (t5.text(text, 8) if t5.ids(text, 8) else "")

    return {
        "embedding": (ModelSpec(minilm_path, task="embedding"), embedding),
        "classification": (ModelSpec(tiny_classifier, task="classification", max_length=64), classification),
        "token-classification": (ModelSpec(tiny_ner, task="token-classification", max_length=64),
                                 token_classification),
        "generation": (ModelSpec(tiny_causal_lm, task="generation", max_new_tokens=8), generation),
        "text2text": (ModelSpec(tiny_seq2seq, task="text2text", max_new_tokens=8), text2text),
    }


@pytest.mark.parametrize("on_error", ["null", "column"])
@pytest.mark.parametrize("task", ["embedding", "classification", "token-classification", "generation", "text2text"])
def test_every_task_answers_every_bad_input_per_row(
    tasks: dict[str, tuple[ModelSpec, Check]], task: str, on_error: str
) -> None:
    spec, check = tasks[task]
    out, metrics = run(spec.with_options(on_error=on_error, batch_tokens=2048), _array())
    assert metrics.error_rows == 0
    assert metrics.truncated_rows >= 1  # the 200k-character row at least
    for (name, _), text, row in zip(CORPUS, _texts(), out.to_pylist()):
        if text is None:
            assert row is None, name
            continue
        if on_error == "column":
            assert row is not None and row["error"] is None, (name, row)
            row = row["result"]
        assert row is not None, name
        try:
            check(text, row)
        except AssertionError as exc:
            raise AssertionError(f"{task}, case {name!r}: {exc}") from exc
