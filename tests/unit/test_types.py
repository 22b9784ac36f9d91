"""Arrow type → Spark DDL, checked against pyspark's own type objects (no SparkSession needed)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyspark.sql import types as T

from sparkinfer import ModelSpec
from sparkinfer.engine.tasks import get_task
from sparkinfer.spark.types import spark_ddl

LABEL_SCORE = T.StructType([T.StructField("label", T.StringType()), T.StructField("score", T.DoubleType())])


@pytest.mark.parametrize(
    ("arrow", "spark"),
    [
        (pa.string(), T.StringType()),
        (pa.large_string(), T.StringType()),
        (pa.float32(), T.FloatType()),
        (pa.float64(), T.DoubleType()),
        (pa.int32(), T.IntegerType()),
        (pa.int64(), T.LongType()),
        (pa.bool_(), T.BooleanType()),
        (pa.list_(pa.float32()), T.ArrayType(T.FloatType())),
        (pa.large_list(pa.float64()), T.ArrayType(T.DoubleType())),
        (pa.struct([("label", pa.string()), ("score", pa.float64())]), LABEL_SCORE),
        (pa.list_(pa.list_(pa.int64())), T.ArrayType(T.ArrayType(T.LongType()))),
        (pa.date32(), T.DateType()),
        (pa.timestamp("us", tz="UTC"), T.TimestampType()),
        (pa.map_(pa.string(), pa.int32()), T.MapType(T.StringType(), T.IntegerType())),
    ],
    ids=str,
)
def test_spark_ddl_matches_pyspark_simple_string(arrow: pa.DataType, spark: T.DataType) -> None:
    assert spark_ddl(arrow) == spark.simpleString()


@pytest.mark.parametrize(
    ("spec", "spark"),
    [
        (ModelSpec("m", task="embedding"), T.ArrayType(T.FloatType())),
        (ModelSpec("m", task="classification"), LABEL_SCORE),
        (
            ModelSpec("m", task="classification", return_all_scores=True),
            T.StructType([*LABEL_SCORE.fields, T.StructField("scores", T.ArrayType(LABEL_SCORE))]),
        ),
        (
            ModelSpec("m", task="classification", top_k=2),
            T.StructType([*LABEL_SCORE.fields, T.StructField("scores", T.ArrayType(LABEL_SCORE))]),
        ),
        (
            ModelSpec("m", task="extraction", schema="name string, born date, tags array<int>"),
            T.StructType([
                T.StructField("value", T.StructType.fromJson({"type": "struct", "fields": [
                    {"name": "name", "type": "string", "nullable": True, "metadata": {}},
                    {"name": "born", "type": "date", "nullable": True, "metadata": {}},
                    {"name": "tags", "type": {"type": "array", "elementType": "integer", "containsNull": True},
                     "nullable": True, "metadata": {}},
                ]})),
                T.StructField("status", T.StringType()), T.StructField("raw", T.StringType()),
            ]),
        ),
    ],
    ids=["embedding", "classification", "return_all_scores", "top_k", "extraction"],
)
def test_task_return_types(spec: ModelSpec, spark: T.DataType) -> None:
    assert spark_ddl(get_task(spec.task).arrow_type(spec)) == spark.simpleString()


@pytest.mark.parametrize("arrow", [pa.binary(), pa.timestamp("ns"), pa.decimal128(10, 2)], ids=str)
def test_unsupported_arrow_type_raises(arrow: pa.DataType) -> None:
    with pytest.raises(TypeError, match="no Spark type"):
        spark_ddl(arrow)
