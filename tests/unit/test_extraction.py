"""Typed extraction and constrained generation (issue 14), engine only: statuses, validity, batch parity.

The model is a tiny random-weight GPT-2, so only the grammar can make its outputs valid JSON. Every "ok"
row is checked against the schema with jsonschema; batch parity is checked against each row constrained
alone (its own `run`, one row per micro-batch, no padding).
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pyarrow as pa
import pytest

from sparkinfer.engine import run
from sparkinfer.engine.tasks import extraction
from sparkinfer.errors import SpecError
from sparkinfer.schema import parse_value
from sparkinfer.spec import ModelSpec

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "member": {"type": "boolean"},
        "color": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 10}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"],
        },
        "nickname": {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "null"}]},
    },
    "required": ["name", "age", "member", "color", "tags", "address", "nickname"],
}
NEW_TOKENS = 160


@pytest.fixture(scope="module")
def prompts(docs: list[str]) -> list[str | None]:
    """Docstring prompts of mixed lengths (20 to 300 characters), a null and an empty one."""
    texts: list[str | None] = [t[: 20 + (i * 37) % 280] for i, t in enumerate(docs[:40])]
    return [*texts[:20], None, "", *texts[20:]]


def _spec(model: str, **options: Any) -> ModelSpec:
    return ModelSpec(model, task="extraction", schema=SCHEMA, device="cpu", max_new_tokens=NEW_TOKENS, **options)


def test_ok_rows_validate_and_almost_every_row_is_ok(tiny_extraction_lm: str, prompts: list[str | None]) -> None:
    out, metrics = run(_spec(tiny_extraction_lm), pa.array(prompts))
    rows = out.to_pylist()
    assert rows[20] is None and all(r is not None for i, r in enumerate(rows) if i != 20)
    answered = [r for r in rows if r is not None]
    ok = [r for r in answered if r["status"] == "ok"]
    for r in ok:
        document = json.loads(r["raw"])
        jsonschema.validate(document, SCHEMA)
        assert r["value"] == {**document, "address": document["address"]}, r
        assert isinstance(r["value"]["age"], int) and isinstance(r["value"]["member"], bool)
    assert len(ok) >= 0.95 * len(answered), [r for r in answered if r["status"] != "ok"]
    # The outputs tell rows apart: the model is random, but each prompt leads it elsewhere.
    assert len({r["raw"] for r in ok}) >= len(ok) // 2
    # Compact JSON: no whitespace outside strings.
    assert all(not re.search(r'[\s](?=(?:[^"]*"[^"]*")*[^"]*$)', r["raw"]) for r in ok)
    assert metrics.constrained_rows == len(answered)
    assert metrics.truncated_outputs == sum(r["status"] == "truncated" for r in answered)
    assert metrics.invalid_outputs == sum(r["status"] == "invalid" for r in answered)
    assert 0 < metrics.mask_seconds < metrics.forward_seconds


def test_too_few_new_tokens_give_truncated_rows(tiny_extraction_lm: str, prompts: list[str | None]) -> None:
    out, metrics = run(_spec(tiny_extraction_lm).with_options(max_new_tokens=3), pa.array(prompts))
    answered = [r for r in out.to_pylist() if r is not None]
    assert {r["status"] for r in answered} == {"truncated"}
    assert all(r["value"] is None and r["raw"].startswith('{"') for r in answered), answered[:3]
    assert metrics.truncated_outputs == metrics.constrained_rows == len(answered)


@pytest.mark.parametrize(
    "options",
    [{}, {"do_sample": True, "seed": 7, "temperature": 1.5}, {"chat": True, "system_prompt": "Answer in JSON."}],
    ids=["greedy", "sampled", "chat"],
)
def test_each_row_decodes_as_it_does_alone(
    tiny_extraction_lm: str, prompts: list[str | None], options: dict[str, Any]
) -> None:
    """Left padding, mixed prompt lengths, several micro-batches: each row's output is its output alone."""
    spec = _spec(tiny_extraction_lm, batch_tokens=2048, **options)
    texts = [t for t in prompts if t]
    together, _ = run(spec, pa.array(texts))
    alone = [run(spec, pa.array([t]))[0].to_pylist()[0] for t in texts]
    assert together.to_pylist() == alone
    assert len({r["raw"] for r in alone}) > len(alone) // 2


def test_a_ddl_schema_gives_its_types(tiny_extraction_lm: str, prompts: list[str | None]) -> None:
    ddl = "name string, age int, score double, member boolean, tags array<string>, place struct<city: string>"
    spec = ModelSpec(tiny_extraction_lm, task="extraction", schema=ddl, device="cpu", max_new_tokens=NEW_TOKENS)
    expected = pa.struct([
        ("name", pa.string()), ("age", pa.int32()), ("score", pa.float64()), ("member", pa.bool_()),
        ("tags", pa.list_(pa.string())), ("place", pa.struct([("city", pa.string())])),
    ])
    out, _ = run(spec, pa.array([t for t in prompts if t][:8]))
    assert out.type.field("value").type == expected
    for row in out.to_pylist():
        if row["status"] == "ok":
            value = row["value"]
            assert value["age"] is None or type(value["age"]) is int
            assert value["member"] is None or type(value["member"]) is bool
            assert json.loads(row["raw"])["age"] == value["age"]


def test_post_processing_failures_are_answered_per_row(
    tiny_extraction_lm: str, prompts: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row whose parsing raises a ValueError is "invalid"; any other exception fails that row alone."""
    texts = [t for t in prompts if t][:12]
    reference = [r["raw"] for r in run(_spec(tiny_extraction_lm), pa.array(texts))[0].to_pylist()]
    invalid, broken = reference[1], reference[4]
    real = parse_value

    def parse(raw: str, schema: str) -> Any:
        if raw == invalid:
            raise ValueError("rejected by the test")
        if raw == broken:
            raise RuntimeError("a bug in post-processing")
        return real(raw, schema)

    monkeypatch.setattr(extraction, "parse_value", parse)
    out, metrics = run(_spec(tiny_extraction_lm, on_error="column"), pa.array(texts))
    rows = out.to_pylist()
    assert rows[1]["result"]["status"] == "invalid" and rows[1]["result"]["value"] is None
    assert rows[4]["result"] is None and "a bug in post-processing" in rows[4]["error"]
    assert metrics.error_rows == 1 and metrics.invalid_outputs >= 1
    others = [i for i in range(len(texts)) if reference[i] not in (invalid, broken)]
    assert all(rows[i]["error"] is None and rows[i]["result"]["raw"] == reference[i] for i in others)


def test_choices_and_regex_constrain_generation(tiny_causal_lm: str, prompts: list[str | None]) -> None:
    texts = [t for t in prompts if t][:16]
    choices = ("red", "green", "blue sky")
    spec = ModelSpec(tiny_causal_lm, task="generation", choices=choices, device="cpu", max_new_tokens=8)
    chosen = run(spec, pa.array(texts))[0].to_pylist()
    assert set(chosen) <= set(choices) and len(set(chosen)) >= 2, chosen
    pattern = r"[0-9]{3}-[a-z]{2,4}"
    matched, metrics = run(spec.with_options(choices=(), regex=pattern, max_new_tokens=12), pa.array(texts))
    assert all(re.fullmatch(pattern, m) for m in matched.to_pylist()), matched
    assert metrics.constrained_rows == len(texts) and metrics.truncated_outputs == 0
    # Cut off before the pattern completes: null, counted, with finish_reason "length" in the details.
    cut, metrics = run(spec.with_options(choices=(), regex=pattern, max_new_tokens=2, return_details=True),
                       pa.array(texts))
    assert all(r["text"] is None and r["finish_reason"] == "length" for r in cut.to_pylist())
    assert metrics.truncated_outputs == len(texts)


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}}},
         "uniqueItems"),
        ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not"),
        ("a decimal(10,2)", "decimal"),
    ],
)
def test_an_unsupported_schema_is_a_spec_error_naming_it(tiny_extraction_lm: str, schema: Any, named: str) -> None:
    with pytest.raises(SpecError, match=named):
        ModelSpec(tiny_extraction_lm, task="extraction", schema=schema)


def test_options_that_break_a_grammar_are_refused(tiny_causal_lm: str) -> None:
    with pytest.raises(SpecError, match="stop would cut a constrained output"):
        ModelSpec(tiny_causal_lm, task="generation", choices=("a", "b"), stop=("\n",))
    with pytest.raises(SpecError, match="schema is required"):
        ModelSpec(tiny_causal_lm, task="extraction")
    with pytest.raises(SpecError, match="choices and regex exclude"):
        ModelSpec(tiny_causal_lm, task="generation", choices=("a",), regex="b")
    with pytest.raises(SpecError, match="applies to task"):
        ModelSpec(tiny_causal_lm, task="extraction", schema="a string", stop=("x",))
