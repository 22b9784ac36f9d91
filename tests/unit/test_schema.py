"""Extraction schemas: DDL, StructType, pydantic and JSON Schema meet in one canonical JSON Schema and Arrow type."""

from __future__ import annotations

import datetime as dt
import enum
import json
from typing import Any, Literal, Optional

import pyarrow as pa
import pydantic
import pytest

from sparkinfer.errors import SpecError
from sparkinfer.schema import parse_value, to_json_schema, value_type

INT32 = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}


def canonical(schema: object) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(to_json_schema(schema))
    return result


# ---------------------------------------------------------------------------------------------- DDL


@pytest.mark.parametrize(
    ("ddl", "arrow"),
    [
        ("string", pa.string()),
        ("varchar(5)", pa.string()),
        ("char(3)", pa.string()),
        ("boolean", pa.bool_()),
        ("tinyint", pa.int32()),
        ("byte", pa.int32()),
        ("smallint", pa.int32()),
        ("short", pa.int32()),
        ("int", pa.int32()),
        ("integer", pa.int32()),
        ("bigint", pa.int64()),
        ("long", pa.int64()),
        ("float", pa.float32()),
        ("real", pa.float32()),
        ("double", pa.float64()),
        ("date", pa.date32()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("timestamp_ltz", pa.timestamp("us", tz="UTC")),
        ("timestamp_ntz", pa.timestamp("us", tz="UTC")),
        ("array<string>", pa.list_(pa.string())),
        ("array<array<bigint>>", pa.list_(pa.list_(pa.int64()))),
        ("struct<x: double, y boolean>", pa.struct([("x", pa.float64()), ("y", pa.bool_())])),
        ("map<string,int>", pa.map_(pa.string(), pa.int32())),
        ("MAP<STRING, ARRAY<DATE>>", pa.map_(pa.string(), pa.list_(pa.date32()))),
    ],
)
def test_each_ddl_type_maps_to_its_arrow_type(ddl: str, arrow: pa.DataType) -> None:
    assert value_type(to_json_schema(f"v {ddl}")) == pa.struct([("v", arrow)])


def test_ddl_round_trip_to_the_expected_struct() -> None:
    schema = to_json_schema(
        "a int, b bigint, c array<string>, d struct<x: double, y: boolean>, e date, f timestamp, g map<string,int>"
    )
    assert value_type(schema) == pa.struct(
        [
            ("a", pa.int32()),
            ("b", pa.int64()),
            ("c", pa.list_(pa.string())),
            ("d", pa.struct([("x", pa.float64()), ("y", pa.bool_())])),
            ("e", pa.date32()),
            ("f", pa.timestamp("us", tz="UTC")),
            ("g", pa.map_(pa.string(), pa.int32())),
        ]
    )


def test_ddl_json_schema_is_the_documented_mapping() -> None:
    schema = canonical(
        "name string NOT NULL, t tinyint not null, s smallint NOT NULL, v varchar(5) NOT NULL, "
        "f float NOT NULL, tags array<int> NOT NULL, m map<string, double> NOT NULL, born date, "
        "seen timestamp NOT NULL, big bigint NOT NULL"
    )
    props = schema["properties"]
    assert props["name"] == {"type": "string"}
    assert props["t"] == {"type": "integer", "format": "int32", "minimum": -128, "maximum": 127}
    assert props["s"] == {"type": "integer", "format": "int32", "minimum": -32768, "maximum": 32767}
    assert props["v"] == {"type": "string", "maxLength": 5}
    assert props["f"] == {"type": "number", "format": "float"}
    assert props["tags"] == {"type": "array", "items": INT32}  # DDL array elements are not nullable
    assert props["m"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["born"] == {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]}  # nullable
    assert props["seen"] == {"type": "string", "format": "date-time"}
    assert props["big"] == {"type": "integer", "format": "int64", "minimum": -(2**63), "maximum": 2**63 - 1}
    assert schema["required"] == list(props)  # every field present, the nullable ones may be null
    assert schema["additionalProperties"] is False


def test_ddl_names_keywords_comments_and_nesting() -> None:
    schema = canonical(
        "`first name` STRING COMMENT 'the given name', `a``b` Int Not Null, "
        "s STRUCT<inner: struct<z int NOT NULL COMMENT \"deep\">, `q`: string>"
    )
    assert list(schema["properties"]) == ["first name", "a`b", "s"]
    assert schema["properties"]["a`b"] == INT32
    inner = schema["properties"]["s"]["anyOf"][0]["properties"]["inner"]["anyOf"][0]
    assert inner["properties"] == {"z": INT32}
    assert inner["additionalProperties"] is False


@pytest.mark.parametrize("ddl", ["d decimal(10,2)", "b binary", "i interval day", "v variant", "x uuid"])
def test_unsupported_ddl_types_raise_naming_the_type(ddl: str) -> None:
    name = ddl.split()[1].split("(")[0]
    with pytest.raises(SpecError, match=rf"Spark type '{name}' .* not supported.*supported types: string"):
        to_json_schema(ddl)


@pytest.mark.parametrize(
    ("ddl", "message"),
    [
        ("a int,", "expected a field name"),
        ("a array<int", "expected '>'"),
        ("a", "expected a type"),
        ("a int NOT", "expected 'NULL'"),
        ("a int COMMENT 3", "quoted comment"),
        ("a int b string", "expected ',' or the end"),
        ("a struct<>", "expected a field name"),
        ("a varchar(n)", "the length n of varchar"),
        ("a int; drop", "expected a name, a type"),
        ("a int, a string", "field names must be unique"),
        ("m map<int, string>", "keys must be strings"),
    ],
)
def test_malformed_ddl_raises(ddl: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        to_json_schema(ddl)


# ---------------------------------------------------------------------------------------------- StructType

DDL = (
    "name string, age int NOT NULL, tags array<string>, addr struct<city: string, zip: string NOT NULL>, "
    "m map<string,bigint>"
)
SPARK_JSON = {
    "type": "struct",
    "fields": [
        {"name": "name", "type": "string", "nullable": True, "metadata": {}},
        {"name": "age", "type": "integer", "nullable": False, "metadata": {}},
        {
            "name": "tags",
            "type": {"type": "array", "elementType": "string", "containsNull": False},
            "nullable": True,
            "metadata": {},
        },
        {
            "name": "addr",
            "type": {
                "type": "struct",
                "fields": [
                    {"name": "city", "type": "string", "nullable": True, "metadata": {}},
                    {"name": "zip", "type": "string", "nullable": False, "metadata": {}},
                ],
            },
            "nullable": True,
            "metadata": {},
        },
        {
            "name": "m",
            "type": {"type": "map", "keyType": "string", "valueType": "long", "valueContainsNull": False},
            "nullable": True,
            "metadata": {},
        },
    ],
}


class FakeStructType:
    """Duck-typed like pyspark's StructType: only ``jsonValue()``."""

    def jsonValue(self) -> dict[str, Any]:  # pyspark's spelling
        return SPARK_JSON


@pytest.mark.parametrize("form", [SPARK_JSON, json.dumps(SPARK_JSON), FakeStructType()], ids=["dict", "text", "obj"])
def test_struct_type_json_equals_the_ddl_form(form: object) -> None:
    assert to_json_schema(form) == to_json_schema(DDL)


def test_real_pyspark_struct_type_equals_the_ddl_form() -> None:
    T = pytest.importorskip("pyspark.sql.types")
    struct = T.StructType(
        [
            T.StructField("name", T.StringType()),
            T.StructField("age", T.IntegerType(), nullable=False),
            T.StructField("tags", T.ArrayType(T.StringType(), containsNull=False)),
            T.StructField(
                "addr",
                T.StructType([T.StructField("city", T.StringType()), T.StructField("zip", T.StringType(), False)]),
            ),
            T.StructField("m", T.MapType(T.StringType(), T.LongType(), valueContainsNull=False)),
        ]
    )
    assert to_json_schema(struct) == to_json_schema(DDL)
    nullable_items = T.StructType([T.StructField("v", T.ArrayType(T.ShortType()), False)])
    assert canonical(nullable_items)["properties"]["v"]["items"] == {
        "anyOf": [{"type": "integer", "format": "int32", "minimum": -32768, "maximum": 32767}, {"type": "null"}]
    }
    with pytest.raises(SpecError, match="Spark type 'decimal'"):
        to_json_schema(T.StructType([T.StructField("d", T.DecimalType(10, 2))]))


# ---------------------------------------------------------------------------------------------- pydantic


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(pydantic.BaseModel):
    city: str
    zip: Optional[str] = None


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(description="the full name", examples=["Ada"])
    age: int = pydantic.Field(ge=0, le=120)
    nickname: Optional[str] = None
    kind: Literal["human", "robot"]
    color: Color = Color.RED
    scores: list[int] = pydantic.Field(max_length=3)
    home: Address
    work: Optional[Address] = None
    born: dt.date


def test_pydantic_model_is_inlined_and_maps_to_arrow() -> None:
    text = to_json_schema(Person)
    for gone in ("$ref", "$defs", "title", "description", "default", "examples"):
        assert gone not in text
    schema = json.loads(text)
    props = schema["properties"]
    assert list(props) == ["name", "age", "nickname", "kind", "color", "scores", "home", "work", "born"]
    assert props["age"] == {"type": "integer", "minimum": 0, "maximum": 120}
    assert props["kind"] == {"type": "string", "enum": ["human", "robot"]}
    assert props["color"] == {"type": "string", "enum": ["red", "green"]}
    assert props["scores"] == {"type": "array", "items": {"type": "integer"}, "maxItems": 3}
    assert props["nickname"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    address = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "zip": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
        "required": ["city"],
        "additionalProperties": False,
    }
    assert props["home"] == address
    assert props["work"] == {"anyOf": [address, {"type": "null"}]}
    assert schema["required"] == ["name", "age", "kind", "scores", "home", "born"]  # as pydantic gives it
    address_type = pa.struct([("city", pa.string()), ("zip", pa.string())])
    assert value_type(text) == pa.struct(
        [
            ("name", pa.string()),
            ("age", pa.int64()),
            ("nickname", pa.string()),
            ("kind", pa.string()),
            ("color", pa.string()),
            ("scores", pa.list_(pa.int64())),
            ("home", address_type),
            ("work", address_type),
            ("born", pa.date32()),
        ]
    )


class Node(pydantic.BaseModel):
    name: str
    children: list[Node] = []


def test_recursive_pydantic_model_raises() -> None:
    with pytest.raises(SpecError, match="recursive"):
        to_json_schema(Node)


# ---------------------------------------------------------------------------------------------- JSON Schema


def test_json_schema_keeps_property_order_and_is_idempotent() -> None:
    schema = {
        "type": "object",
        "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}, "mid": {"enum": ["a", "b"]}},
        "required": ["zeta"],
    }
    text = to_json_schema(schema)
    assert text.index('"zeta"') < text.index('"alpha"') < text.index('"mid"')
    assert json.loads(text)["properties"]["mid"] == {"type": "string", "enum": ["a", "b"]}  # type inferred
    assert to_json_schema(text) == text == to_json_schema(json.dumps(schema, indent=2))
    for form in (DDL, Person, SPARK_JSON):
        once = to_json_schema(form)
        assert to_json_schema(once) == once
    assert list(value_type(text).names) == ["zeta", "alpha", "mid"]


def test_equivalent_forms_give_the_same_text() -> None:
    shuffled = {
        "additionalProperties": False,
        "required": ["a", "b"],
        "properties": {
            "a": {"maximum": 2**31 - 1, "minimum": -(2**31), "format": "int32", "type": "integer", "title": "A"},
            "b": {"anyOf": [{"items": {"type": "string"}, "type": "array"}, {"type": "null"}]},
        },
        "title": "Row",
        "type": "object",
    }
    assert to_json_schema(shuffled) == to_json_schema("a int NOT NULL, b array<string>")
    assert to_json_schema({"type": "object", "properties": {"é": {"type": "string"}}}) == (
        '{"type":"object","properties":{"é":{"type":"string"}},"required":[],"additionalProperties":false}'
    )


def test_json_schema_nullable_forms_and_formats() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": ["integer", "null"], "format": "int32"},
            "b": {"anyOf": [{"type": "null"}, {"type": "number", "format": "float"}], "title": "B"},
            "c": {"type": "string", "format": "uuid"},
            "d": {"type": "object", "additionalProperties": {"type": "boolean"}},
            "e": {"const": "fixed"},
        },
    }
    props = canonical(schema)["properties"]
    assert props["a"] == {"anyOf": [{"type": "integer", "format": "int32"}, {"type": "null"}]}
    assert props["b"] == {"anyOf": [{"type": "number", "format": "float"}, {"type": "null"}]}
    assert value_type(to_json_schema(schema)) == pa.struct(
        [
            ("a", pa.int32()),
            ("b", pa.float32()),
            ("c", pa.string()),
            ("d", pa.map_(pa.string(), pa.bool_())),
            ("e", pa.string()),
        ]
    )


def obj(prop: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"tags": prop}}


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (obj({"type": "array", "items": {"type": "string"}, "uniqueItems": True}), r"'uniqueItems' at \$\.tags"),
        (obj({"not": {"type": "string"}}), r"'not' at \$\.tags is not supported"),
        (obj({"oneOf": [{"type": "string"}]}), r"'oneOf' at \$\.tags is not supported"),
        (obj({"type": "object", "patternProperties": {"^a": {}}}), r"'patternProperties' at \$\.tags"),
        (obj({"type": "array", "items": {"type": "string", "format": "uri"}}), r"'format' at \$\.tags\[\*\]"),
        (obj({"enum": ["a", 1]}), "must all be strings, all numbers or all booleans"),
        (obj({"type": "integer", "enum": ["a"]}), "must be of type 'integer'"),
        (obj({"type": "string", "format": "uri"}), "'format' at .* must be one of"),
        (obj({"type": "integer", "format": "float"}), "'format' at .* must be one of"),
        (obj({"type": "integer", "minLength": 2}), "'minLength' at .* does not apply to type 'integer'"),
        (obj({"type": "string", "maxLength": -1}), "a non-negative integer"),
        (obj({"type": "number", "multipleOf": 0}), "a number above 0"),
        (obj({"type": "string", "pattern": "("}), "a valid regular expression"),
        (obj({"anyOf": [{"type": "string"}, {"type": "integer"}]}), "only as the nullable form"),
        (obj({"type": ["string", "integer"]}), "one type and 'null'"),
        (obj({"type": "null"}), "type at .* must be one of"),
        (obj({"minimum": 1}), "type at .* must be one of"),
        (obj({"type": "object"}), "needs non-empty \"properties\""),
        ({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": True}, "must be false"),
        ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}, "required at"),
        ({"type": "string"}, "top level must be an object with properties"),
        ({"type": "object", "additionalProperties": {"type": "string"}}, "top level must be an object"),
        ({"$ref": "#/definitions/X"}, "must point into the schema's own \\$defs"),
        ("{not json", "not JSON"),
        (42, "a schema must be Spark DDL text"),
    ],
)
def test_unsupported_json_schema_raises(schema: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        to_json_schema(schema)


def test_unsupported_keyword_message_lists_the_supported_ones() -> None:
    with pytest.raises(SpecError) as info:
        to_json_schema(obj({"type": "array", "items": {"type": "string"}, "uniqueItems": True}))
    assert "supported keywords: type, format, enum" in str(info.value)


# ---------------------------------------------------------------------------------------------- parse_value

SCHEMA = to_json_schema(
    "name string, age tinyint, ok boolean, born date, seen timestamp, tags array<string>, "
    "addr struct<city: string, zip: string>, counts map<string, int>, score double"
)


def test_parse_value_converts_for_arrow() -> None:
    value = parse_value(
        '{"name": "Ada", "age": 36, "ok": false, "born": "1815-12-10", "seen": "2024-05-01T12:30:00.5+02:00", '
        '"tags": ["x", "y"], "addr": {"city": "London", "zip": null}, "counts": {"a": 1, "b": 2}, "score": 3}',
        SCHEMA,
    )
    assert value == {
        "name": "Ada",
        "age": 36,
        "ok": False,
        "born": dt.date(1815, 12, 10),
        "seen": dt.datetime(2024, 5, 1, 10, 30, 0, 500000, tzinfo=dt.timezone.utc),
        "tags": ["x", "y"],
        "addr": {"city": "London", "zip": None},
        "counts": [("a", 1), ("b", 2)],
        "score": 3.0,
    }
    assert type(value["age"]) is int and type(value["ok"]) is bool and type(value["score"]) is float
    assert value["seen"].tzinfo is dt.timezone.utc  # converted, not only equal as an instant
    array = pa.array([value], type=value_type(SCHEMA))
    assert array.type == value_type(SCHEMA)
    assert array.to_pylist()[0]["counts"] == [("a", 1), ("b", 2)]
    assert array.to_pylist()[0]["seen"] == value["seen"]


def test_parse_value_fills_missing_optional_properties_with_none() -> None:
    schema = to_json_schema(Person)
    value = parse_value(
        '{"name": "R2", "age": 40, "kind": "robot", "scores": [1, 2.0], "home": {"city": "Naboo"}, '
        '"born": "1977-05-25"}',
        schema,
    )
    assert value["nickname"] is None and value["color"] is None and value["work"] is None
    assert value["home"] == {"city": "Naboo", "zip": None}
    assert value["scores"] == [1, 2] and all(type(s) is int for s in value["scores"])
    assert pa.array([value], type=value_type(schema)).to_pylist() == [value]


def test_parse_value_takes_a_trailing_z_as_utc() -> None:
    schema = to_json_schema("t timestamp")
    assert parse_value('{"t": "2024-01-02T03:04:05Z"}', schema)["t"] == dt.datetime(
        2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc
    )


FULL = (
    '{"name": "Ada", "age": 36, "ok": true, "born": "1815-12-10", "seen": "2024-05-01T12:30:00Z", '
    '"tags": [], "addr": null, "counts": {}, "score": 1.5}'
)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"age": 200}, r"at \$\.age: 200 is greater than the maximum of 127"),
        ({"born": "2024-13-40"}, r"at \$\.born: '2024-13-40' is not a 'date'"),
        ({"ok": "yes"}, r"at \$\.ok: 'yes' is not of type 'boolean'"),
        ({"tags": [1]}, r"at \$\.tags\[0\]"),
        ({"extra": 1}, "Additional properties are not allowed"),
        ({"seen": "2024-05-01T12:30:00"}, r"\$\.seen is not an RFC 3339 date-time"),
        ({"seen": "2024-02-30T12:30:00Z"}, r"\$\.seen is not an RFC 3339 date-time: day is out of range"),
    ],
)
def test_parse_value_rejects_invalid_values(change: dict[str, Any], message: str) -> None:
    value = parse_value(FULL, SCHEMA)  # the base document is valid
    assert value["addr"] is None
    with pytest.raises(ValueError, match=message):
        parse_value(json.dumps({**json.loads(FULL), **change}), SCHEMA)


def test_parse_value_rejects_a_missing_required_property() -> None:
    document = json.loads(FULL)
    del document["score"]
    with pytest.raises(ValueError, match="'score' is a required property"):
        parse_value(json.dumps(document), SCHEMA)


def test_parse_value_rejects_bad_json_and_enum_violations() -> None:
    with pytest.raises(ValueError, match="generated text is not JSON"):
        parse_value('{"name": "Ada"', SCHEMA)
    with pytest.raises(ValueError, match="generated text is not JSON"):
        parse_value("", SCHEMA)
    schema = to_json_schema(Person)
    good = {"name": "x", "age": 1, "kind": "human", "scores": [], "home": {"city": "c"}, "born": "2000-01-01"}
    assert parse_value(json.dumps(good), schema)["kind"] == "human"
    with pytest.raises(ValueError, match=r"at \$\.kind: 'alien' is not one of \['human', 'robot'\]"):
        parse_value(json.dumps({**good, "kind": "alien"}), schema)
    with pytest.raises(ValueError, match=r"at \$\.age: -1 is less than the minimum of 0"):
        parse_value(json.dumps({**good, "age": -1}), schema)


def test_parse_value_enforces_the_arrow_integer_width() -> None:
    schema = to_json_schema({"type": "object", "properties": {"i": {"type": "integer", "format": "int32"},
                                                               "j": {"type": "integer"}}})
    assert parse_value('{"i": 2147483647, "j": 9223372036854775807}', schema) == {"i": 2**31 - 1, "j": 2**63 - 1}
    with pytest.raises(ValueError, match=r"\$\.i is out of the int32 range"):
        parse_value('{"i": 2147483648}', schema)
    with pytest.raises(ValueError, match=r"\$\.j is out of the int64 range"):
        parse_value('{"j": 9223372036854775808}', schema)
