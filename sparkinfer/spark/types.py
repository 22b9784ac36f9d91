"""Arrow type → Spark DDL string, so tasks declare one type and the UDF's return type follows."""

from __future__ import annotations

import pyarrow as pa

_SCALARS = {
    pa.string(): "string",
    pa.large_string(): "string",
    pa.float32(): "float",
    pa.float64(): "double",
    pa.int32(): "int",
    pa.int64(): "bigint",
    pa.bool_(): "boolean",
    pa.date32(): "date",
    pa.timestamp("us", tz="UTC"): "timestamp",
}


def spark_ddl(arrow_type: pa.DataType) -> str:
    """The Spark DDL of an Arrow type, e.g. ``list<float>`` → ``array<float>``.

    Raises:
        TypeError: For an Arrow type no task should produce.
    """
    if arrow_type in _SCALARS:
        return _SCALARS[arrow_type]
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return f"array<{spark_ddl(arrow_type.value_type)}>"
    if pa.types.is_map(arrow_type):
        return f"map<{spark_ddl(arrow_type.key_type)},{spark_ddl(arrow_type.item_type)}>"
    if pa.types.is_struct(arrow_type):
        fields = ",".join(f"{_name(f.name)}:{spark_ddl(f.type)}" for f in arrow_type)
        return f"struct<{fields}>"
    raise TypeError(f"no Spark type for Arrow type {arrow_type}")


def _name(name: str) -> str:
    """A struct field's name in DDL: backquoted unless it is a plain identifier."""
    return name if name.isidentifier() else "`" + name.replace("`", "``") + "`"
