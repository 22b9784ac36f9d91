"""si.extract and constrained si.generate through Spark: types, values, batch parity, SQL, nulls.

The reference is the engine on each row alone (tests/unit/test_extraction.py checks that it equals the
engine's batched output and that its "ok" rows validate); here Spark must give the same values whatever
its Arrow batch size, in the schema's Spark types.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import sparkinfer as si
from sparkinfer.engine import run
from sparkinfer.spec import ModelSpec
from tests.spark.helpers import NULL_IDS, ON_CPU, rows_by_id

pytestmark = pytest.mark.spark

# Bounded strings: a random model writes a string until its maxLength (varchar's n) or max_new_tokens.
DDL = ("name varchar(12), age int, member boolean, tags array<varchar(6)>, place struct<city: varchar(10), "
       "zip: varchar(5)>, seen date")
SPARK_DDL = DDL.replace("varchar(12)", "string").replace("varchar(10)", "string").replace("varchar(6)", "string") \
    .replace("varchar(5)", "string")  # varchar(n) comes out string, its n kept as maxLength
OPTIONS = {"max_new_tokens": 200, **ON_CPU}
SUBSET = "id % 25 = 0 OR text IS NULL"  # 24 docstrings and the null texts


@pytest.fixture(scope="module", params=[16, 10000], ids=lambda n: f"maxRecordsPerBatch={n}")
def extracted(
    request: pytest.FixtureRequest,
    docs_df: Any,
    tiny_extraction_lm: str,
    sql_conf: Callable[[str, str], AbstractContextManager[None]],
) -> tuple[Any, dict[int, Any]]:
    """(the output schema, id → the extracted value as plain data) of one Spark job."""
    frame = docs_df.where(SUBSET).select("id", "text", si.extract("text", tiny_extraction_lm, DDL, **OPTIONS).alias("x"))
    with sql_conf("spark.sql.execution.arrow.maxRecordsPerBatch", str(request.param)):
        return frame.schema, {i: None if r.x is None else r.x.asDict(recursive=True)
                              for i, r in rows_by_id(frame.collect()).items()}


@pytest.fixture(scope="module")
def alone(docs_df: Any, tiny_extraction_lm: str) -> dict[int, Any]:
    """id → the engine's output for that row alone."""
    spec = ModelSpec(tiny_extraction_lm, task="extraction", schema=DDL, **OPTIONS)
    texts = {r.id: r.text for r in docs_df.where(SUBSET).select("id", "text").collect()}
    return {i: None if t is None else run(spec, pa.array([t]))[0].to_pylist()[0] for i, t in texts.items()}


def test_the_column_has_the_schemas_spark_type(extracted: tuple[Any, dict[int, Any]], spark: Any) -> None:
    schema, _ = extracted
    value = schema["x"].dataType["value"].dataType
    assert value.simpleString() == spark.createDataFrame([], SPARK_DDL).schema.simpleString()
    assert [f.name for f in schema["x"].dataType.fields] == ["value", "status", "raw"]


def test_values_equal_each_row_alone_whatever_the_arrow_batch(
    extracted: tuple[Any, dict[int, Any]], alone: dict[int, Any]
) -> None:
    _, got = extracted
    assert set(got) == set(alone) and all(got[i] is None for i in NULL_IDS)
    assert got == alone
    statuses = [r["status"] for r in got.values() if r is not None]
    assert statuses.count("ok") >= 0.9 * len(statuses), statuses
    for row in got.values():
        if row is not None and row["status"] == "ok":
            value = row["value"]
            assert {type(value[k]) for k in ("age", "member", "tags")} <= {int, bool, list, type(None)}
            assert value["age"] is None or type(value["age"]) is int
            assert value["member"] is None or type(value["member"]) is bool


def test_sql_function_and_constrained_generate(
    spark: Any, docs_df: Any, tiny_extraction_lm: str, alone: dict[int, Any]
) -> None:
    si.register(spark, "extract_person", tiny_extraction_lm, task="extraction", schema=DDL, **OPTIONS)
    docs_df.where(SUBSET).createOrReplaceTempView("extract_docs")
    rows = spark.sql("SELECT id, x.value.age AS age, x.status AS status FROM "
                     "(SELECT id, extract_person(text) AS x FROM extract_docs)").collect()
    assert len(rows) == 24 + len(NULL_IDS)
    for r in rows:
        want = alone[r.id]
        assert (r.status, r.age) == ((None, None) if want is None else (want["status"], (want["value"] or {}).get("age")))
    choices = ["alpha", "beta", "gamma delta"]
    chosen = docs_df.where(SUBSET).select(
        "id", si.generate("text", tiny_extraction_lm, choices=choices, max_new_tokens=8, **ON_CPU).alias("c")
    ).collect()
    assert {r.c for r in chosen if r.id not in NULL_IDS} <= set(choices)
    assert all(r.c is None for r in chosen if r.id in NULL_IDS)


def test_the_job_extracts_into_delta_resumes_and_fingerprints_the_schema(
    spark: Any, docs: list[str], tiny_extraction_lm: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import deltalake
    import pyarrow.parquet as pq

    from sparkinfer.spark.job import main

    titles = [f"doc {i}" for i in range(30)]
    pq.write_table(pa.table({"id": list(range(30)), "title": titles, "text": [d[:200] for d in docs[:30]]}),
                   tmp_path / "in.parquet")
    schema_file = tmp_path / "schema.json"  # the DDL's JSON Schema, as --schema FILE.json reads it
    schema_file.write_text(str(ModelSpec(tiny_extraction_lm, task="extraction", schema=DDL).schema))
    output, report = str(tmp_path / "out"), tmp_path / "report.json"
    command = ["--input", str(tmp_path / "in.parquet"), "--output", output, "--model", tiny_extraction_lm,
               "--task", "extraction", "--schema", str(schema_file), "--prompt-template", "Extract {title}: {text}",
               "--key", "id", "--max-new-tokens", "64", "--device", "cpu", "--delta-engine", "delta-rs",
               "--report", str(report)]
    assert main(command) == 0
    table = deltalake.DeltaTable(output).to_pyarrow_table().sort_by("id")
    value = table.schema.field("prediction").type.field("value").type
    assert [(f.name, f.type) for f in value][:3] == [("name", pa.string()), ("age", pa.int32()), ("member", pa.bool_())]
    assert value.field("seen").type == pa.date32()
    spec = ModelSpec(tiny_extraction_lm, task="extraction", schema=DDL, max_new_tokens=64, device="cpu")
    prompts = [f"Extract {t}: {d[:200]}" for t, d in zip(titles, docs)]
    want = run(spec, pa.array(prompts))[0]
    assert table.column("prediction").combine_chunks().to_pylist() == want.to_pylist()
    written = json.loads(report.read_text())
    statuses = [r["status"] for r in want.to_pylist()]
    assert written["statuses"] == {s: statuses.count(s) for s in ("ok", "truncated", "invalid")}
    assert 0 < written["mask_share"] < 1
    version = deltalake.DeltaTable(output).version()
    # Rerun: every key is done, nothing is committed.
    assert main(command) == 0 and deltalake.DeltaTable(output).version() == version
    assert json.loads(report.read_text())["rows_skipped"] == 30
    # Another schema is another fingerprint: refused, as --on-model-change says by default.
    capsys.readouterr()
    changed = [*command[: command.index("--schema") + 1], "name string, age bigint",
               *command[command.index("--schema") + 2 :]]
    assert main(changed) == 2  # found before any Spark job (spark/preflight.py): a user error
    assert "another model fingerprint" in capsys.readouterr().err
