"""on_error="column" through Spark: struct<result, error> per row, only the guilty rows fail.

The guilty rows hold a poison token; ``SPARKINFER_FAULTS=fail_on_token=ID`` in the environment Spark starts
its Python workers with makes any micro-batch holding it raise (see ``sparkinfer/engine/faults.py``).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

import sparkinfer as si
from sparkinfer.engine import faults
from tests.spark.helpers import single_torch_thread
from tests.unit.helpers import ClassifierOracle, assert_classification_matches

pytestmark = pytest.mark.spark

POISON = "zebra"


def test_column_mode_through_spark_reports_the_guilty_rows_only(
    spark: Any, tiny_classifier: str, docs: list[str]
) -> None:
    from transformers import AutoTokenizer

    (token,) = AutoTokenizer.from_pretrained(tiny_classifier)(POISON, add_special_tokens=False)["input_ids"]
    texts = [None if i % 11 == 4 else (f"{docs[i][:60]} {POISON}" if i % 7 == 0 else docs[i]) for i in range(70)]
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id int, text string").repartition(2)
    spec = si.ModelSpec(tiny_classifier, task="classification", max_length=64, on_error="column")
    environment = spark.sparkContext.environment
    environment[faults.ENV] = f"fail_on_token={token}"
    try:
        column = si.classify("text", spec)  # the UDF is wrapped with the environment of this moment
        rows = {r["id"]: r["pred"] for r in df.select("id", column.alias("pred")).collect()}
    finally:
        del environment[faults.ENV]

    assert df.select(si.classify("text", spec).alias("p")).schema["p"].dataType.simpleString() == (
        "struct<result:struct<label:string,score:double>,error:string>"
    )
    guilty = {i for i, text in enumerate(texts) if text is not None and POISON in text}
    for i, text in enumerate(texts):
        got = rows[i]
        if text is None:
            assert got is None, i
        elif i in guilty:
            assert got["result"] is None and "injected by SPARKINFER_FAULTS" in got["error"], i
        else:
            assert got["error"] is None, (i, got["error"])
    # The other rows: what transformers gives each text alone (a guilty row's result is null).
    expected = [None if i in guilty else text for i, text in enumerate(texts)]
    results = pa.array([None if text is None else rows[i]["result"].asDict() for i, text in enumerate(expected)])
    with single_torch_thread():
        assert_classification_matches(results, expected, ClassifierOracle(tiny_classifier), max_length=64)
