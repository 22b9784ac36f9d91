"""Extraction schemas: every form a user gives, one canonical JSON Schema, and the Arrow type it yields.

A schema comes as Spark DDL (``"name string, age int NOT NULL"``), a pyspark ``StructType`` (or its
``jsonValue()`` dict, or its ``json()`` text), a pydantic v2 model class, or a JSON Schema (dict or text).
`to_json_schema` turns each into one canonical JSON Schema text: the grammar that generation follows, the
schema that `parse_value` validates against, and the source of `value_type`, the Arrow type of the value.

Spark type → JSON Schema → Arrow (the one mapping, read both ways)::

    Spark (DDL / StructType)        JSON Schema                                        Arrow
    string                          {"type": "string"}                                 string
    varchar(n), char(n)             {"type": "string", "maxLength": n}                 string
    boolean                         {"type": "boolean"}                                bool
    tinyint, smallint, int          {"type": "integer", "format": "int32",             int32
                                     "minimum": <width's>, "maximum": <width's>}
    bigint                          {"type": "integer", "format": "int64",             int64
                                     "minimum": -2**63, "maximum": 2**63 - 1}
    float                           {"type": "number", "format": "float"}              float32
    double                          {"type": "number"}                                 float64
    date                            {"type": "string", "format": "date"}               date32
    timestamp (_ltz, _ntz)          {"type": "string", "format": "date-time"}          timestamp("us", tz="UTC")
    array<T>                        {"type": "array", "items": T}                      list_(T)
    struct<a: T, ...>               {"type": "object", "properties": {"a": T, ...}}    struct(a: T, ...)
    map<string, T>                  {"type": "object", "additionalProperties": T}      map_(string, T)
    a nullable field / element      {"anyOf": [T, {"type": "null"}]}                   T (Arrow fields are nullable)

Read right to left, the table is the way back (Arrow → Spark is the Spark layer's). DDL array elements and map
values are not nullable; a StructType's are where ``containsNull``/``valueContainsNull`` say so.

Also: an integer without format int32 is int64; ``format`` time, email and uuid stay strings; an ``enum`` or
``const`` takes its values' type. "DDL in → the same DDL out" holds for string, boolean, int, bigint, float,
double, date, timestamp, array, struct and map; tinyint and smallint come out as int (JSON Schema has no
narrower integer; their bounds are kept), varchar(n)/char(n) as string (maxLength is kept), and
timestamp_ntz as timestamp (a generated date-time carries its offset and is stored in UTC).

Canonical form: the top level is an object with ``properties``; every object with properties is closed
(``"additionalProperties": false``); DDL and StructType fields are all ``required`` (present), and the
nullable ones may be null; ``$ref`` into ``$defs`` is inlined; the annotations title, description, default
and examples are dropped (they constrain nothing); keys come in one fixed order, properties in field order.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import re
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from sparkinfer._optional import require
from sparkinfer.errors import SpecError

JsonSchema = dict[str, Any]


def _integer(fmt: str, bits: int) -> JsonSchema:
    return {"type": "integer", "format": fmt, "minimum": -(2 ** (bits - 1)), "maximum": 2 ** (bits - 1) - 1}


_ATOMIC: dict[str, JsonSchema] = {
    "string": {"type": "string"}, "boolean": {"type": "boolean"},
    "tinyint": _integer("int32", 8), "smallint": _integer("int32", 16), "int": _integer("int32", 32),
    "bigint": _integer("int64", 64),
    "float": {"type": "number", "format": "float"}, "double": {"type": "number"},
    "date": {"type": "string", "format": "date"}, "timestamp": {"type": "string", "format": "date-time"},
}
_ALIASES = {"byte": "tinyint", "short": "smallint", "integer": "int", "long": "bigint", "real": "float",
            "timestamp_ltz": "timestamp", "timestamp_ntz": "timestamp"}
DDL_TYPES: tuple[str, ...] = (*_ATOMIC, *_ALIASES, "varchar(n)", "char(n)", "array<T>", "struct<name: T, ...>",
                              "map<string, T>")
"""The Spark type spellings a schema may use (case-insensitive); decimal, binary, interval and variant are not."""

# The supported keywords, in the order canonical schemas write them; then which of them apply to each type.
_KEYWORDS = ("type", "format", "enum", "const", "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum",
             "multipleOf", "minLength", "maxLength", "pattern", "items", "minItems", "maxItems", "properties",
             "required", "additionalProperties", "anyOf")
_ANNOTATIONS = frozenset({"title", "description", "default", "examples"})
_BOUNDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "multipleOf")
_NUMERIC = (*_BOUNDS, "format")
_BY_TYPE: dict[str, tuple[str, ...]] = {
    "string": ("minLength", "maxLength", "pattern", "format"),
    "integer": _NUMERIC,
    "number": _NUMERIC,
    "boolean": (),
    "array": ("items", "minItems", "maxItems"),
    "object": ("properties", "required", "additionalProperties"),
}
_FORMATS = {"string": ("date", "date-time", "time", "email", "uuid"), "integer": ("int32", "int64"),
            "number": ("float",)}
_INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_NULL: JsonSchema = {"type": "null"}


def to_json_schema(schema: object) -> str:
    """Turn any accepted schema form into the canonical JSON Schema text (see the module docstring).

    Args:
        schema: Spark DDL text, JSON Schema text (starting with ``{``) or dict, a pyspark ``StructType`` (or
            its ``jsonValue()`` dict), or a pydantic v2 model class.

    Returns:
        Compact JSON text; its property order is the struct's field order and the generation order.

    Raises:
        SpecError: If the form is not one of those, or the schema uses what the mapping cannot express.
    """
    if isinstance(schema, str):
        raw: object = _json(schema) if schema.lstrip().startswith("{") else _Ddl(schema).parse(struct=True)
    elif callable(getattr(schema, "jsonValue", None)):
        raw = _from_spark(schema.jsonValue())  # type: ignore[attr-defined]
    elif callable(getattr(schema, "model_json_schema", None)):
        raw = schema.model_json_schema()  # type: ignore[attr-defined]
    elif isinstance(schema, dict):
        raw = schema
    else:
        raise SpecError(
            "a schema must be Spark DDL text ('name string, age int'), a JSON Schema dict or text, a pyspark "
            f"StructType or a pydantic model class (got {type(schema).__name__} {schema!r})"
        )
    if isinstance(raw, dict) and raw.get("type") == "struct" and "fields" in raw:
        raw = _from_spark(raw)
    canonical = _canon(_inline_refs(raw) if isinstance(raw, dict) else raw, "$")
    if "properties" not in canonical:
        raise SpecError(
            f"a schema's top level must be an object with properties, one per field of the result struct (got "
            f"{json.dumps(canonical)}); wrap it: {{\"type\": \"object\", \"properties\": {{\"value\": ...}}}}"
        )
    return json.dumps(canonical, separators=(",", ":"), ensure_ascii=False)


@functools.lru_cache(maxsize=128)
def value_type(json_schema: str) -> pa.StructType:
    """The Arrow type of the values `parse_value` returns for `json_schema`: a struct in property order.

    Args:
        json_schema: A schema, normally the canonical text of `to_json_schema` (any accepted text works).

    Returns:
        A struct type whose fields are all nullable, mapped as the module docstring's table says.
    """
    arrow = _arrow(_canonical(json_schema))
    assert isinstance(arrow, pa.StructType)  # to_json_schema guarantees a top-level object with properties
    return arrow


def parse_value(text: str, json_schema: str) -> dict[str, Any]:
    """Parse generated JSON text, validate it against `json_schema` and convert it for `value_type`.

    Missing properties become None, dates `datetime.date`, date-times UTC `datetime.datetime`, maps lists of
    ``(key, value)`` pairs, so that ``pa.array([result], type=value_type(json_schema))`` accepts the result.

    Args:
        text: The generated text.
        json_schema: A schema, normally the canonical text of `to_json_schema`.

    Returns:
        One dict per value, keys in property order.

    Raises:
        ValueError: If the text is not JSON, does not match the schema, or holds a value the Arrow type cannot
            (an integer beyond its width, a malformed date-time); the message gives the JSON path.
        MissingDependencyError: If jsonschema is not installed.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"generated text is not JSON: {exc.msg} at character {exc.pos} (got {text[:80]!r})") from exc
    error = _validator(json_schema)(value)
    if error is not None:
        raise ValueError(f"generated JSON does not match the schema {error}")
    result: dict[str, Any] = _convert(value, _canonical(json_schema), "$")
    return result


# ------------------------------------------------------------------------------------------- Spark forms


class _Ddl:
    """A recursive-descent parser of Spark DDL: ``name type [NOT NULL] [COMMENT 'text'], ...``."""

    # A token is a `quoted` name, a word (names, types, keywords, numbers), a 'string' or one punctuation mark.
    _TOKEN = re.compile(r"\s*(`(?:[^`]|``)*`|\w+|'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[<>(),:])")

    def __init__(self, text: str) -> None:
        self._text, self._tokens, self._i, pos = text, list[tuple[str, int]](), 0, 0
        while (match := self._TOKEN.match(text, pos)) is not None:
            self._tokens.append((match[1], match.start(1)))
            pos = match.end()
        if text[pos:].strip():
            raise self._error("a name, a type or one of < > ( ) , :", pos)
        self._tokens.append(("", len(text)))  # the end: never consumed

    def parse(self, struct: bool) -> JsonSchema:
        """The whole text as the fields of a struct, or (a StructType's JSON names atomic types so) one type."""
        schema = self._fields() if struct else self._type()
        if self._i != len(self._tokens) - 1:
            raise self._error("',' or the end", self._tokens[self._i][1])
        return schema

    def _fields(self) -> JsonSchema:
        fields = []
        while True:
            name, pos = self._take()
            if not name or name[0] in "<>(),:'\"":
                raise self._error("a field name", pos)
            self._accept(":")
            schema = self._type()
            nullable = not self._accept("not")
            if not nullable:
                self._expect("null")
            if self._accept("comment") and self._take()[0][:1] not in ("'", '"'):
                raise self._error("a quoted comment after COMMENT", self._tokens[self._i - 1][1])
            fields.append((name[1:-1].replace("``", "`") if name[0] == "`" else name, schema, nullable))
            if not self._accept(","):
                return _struct(fields)

    def _type(self) -> JsonSchema:
        word, pos = self._take()
        name = _ALIASES.get(word.lower(), word.lower())
        if name in _ATOMIC:
            return dict(_ATOMIC[name])
        if name in ("varchar", "char"):
            self._expect("(")
            length, at = self._take()
            if not length.isdigit():
                raise self._error(f"the length n of {word}(n)", at)
            self._expect(")")
            return {"type": "string", "maxLength": int(length)}
        if not word or word[0] in "<>(),:`'\"":
            raise self._error("a type", pos)
        if name not in ("array", "struct", "map"):
            raise SpecError(f"Spark type {word!r} at character {pos} of {self._text!r} is not supported in a "
                            f"schema; supported types: {', '.join(DDL_TYPES)}")
        self._expect("<")
        if name == "array":
            schema: JsonSchema = {"type": "array", "items": self._type()}
        elif name == "struct":
            schema = self._fields()
        else:
            key = self._type()
            self._expect(",")
            schema = _map(key, self._type())
        self._expect(">")
        return schema

    def _take(self) -> tuple[str, int]:
        token = self._tokens[self._i]
        self._i += token[0] != ""
        return token

    def _accept(self, word: str) -> bool:
        """Consume the next token if it is `word` (case-insensitive; a `quoted` name never is)."""
        if self._tokens[self._i][0].lower() != word:
            return False
        self._i += 1
        return True

    def _expect(self, word: str) -> None:
        if not self._accept(word):
            raise self._error(repr(word.upper()), self._tokens[self._i][1])

    def _error(self, expected: str, pos: int) -> SpecError:
        got = self._text[pos:pos + 20] or "the end"
        return SpecError(f"DDL schema {self._text!r}: expected {expected} at character {pos} (got {got!r}); write "
                         "fields as 'name type [NOT NULL] [COMMENT ...]', e.g. 'name string, tags array<string>'")


def _struct(fields: list[tuple[str, JsonSchema, bool]]) -> JsonSchema:
    names = [name for name, _, _ in fields]
    if len(set(names)) != len(names):
        raise SpecError(f"a struct's field names must be unique (got {names}); rename the repeated ones")
    return {"type": "object", "required": names, "additionalProperties": False,
            "properties": {name: {"anyOf": [t, _NULL]} if nullable else t for name, t, nullable in fields}}


def _map(key: JsonSchema, value: JsonSchema) -> JsonSchema:
    if key != {"type": "string"}:
        raise SpecError(f"a map's keys must be strings, as JSON object keys are (got key type {json.dumps(key)}); "
                        "use map<string, T>, or an array of structs")
    return {"type": "object", "additionalProperties": value}


def _from_spark(spark: object) -> JsonSchema:
    """A Spark type in its JSON form (``StructType.jsonValue()``) as a JSON Schema."""
    if isinstance(spark, str):
        return _Ddl(spark).parse(struct=False)
    if not isinstance(spark, dict):
        raise SpecError(f"Spark type {spark!r} is not supported in a schema; supported types: {', '.join(DDL_TYPES)}")
    kind = spark.get("type")
    if kind == "struct" and isinstance(spark.get("fields"), list):
        fields = []
        for field in spark["fields"]:
            if not (isinstance(field, dict) and isinstance(field.get("name"), str) and "type" in field):
                raise SpecError(f"a StructType field must be a dict with 'name' and 'type' (got {field!r})")
            fields.append((field["name"], _from_spark(field["type"]), field.get("nullable", True) is not False))
        return _struct(fields)
    if kind == "array":
        items = _from_spark(spark.get("elementType"))
        return {"type": "array", "items": {"anyOf": [items, _NULL]} if spark.get("containsNull", True) else items}
    if kind == "map":
        value = _from_spark(spark.get("valueType"))
        nullable = spark.get("valueContainsNull", True)
        return _map(_from_spark(spark.get("keyType")), {"anyOf": [value, _NULL]} if nullable else value)
    raise SpecError(f"Spark type {spark!r} is not supported in a schema; supported types: {', '.join(DDL_TYPES)}")


# ------------------------------------------------------------------------------------ canonical JSON Schema


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"a schema starting with '{{' must be JSON Schema text, but it is not JSON: {exc.msg} at "
                        f"character {exc.pos} (got {text[:80]!r})") from None


def _inline_refs(schema: JsonSchema) -> JsonSchema:
    """`schema` with every ``{"$ref": "#/$defs/Name"}`` replaced by that definition (pydantic's nested models)."""
    defs = schema.get("$defs", {})

    def inline(node: object, seen: tuple[str, ...]) -> object:
        if isinstance(node, list):
            return [inline(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return {key: inline(value, seen) for key, value in node.items()}
        name = ref.removeprefix("#/$defs/")
        if name == ref or not isinstance(defs, dict) or name not in defs:
            raise SpecError(f"schema $ref {ref!r} must point into the schema's own $defs as '#/$defs/<name>' "
                            f"(got $defs names {sorted(defs) if isinstance(defs, dict) else defs!r})")
        if name in seen:
            raise SpecError(f"schema $ref {ref!r} is recursive ({' -> '.join((*seen, name))}), which a struct "
                            "cannot hold; bound the nesting depth with separate models")
        siblings = {key: inline(value, seen) for key, value in node.items() if key != "$ref"}
        target = inline(defs[name], (*seen, name))
        return {**target, **siblings} if isinstance(target, dict) else target

    result = inline({key: value for key, value in schema.items() if key != "$defs"}, ())
    assert isinstance(result, dict)
    return result


def _canon(node: object, path: str) -> JsonSchema:
    """The canonical form of the schema `node` at JSON path `path`, checked against what the mapping expresses."""
    if not isinstance(node, dict):
        raise SpecError(f"schema at {path} must be a JSON object such as {{\"type\": \"string\"}} (got {node!r})")
    for key in node:
        if key not in _KEYWORDS and key not in _ANNOTATIONS:
            raise SpecError(
                f"schema keyword {key!r} at {path} is not supported; supported keywords: {', '.join(_KEYWORDS)}, "
                f"$defs/$ref (inlined) and the annotations {', '.join(sorted(_ANNOTATIONS))} (dropped); drop it, "
                "or check that condition on the extracted column"
            )
    spec = {key: value for key, value in node.items() if key not in _ANNOTATIONS}
    if "anyOf" in spec or isinstance(spec.get("type"), list):
        return _canon_nullable(spec, path)
    kind = _type_of(spec, path)
    out = dict(spec, type=kind)
    for key, value in spec.items():
        if key not in ("type", "enum", "const", *_BY_TYPE[kind]):
            raise SpecError(f"schema keyword {key!r} at {path} does not apply to type {kind!r}; the keywords for "
                            f"{kind!r} are: {', '.join(('type', 'enum', 'const', *_BY_TYPE[kind]))}")
        _check_value(key, value, kind, path)
    if kind == "array":
        out["items"] = _canon(spec.get("items"), f"{path}[*]")
    elif kind == "object":
        out.update(_canon_object(spec, path))
    return {key: out[key] for key in _KEYWORDS if key in out}


def _canon_nullable(spec: JsonSchema, path: str) -> JsonSchema:
    if "anyOf" in spec:
        branches = spec["anyOf"]
        inner = [b for b in branches if b != _NULL] if isinstance(branches, list) else []
        if not isinstance(branches, list) or len(spec) > 1 or len(branches) != 2 or len(inner) != 1:
            raise SpecError(f"anyOf at {path} is supported only as the nullable form [T, {{\"type\": \"null\"}}] "
                            f"with nothing beside it (got {json.dumps(spec)}); put the constraints inside T")
        branch = _canon(inner[0], path)
    else:
        types = [t for t in spec["type"] if t != "null"]
        if len(spec["type"]) != 2 or len(types) != 1:
            raise SpecError(f"type at {path} must be one type, or one type and 'null' (got {spec['type']!r})")
        branch = _canon(dict(spec, type=types[0]), path)
    return branch if "anyOf" in branch else {"anyOf": [branch, _NULL]}


def _type_of(spec: JsonSchema, path: str) -> str:
    """The node's type, checked against its enum/const values; inferred for an enum or const of strings."""
    values = spec["enum"] if "enum" in spec else [spec["const"]] if "const" in spec else []
    if not isinstance(values, list) or ("enum" in spec and not values):
        raise SpecError(f"enum at {path} must be a non-empty list (got {values!r})")
    kinds = {"string" if isinstance(v, str) else "boolean" if isinstance(v, bool) else "number"
             if isinstance(v, (int, float)) else repr(v) for v in values if v is not None}
    if len(kinds) > 1 or kinds - {"string", "boolean", "number"}:
        raise SpecError(f"enum/const values at {path} must all be strings, all numbers or all booleans (got "
                        f"{values!r}); split them, or turn them into strings")
    kind = spec.get("type", "string" if kinds == {"string"} else None)
    if kind not in _BY_TYPE:
        raise SpecError(f"type at {path} must be one of {', '.join(_BY_TYPE)} (got {kind!r}, keys "
                        f"{sorted(spec)}); add e.g. \"type\": \"string\"")
    if kinds and kinds != {{"integer": "number"}.get(kind, kind)}:
        raise SpecError(f"enum/const values at {path} must be of type {kind!r} (got {values!r})")
    return str(kind)


def _check_value(key: str, value: object, kind: str, path: str) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if key in ("minLength", "maxLength", "minItems", "maxItems"):
        ok, expected = isinstance(value, int) and not isinstance(value, bool) and value >= 0, "a non-negative integer"
    elif key in _BOUNDS:
        ok = number and (key != "multipleOf" or (isinstance(value, (int, float)) and value > 0))
        expected = "a number above 0" if key == "multipleOf" else "a number"
    elif key == "format":
        ok, expected = value in _FORMATS[kind], f"one of {_FORMATS[kind]}"
    elif key == "pattern":
        try:
            ok, expected = isinstance(value, str) and re.compile(value) is not None, "a regular expression"
        except re.error:
            ok, expected = False, "a valid regular expression"
    else:
        return
    if not ok:
        raise SpecError(f"schema keyword {key!r} at {path} must be {expected} for type {kind!r} (got {value!r})")


def _canon_object(spec: JsonSchema, path: str) -> JsonSchema:
    props, extra, required = spec.get("properties"), spec.get("additionalProperties", False), spec.get("required", [])
    if props is None and isinstance(extra, dict) and not required:
        return {"additionalProperties": _canon(extra, f"{path}.*")}
    if not isinstance(props, dict) or not props:
        raise SpecError(f"object at {path} needs non-empty \"properties\" (a struct) or an \"additionalProperties\" "
                        f"schema (a map) (got {json.dumps(spec)})")
    if extra is not False:
        raise SpecError(f"additionalProperties at {path} must be false beside properties (got {extra!r}): an "
                        "extra property has no field in the result struct; drop it")
    names = required if isinstance(required, list) and all(isinstance(n, str) for n in required) else [None]
    if len(set(names)) != len(names) or not set(names) <= set(props):
        raise SpecError(f"required at {path} must list distinct names of its properties {list(props)} (got "
                        f"{required!r})")
    return {"properties": {name: _canon(sub, f"{path}.{name}") for name, sub in props.items()},
            "required": required, "additionalProperties": False}


# ------------------------------------------------------------------------------------ Arrow and values


@functools.lru_cache(maxsize=128)
def _canonical(json_schema: str) -> JsonSchema:
    result: JsonSchema = json.loads(to_json_schema(json_schema))
    return result


@functools.lru_cache(maxsize=64)
def _validator(json_schema: str) -> Callable[[object], str | None]:
    """A function giving the most relevant validation error of a value, as "at <path>: <message>", or None."""
    jsonschema = require("jsonschema", extra="extract", purpose="parsing extracted JSON")
    cls = jsonschema.Draft202012Validator
    # date-time is parsed by `_datetime`, with its own message; jsonschema checks it only where the optional
    # rfc3339-validator package is installed (moto and mlflow bring it), so it is left out for one behaviour.
    checker = copy.copy(cls.FORMAT_CHECKER)
    checker.checkers = {name: check for name, check in checker.checkers.items() if name != "date-time"}
    validator = cls(_canonical(json_schema), format_checker=checker)

    def first_error(value: object) -> str | None:
        best_match = jsonschema.exceptions.best_match
        error = best_match(validator.iter_errors(value))
        while error is not None and error.validator == "anyOf":  # a nullable T: say what T refuses, not "null"
            error = best_match(e for e in error.context if e.relative_schema_path[0] == 0)
        return None if error is None else f"at {error.json_path}: {error.message[:300]}"

    return first_error


def _arrow(node: JsonSchema) -> pa.DataType:
    if "anyOf" in node:
        return _arrow(node["anyOf"][0])
    kind, fmt = node["type"], node.get("format", "")
    if kind == "string":
        return {"date": pa.date32(), "date-time": pa.timestamp("us", tz="UTC")}.get(fmt, pa.string())
    if kind in ("integer", "number"):
        return {"int32": pa.int32(), "float": pa.float32()}.get(fmt, pa.int64() if kind == "integer" else pa.float64())
    if kind == "boolean":
        return pa.bool_()
    if kind == "array":
        return pa.list_(_arrow(node["items"]))
    if "properties" in node:
        return pa.struct([pa.field(name, _arrow(sub)) for name, sub in node["properties"].items()])
    return pa.map_(pa.string(), _arrow(node["additionalProperties"]))


_DATE_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:[Zz]|([+-])(\d\d):(\d\d))")


def _convert(value: Any, node: JsonSchema, path: str) -> Any:
    """`value`, already valid against `node`, in the Python form pyarrow takes for `_arrow(node)`."""
    if value is None:
        return None
    if "anyOf" in node:
        return _convert(value, node["anyOf"][0], path)
    kind, fmt = node["type"], node.get("format")
    if kind == "object" and "properties" in node:
        return {name: _convert(value.get(name), sub, f"{path}.{name}") for name, sub in node["properties"].items()}
    if kind == "object":
        return [(key, _convert(item, node["additionalProperties"], f"{path}.{key}")) for key, item in value.items()]
    if kind == "array":
        return [_convert(item, node["items"], f"{path}[{i}]") for i, item in enumerate(value)]
    if kind == "integer":
        low, high = _INT_RANGE["int32" if fmt == "int32" else "int64"]
        if not low <= value <= high:
            raise ValueError(f"generated value at {path} is out of the {fmt or 'int64'} range {low}..{high} "
                             f"(got {value})")
        return int(value)  # JSON Schema counts 3.0 as an integer; pyarrow's int arrays refuse floats
    if kind == "number":
        return float(value)
    if fmt == "date":
        return dt.date.fromisoformat(value)  # the format checker has matched YYYY-MM-DD and checked the day
    if fmt == "date-time":
        return _date_time(value, path)
    return value


def _date_time(text: str, path: str) -> dt.datetime:
    """An RFC 3339 date-time as UTC; parsed by hand because Python 3.10's fromisoformat takes neither Z nor .5."""
    match = _DATE_TIME.fullmatch(text)
    try:
        if match is None:
            raise ValueError("expected e.g. 2024-05-01T12:00:00Z or 2024-05-01T12:00:00.5+02:00")
        *fields, fraction, sign, hours, minutes = match.groups()
        offset = dt.timedelta(hours=int(hours or 0), minutes=int(minutes or 0)) * (-1 if sign == "-" else 1)
        micros = int((fraction or "").ljust(6, "0")[:6])
        year, month, day, hour, minute, second = map(int, fields)
        parsed = dt.datetime(year, month, day, hour, minute, second, micros, tzinfo=dt.timezone(offset))
    except ValueError as exc:
        raise ValueError(f"generated value at {path} is not an RFC 3339 date-time: {exc} (got {text!r})") from None
    return parsed.astimezone(dt.timezone.utc)
