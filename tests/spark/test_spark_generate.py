"""si.generate / si.prompt on Spark against plain ``model.generate`` on each row alone (no Spark, no batch).

Two Spark jobs carry every check, to keep the tier fast: the same 60 prompts with maxRecordsPerBatch 7 and
then 50, in opposite row orders, each computing greedy generation (vs the per-row oracle), seeded sampling
(equal between the two jobs), and in the first job text2text and a multi-column `si.prompt` with nulls.
A third, small job runs ``sparkinfer run``'s options (--prompt-template, --stop) end to end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sparkinfer as si
from sparkinfer.spark.job import parse_args, run
from tests.spark.helpers import ON_CPU, single_torch_thread
from tests.unit.test_generation import GenerateOracle

pytestmark = pytest.mark.spark

NEW = 12
SAMPLING: dict[str, Any] = {"do_sample": True, "seed": 5, "temperature": 0.9, "top_p": 0.95, "max_new_tokens": NEW}


@pytest.fixture(scope="module")
def table(docs: list[str]) -> list[dict[str, Any]]:
    """60 rows: id, a prompt of 1 to ~140 words (some beyond the 116-token prompt limit), title and body."""
    words = [w for doc in docs for w in doc.split()]
    sizes = [1, 140, 2, 70, 3, *(1 + (i * 37) % 97 for i in range(55))]
    rows = []
    for i, n in enumerate(sizes):
        text = " ".join(words[(i * 173) % 5000 :][:n])
        title = None if i % 10 == 3 else " ".join(words[i * 7 : i * 7 + 3])
        rows.append({"id": i, "text": text, "title": title, "body": text[:80], "n": i})
    return rows


@pytest.fixture(scope="module")
def oracles(tiny_causal_lm: str, tiny_seq2seq: str, table: list[dict[str, Any]]) -> dict[str, dict[int, Any]]:
    """Per-row oracles, computed before any Spark job (idle Python workers would time out meanwhile)."""
    causal = GenerateOracle(tiny_causal_lm, causal=True)
    seq2seq = GenerateOracle(tiny_seq2seq, causal=False)
    with single_torch_thread():
        prompted = {
            r["id"]: None if r["title"] is None else causal.text(f"Title: {r['title']} {{{r['n']}}}\n{r['body']}", NEW)
            for r in table
        }
        return {
            "greedy": {r["id"]: causal.text(r["text"], NEW) for r in table},
            "t2t": {r["id"]: seq2seq.text(r["text"], NEW) for r in table},
            "prompted": prompted,
        }


@pytest.fixture(scope="module")
def generated(
    spark: Any, sql_conf: Any, tiny_causal_lm: str, tiny_seq2seq: str, table: list[dict[str, Any]],
    oracles: dict[str, dict[int, Any]],
) -> list[dict[int, Any]]:
    """id → Row of the two jobs: maxRecordsPerBatch 7 in id order, then 50 in reverse id order.

    One partition each (one Python worker: torch is imported once), and different engine chunking
    (``buffer_rows``, ``batch_tokens``) between the jobs, which must not change any output.
    """
    schema = "id long, text string, title string, body string, n int"
    prompt = si.prompt("Title: {title} {{{n}}}\n{body}")
    runs = []
    for batch, rows, engine in (("7", table, {"buffer_rows": 16, "batch_tokens": 300}),
                                ("50", table[::-1], {"buffer_rows": 4096, "batch_tokens": 2000})):
        df = spark.createDataFrame(rows, schema).coalesce(1)
        columns = [
            si.generate("text", tiny_causal_lm, max_new_tokens=NEW, **engine, **ON_CPU).alias("greedy"),
            si.generate("text", tiny_causal_lm, **SAMPLING, **engine, **ON_CPU).alias("sampled"),
        ]
        if batch == "7":
            columns += [
                si.generate("text", tiny_seq2seq, task="text2text", max_new_tokens=NEW, **ON_CPU).alias("t2t"),
                si.generate(prompt, tiny_causal_lm, max_new_tokens=NEW, return_details=True, **ON_CPU)
                .alias("prompted"),
            ]
        with sql_conf("spark.sql.execution.arrow.maxRecordsPerBatch", batch):
            collected = df.select("id", *columns).collect()
        assert [row.id for row in collected] == [r["id"] for r in rows]
        runs.append({row.id: row for row in collected})
    return runs


def test_greedy_generation_equals_per_row_generate(
    generated: list[dict[int, Any]], oracles: dict[str, dict[int, Any]]
) -> None:
    for rows in generated:
        assert len(rows) == 60
        assert {i: row.greedy for i, row in rows.items()} == oracles["greedy"]


def test_sampling_is_identical_across_batch_sizes_and_row_order(
    generated: list[dict[int, Any]], oracles: dict[str, dict[int, Any]]
) -> None:
    first, second = ({i: row.sampled for i, row in rows.items()} for rows in generated)
    assert first == second
    assert sum(first[i] != oracles["greedy"][i] for i in first) > 40  # it sampled, it did not decode greedily


def test_text2text_equals_per_row_generate(generated: list[dict[int, Any]], oracles: dict[str, dict[int, Any]]) -> None:
    assert {i: row.t2t for i, row in generated[0].items()} == oracles["t2t"]


def test_prompt_template_over_columns_with_a_null(
    generated: list[dict[int, Any]], oracles: dict[str, dict[int, Any]]
) -> None:
    rows = generated[0]
    texts = {i: None if row.prompted is None else row.prompted.text for i, row in rows.items()}
    assert texts == oracles["prompted"]
    assert sum(t is None for t in texts.values()) == 6  # the null titles
    finish = {row.prompted.finish_reason for row in rows.values() if row.prompted is not None}
    assert finish == {"stop", "length"}


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("Summarize {}", r"placeholders must name a column, like \{title\} \(got \{\}"),
        ("Summarize {0}", r"got \{0\}"),
        ("Summarize {body:>10}", r"got \{body:>10\}"),
        ("Summarize {body!r}", r"got \{body!r\}"),
        ("Summarize {body", r"template is malformed"),
        ("Summarize body }", r"template is malformed"),
        ("no placeholder {{here}}", r"must name at least one column"),
    ],
)
def test_invalid_prompt_templates_raise_spec_error(template: str, message: str) -> None:
    with pytest.raises(si.SpecError, match=message):
        si.prompt(template)


def test_generate_refuses_other_tasks(tiny_causal_lm: str) -> None:
    with pytest.raises(si.SpecError, match=r"generate's task must be one of \('generation', 'text2text'\)"):
        si.generate("text", tiny_causal_lm, task="embedding")


def test_job_with_prompt_template_and_stop_strings(
    spark: Any, tiny_causal_lm: str, table: list[dict[str, Any]], tmp_path: Path
) -> None:
    source = tmp_path / "in.parquet"
    rows = table[:8]
    pq.write_table(pa.Table.from_pylist(rows), source)
    job, _ = parse_args([
        "--input", str(source), "--output", str(tmp_path / "out"), "--format", "parquet", "--model", tiny_causal_lm,
        "--task", "generation", "--device", "cpu", "--prompt-template", "{title}: {body}", "--max-new-tokens", "8",
        "--stop", "e", "--stop", "a,b", "--return-details",
    ])
    assert job.spec.stop == ("e", "a,b") and job.sources == ("title", "body")
    report = run(spark, job)
    assert report.rows_out == 8
    out = {r["id"]: r for r in pq.read_table(tmp_path / "out").to_pylist()}
    assert "_sparkinfer_prompt" not in out[0]
    oracle = GenerateOracle(tiny_causal_lm, causal=True)
    with single_torch_thread():
        for row in rows:
            prompt = f"{row['title']}: {row['body']}"
            expected = None if row["title"] is None else oracle.details(prompt, 8, ("e", "a,b"))
            assert out[row["id"]]["prediction"] == expected
