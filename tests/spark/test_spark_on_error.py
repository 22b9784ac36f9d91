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
from sparkinfer.engine import run as engine_run

pytestmark = pytest.mark.spark

POISON = "zebra"


def test_column_mode_through_spark_reports_the_guilty_rows_only(
    spark: Any, varied_classifier: str, docs: list[str]
) -> None:
    from transformers import AutoTokenizer

    (token,) = AutoTokenizer.from_pretrained(varied_classifier)(POISON, add_special_tokens=False)["input_ids"]
    texts = [None if i % 11 == 4 else (f"{docs[i][:60]} {POISON}" if i % 7 == 0 else docs[i]) for i in range(70)]
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id int, text string").repartition(2)
    spec = si.ModelSpec(varied_classifier, task="classification", max_length=64, on_error="column")
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
    clean, _ = engine_run(spec.with_options(on_error="raise"), pa.array(texts, pa.string()))
    for i, want in enumerate(clean.to_pylist()):
        got = rows[i]
        if texts[i] is None:
            assert got is None
        elif POISON in texts[i]:
            assert got["result"] is None and "injected by SPARKINFER_FAULTS" in got["error"]
        else:
            assert got["error"] is None
            assert got["result"]["label"] == want["label"]
            assert got["result"]["score"] == pytest.approx(want["score"], abs=1e-5)
