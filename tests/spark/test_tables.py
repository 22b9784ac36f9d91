"""read_table / write_table: Parquet and Delta round trips, write modes, atomic commits, refused Delta features.

Delta tests run once per Delta engine: delta-rs always, Spark's Delta source only when the session has it
(it needs the delta-spark jars, which this project's machines cannot fetch: that case is skipped, with the
reason printed by ``-ra``). Results are checked against the rows written and against delta-rs reading the
table itself.
"""

from __future__ import annotations

import datetime
import json
import os
import struct
import subprocess
import sys
import textwrap
import urllib.parse
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.spark

deltalake = pytest.importorskip("deltalake", reason="the delta extra (pip install 'sparkinfer[delta]') is missing")

import sparkinfer as si  # noqa: E402
from sparkinfer.spark.tables import spark_has_delta  # noqa: E402

SCHEMA = (
    "id bigint, text string, emb array<float>, pred struct<label:string,score:double>, day date, "
    "ts timestamp, part string"
)
# A partition value with characters that need escaping in a path, and a null partition.
PARTS = ["a b:c/%d", "x", None]


@pytest.fixture(params=["delta-rs", "spark"])
def delta_engine(request: pytest.FixtureRequest, spark: Any) -> str:
    """Each Delta test runs on delta-rs, and on Spark's Delta source when the session has one."""
    if request.param == "spark" and not spark_has_delta(spark):
        pytest.skip("Spark's Delta source is not in this session (delta-spark jars need Maven, unavailable "
                    "here); the same test ran on delta-rs")
    return str(request.param)


def _rows(start: int, n: int) -> list[tuple[Any, ...]]:
    utc = datetime.timezone.utc
    return [
        (
            i,
            f"row {i} " + "é" * (i % 3),
            [float(i), i / 3.0] if i % 5 else None,
            {"label": "pos" if i % 2 else "neg", "score": i / 7.0},
            datetime.date(2024, 1, 1 + i % 28),
            datetime.datetime(2024, 1, 1, 12, i % 60, tzinfo=utc),
            PARTS[i % 3],
        )
        for i in range(start, start + n)
    ]


def _frame(spark: Any, start: int, n: int) -> Any:
    return spark.createDataFrame(_rows(start, n), SCHEMA).repartition(2)


def _collected(df: Any) -> list[tuple[Any, ...]]:
    return sorted((tuple(r) for r in df.select(*[c.split()[0] for c in SCHEMA.split(", ")]).collect()),
                  key=lambda r: r[0])


def _expected(spark: Any, start: int, n: int) -> list[tuple[Any, ...]]:
    # Spark's own conversion of the same rows (timestamps in the session's time zone, floats as float32).
    return _collected(spark.createDataFrame(_rows(start, n), SCHEMA))


def test_parquet_round_trip_and_modes(spark: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    si.write_table(_frame(spark, 0, 30), path, "parquet", partition_by="part")
    assert _collected(si.read_table(spark, path)) == _expected(spark, 0, 30)
    with pytest.raises(si.TableError, match="already exists"):
        si.write_table(_frame(spark, 0, 1), path, "parquet")
    si.write_table(_frame(spark, 30, 10), path, "parquet", mode="append", partition_by="part")
    assert _collected(si.read_table(spark, path, "parquet")) == _expected(spark, 0, 40)
    si.write_table(_frame(spark, 100, 5), path, "parquet", mode="overwrite", partition_by="part")
    assert _collected(si.read_table(spark, path)) == _expected(spark, 100, 5)


def test_delta_round_trip_versions_and_modes(spark: Any, tmp_path: Path, delta_engine: str) -> None:
    from pyspark.sql.types import StructType

    path = str(tmp_path / "t")
    si.write_table(_frame(spark, 0, 30), path, "delta", partition_by=["part"], delta_engine=delta_engine)
    table = deltalake.DeltaTable(path)
    assert table.version() == 0
    assert table.count() == 30
    assert table.metadata().partition_columns == ["part"]
    expected_schema = spark.createDataFrame([], SCHEMA).schema  # StructType.fromDDL is PySpark 4's
    assert [(f.name, f.dataType) for f in StructType.fromJson(json.loads(table.schema().to_json())).fields] == [
        (f.name, f.dataType) for f in expected_schema.fields
    ]
    # delta-rs reads the files and partition values itself: the same ids, texts and partitions.
    own = sorted(zip(*(table.to_pyarrow_table(columns=["id", "text", "part"]).column(c).to_pylist()
                       for c in ("id", "text", "part"))))
    assert own == [(r[0], r[1], r[6]) for r in _expected(spark, 0, 30)]
    assert _collected(si.read_table(spark, path, delta_engine=delta_engine)) == _expected(spark, 0, 30)
    if delta_engine == "delta-rs":  # the per-file statistics sparkinfer wrote, against each file's own rows
        for action in pa.table(table.get_add_actions(flatten=True)).to_pylist():
            rows = pq.read_table(Path(path) / urllib.parse.unquote(action["path"])).to_pylist()
            ids = [r["id"] for r in rows]
            assert (action["num_records"], action["min.id"], action["max.id"]) == (len(ids), min(ids), max(ids))
            assert action["null_count.text"] == 0
            # Columns after the array and the struct: their own statistics (Parquet counts leaf columns),
            # the struct's fields nested as Delta's protocol has them.
            labels, days = [r["pred"]["label"] for r in rows], [r["day"] for r in rows]
            assert (action["min.pred.label"], action["max.pred.label"]) == (min(labels), max(labels))
            assert (action["min.day"], action["max.day"], action["null_count.day"]) == (min(days), max(days), 0)
            assert action["null_count.emb"] is None  # a list's leaf counts null elements too: left out
            # Timestamps to the millisecond, rounded outwards.
            stamps = [r["ts"] for r in rows]
            milli = datetime.timedelta(milliseconds=1)
            assert action["min.ts"] <= min(stamps) < action["min.ts"] + milli
            assert action["max.ts"] - milli < max(stamps) <= action["max.ts"]

    si.write_table(_frame(spark, 30, 10), path, "delta", mode="append", delta_engine=delta_engine)
    assert deltalake.DeltaTable(path).version() == 1
    assert _collected(si.read_table(spark, path, "delta", delta_engine=delta_engine)) == _expected(spark, 0, 40)

    si.write_table(_frame(spark, 100, 5), path, "delta", mode="overwrite", partition_by="part",
                   delta_engine=delta_engine)
    assert deltalake.DeltaTable(path).version() == 2
    assert deltalake.DeltaTable(path).count() == 5
    assert _collected(si.read_table(spark, path, delta_engine=delta_engine)) == _expected(spark, 100, 5)

    with pytest.raises(Exception, match="(?i)already exists") as refused:
        si.write_table(_frame(spark, 0, 1), path, "delta", delta_engine=delta_engine)
    if delta_engine == "delta-rs":
        assert isinstance(refused.value, si.TableError)
        with pytest.raises(si.TableError, match=r"partitioned by \['part'\], not \['id'\]"):
            si.write_table(_frame(spark, 0, 1), path, "delta", mode="overwrite", partition_by="id",
                           delta_engine=delta_engine)
    assert deltalake.DeltaTable(path).version() == 2


def test_delta_append_of_another_schema_is_refused(spark: Any, tmp_path: Path, delta_engine: str) -> None:
    path = str(tmp_path / "t")
    si.write_table(_frame(spark, 0, 5), path, "delta", delta_engine=delta_engine)
    other = spark.createDataFrame([(1, "x")], "id bigint, text string")
    with pytest.raises(Exception, match="(?i)schema") as refused:
        si.write_table(other, path, "delta", mode="append", delta_engine=delta_engine)
    if delta_engine == "delta-rs":
        assert isinstance(refused.value, si.TableError)
    assert deltalake.DeltaTable(path).version() == 0
    assert deltalake.DeltaTable(path).count() == 5


def test_failed_delta_write_commits_nothing(spark: Any, tmp_path: Path, delta_engine: str) -> None:
    from pyspark.sql import functions as F

    path = tmp_path / "t"
    si.write_table(_frame(spark, 0, 20), str(path), "delta", delta_engine=delta_engine)
    committed = {Path(u).name for u in deltalake.DeltaTable(str(path)).file_uris()}

    def orphans() -> set[str]:
        return {p.name for p in path.rglob("*.parquet")} - committed

    @F.udf("string")
    def fail_late(text: str, partition: int) -> str:
        import time

        if partition == 1:  # fail the job once partition 0 has started writing its file into the table
            deadline = time.monotonic() + 120
            while not orphans() and time.monotonic() < deadline:
                time.sleep(0.05)
            raise ValueError("injected failure")
        return text

    broken = _frame(spark, 20, 200).withColumn("text", fail_late("text", F.spark_partition_id()))
    with pytest.raises(Exception, match="injected failure"):
        si.write_table(broken, str(path), "delta", mode="append", delta_engine=delta_engine)
    table = deltalake.DeltaTable(str(path))
    assert table.version() == 0
    assert {Path(u).name for u in table.file_uris()} == committed
    assert _collected(si.read_table(spark, str(path), delta_engine=delta_engine)) == _expected(spark, 0, 20)
    assert orphans(), "partition 0's file should be on disk, orphaned, not in the log"


def test_retried_tasks_leave_no_duplicates(tmp_path: Path) -> None:
    """A task that fails after writing part of its file is retried; only the successful attempt is committed."""
    script = tmp_path / "retry.py"
    marker = tmp_path / "failed-once"
    script.write_text(textwrap.dedent(f"""
        from pyspark.sql import SparkSession, functions as F
        import sparkinfer as si

        spark = (SparkSession.builder.master("local[2,3]")  # 3 attempts per task
                 .config("spark.sql.execution.arrow.maxRecordsPerBatch", "16")
                 .config("spark.ui.enabled", "false").getOrCreate())

        @F.udf("string")
        def fail_first_attempt(row, partition):
            import glob, time
            from pyspark import TaskContext
            if partition == 0 and TaskContext.get().attemptNumber() == 0 and row == 400:
                # Fail once this attempt's writer has opened its file in the table. It has rows 0-399 by
                # then: 2 KB each, past the 64 KB buffer between the JVM and the writer's Python worker.
                deadline = time.monotonic() + 120
                while not glob.glob({str(tmp_path / "t")!r} + "/part-00000-0-*") and time.monotonic() < deadline:
                    time.sleep(0.05)
                open({str(marker)!r}, "w").close()
                raise ValueError("injected failure on the first attempt")
            return f"row {{row}} " + "x" * 2000

        df = (spark.range(0, 1000, numPartitions=2)
              .withColumn("text", fail_first_attempt("id", F.spark_partition_id())))
        si.write_table(df, {str(tmp_path / "t")!r}, "delta", delta_engine="delta-rs")
    """))
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert marker.exists(), "the first attempt of partition 0 should have failed"
    table = deltalake.DeltaTable(str(tmp_path / "t"))
    ids = table.to_pyarrow_table(columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == list(range(1000))
    committed = {Path(u).name for u in table.file_uris()}
    attempts = {p.name.split("-")[2] for p in (tmp_path / "t").glob("*.parquet") if p.name not in committed}
    assert "0" in attempts, "the failed attempt's partial file should be on disk, not in the log"


def _hand_written_delta(root: Path, protocol: dict[str, Any], configuration: dict[str, str],
                        schema_fields: list[dict[str, Any]], add_extra: dict[str, Any]) -> None:
    """A one-commit Delta table written by hand, to hold features delta-rs cannot create."""
    (root / "_delta_log").mkdir(parents=True)
    pq.write_table(pa.table({"id": pa.array(range(5), pa.int64())}), root / "f.parquet")
    schema = {"type": "struct", "fields": schema_fields}
    actions = [
        {"protocol": protocol},
        {"metaData": {"id": "00000000-0000-0000-0000-000000000000", "format": {"provider": "parquet", "options": {}},
                      "schemaString": json.dumps(schema), "partitionColumns": [], "configuration": configuration,
                      "createdTime": 0}},
        {"add": {"path": "f.parquet", "partitionValues": {}, "size": (root / "f.parquet").stat().st_size,
                 "modificationTime": 0, "dataChange": True, "stats": json.dumps({"numRecords": 5}), **add_extra}},
    ]
    (root / "_delta_log" / "00000000000000000000.json").write_text("\n".join(json.dumps(a) for a in actions) + "\n")


_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"


def _inline_deletion_vector(rows: list[int]) -> dict[str, Any]:
    """An inline deletion vector (Delta protocol: RoaringBitmapArray, Z85-encoded) deleting `rows` (< 65536)."""
    roaring = (struct.pack("<IIHHI", 12346, 1, 0, len(rows) - 1, 16)
               + b"".join(struct.pack("<H", r) for r in sorted(rows)))
    body = struct.pack("<iqI", 1681511377, 1, 0) + roaring
    padded = body + b"\0" * (-len(body) % 4)
    text = []
    for i in range(0, len(padded), 4):
        value = struct.unpack(">I", padded[i : i + 4])[0]
        text.append("".join(_Z85[value // 85**k % 85] for k in range(4, -1, -1)))
    return {"storageType": "i", "pathOrInlineDv": "".join(text), "sizeInBytes": len(body), "cardinality": len(rows)}


def test_delta_rs_path_refuses_deletion_vectors(spark: Any, tmp_path: Path) -> None:
    root = tmp_path / "dv"
    _hand_written_delta(
        root,
        {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": ["deletionVectors"],
         "writerFeatures": ["deletionVectors"]},
        {"delta.enableDeletionVectors": "true"},
        [{"name": "id", "type": "long", "nullable": True, "metadata": {}}],
        {"deletionVector": _inline_deletion_vector([1, 3])},
    )
    # delta-rs itself sees rows 1 and 3 deleted: plain Parquet reads would bring them back.
    assert pa.table(deltalake.DeltaTable(str(root)).deletion_vectors()).column("selection_vector").to_pylist() == [
        [True, False, True, False, True]
    ]
    with pytest.raises(si.TableError, match="deletion vectors on 1 file"):
        si.read_table(spark, str(root), delta_engine="delta-rs")
    with pytest.raises(si.TableError, match="deletion vectors"):
        si.read_table(spark, str(root), "delta", delta_engine="delta-rs")


def test_delta_rs_path_refuses_column_mapping(spark: Any, tmp_path: Path) -> None:
    root = tmp_path / "cm"
    _hand_written_delta(
        root,
        {"minReaderVersion": 2, "minWriterVersion": 5},
        {"delta.columnMapping.mode": "name", "delta.columnMapping.maxColumnId": "1"},
        [{"name": "id", "type": "long", "nullable": True,
          "metadata": {"delta.columnMapping.id": 1, "delta.columnMapping.physicalName": "col-5f4a"}}],
        {},
    )
    with pytest.raises(si.TableError, match="column mapping"):
        si.read_table(spark, str(root), delta_engine="delta-rs")
    with pytest.raises(si.TableError, match="column mapping"):
        si.write_table(spark.range(3), str(root), "delta", mode="append", delta_engine="delta-rs")


def test_read_table_by_catalog_name_and_missing_delta(spark: Any, tmp_path: Path) -> None:
    spark.createDataFrame([(1, "a")], "id bigint, text string").createOrReplaceTempView("sparkinfer_t")
    assert [tuple(r) for r in si.read_table(spark, "sparkinfer_t").collect()] == [(1, "a")]
    with pytest.raises(si.TableError, match="no Delta table"):
        si.read_table(spark, str(tmp_path / "missing"), "delta", delta_engine="delta-rs")
    with pytest.raises(si.SpecError, match="format must be one of"):
        si.read_table(spark, str(tmp_path), "csv")  # type: ignore[arg-type]
    if not spark_has_delta(spark):
        with pytest.raises(si.TableError, match="no Delta source"):
            si.write_table(spark.range(1), str(tmp_path / "x"), "delta", delta_engine="spark")
