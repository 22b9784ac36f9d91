"""si.classify_tokens on Spark against transformers' token-classification pipeline run on each row alone.

Two jobs, one UDF each (two UDFs in one select would start two Python workers per task): "first" through
the Arrow UDF, then "simple" through the pandas UDF that PySpark < 4.1 gets (simulated here), which must
carry array<struct> rows too.
"""

from __future__ import annotations

from typing import Any

import pytest

import sparkinfer as si
import sparkinfer.spark.udf as udf_module
from tests.spark.helpers import ON_CPU
from tests.unit.test_token_classification import MAX_LENGTH, TEXTS, PipelineOracle, assert_rows_match, expected_rows

pytestmark = pytest.mark.spark

STRATEGIES = ("first", "simple")  # the Arrow path's, the pandas path's


@pytest.fixture(scope="module")
def texts(docs: list[str]) -> list[str | None]:
    """The unit tier's tricky texts (accents, punctuation, [UNK], truncation, empty, nulls) and 40 docstrings."""
    return [*TEXTS, *docs[:40]]


@pytest.fixture(scope="module")
def expected(tiny_ner: str, texts: list[str | None]) -> dict[str, list[Any]]:
    """The oracle's rows per strategy, computed before any Spark job starts."""
    oracle = PipelineOracle(tiny_ner, MAX_LENGTH)
    return {strategy: expected_rows(oracle, texts, strategy) for strategy in STRATEGIES}


@pytest.fixture(scope="module")
def collected(
    spark: Any, tiny_ner: str, texts: list[str | None], expected: dict[str, list[Any]]
) -> dict[str, tuple[Any, list[Any]]]:
    """strategy → (schema, rows by id) of its job, over two partitions (Arrow batches of 16 rows)."""
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id int, text string").repartition(2, "id")

    def job(strategy: str) -> tuple[Any, list[Any]]:
        column = si.classify_tokens("text", tiny_ner, aggregation_strategy=strategy, max_length=MAX_LENGTH, **ON_CPU)
        out = df.select("id", column.alias("entities"))
        return out.schema, sorted(out.collect(), key=lambda row: row.id)

    arrow = job(STRATEGIES[0])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(udf_module, "_HAS_ARROW_UDF", False)  # read when the Column is built
        pandas = job(STRATEGIES[1])
    return {STRATEGIES[0]: arrow, STRATEGIES[1]: pandas}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_entities_equal_the_pipeline_on_each_row(
    collected: dict[str, tuple[Any, list[Any]]], texts: list[str | None], expected: dict[str, list[Any]], strategy: str
) -> None:
    _, rows = collected[strategy]
    assert [row.id for row in rows] == list(range(len(texts)))
    got = [None if row.entities is None else [e.asDict() for e in row.entities] for row in rows]
    assert sum(len(r) for r in got if r) > len(texts)  # the rows really hold entities
    assert_rows_match(got, expected[strategy], texts)


def test_spark_schema(collected: dict[str, tuple[Any, list[Any]]]) -> None:
    for schema, _ in collected.values():
        assert schema["entities"].dataType.simpleString() == (
            "array<struct<entity:string,word:string,score:double,start:int,end:int>>"
        )


def test_options_of_another_task_fail_on_the_driver(tiny_ner: str) -> None:
    with pytest.raises(si.SpecError, match=r"ModelSpec.pooling applies to task 'embedding'"):
        si.classify_tokens("text", tiny_ner, pooling="mean")
    with pytest.raises(si.SpecError, match=r"aggregation_strategy must be one of"):
        si.classify_tokens("text", tiny_ner, aggregation_strategy="longest")
