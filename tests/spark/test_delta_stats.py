"""Delta per-file statistics written through delta-rs: the right column's, nested as the protocol says.

Readers skip files by these statistics (delta-rs's pyarrow datasets attach them to each fragment as a
guarantee, its log replay prunes by them, DataFusion and Spark do the same): a wrong minimum or maximum
silently drops the file's rows from a filtered read. So every test here reads its table back with a filter
on every primitive column, through each of those paths, and compares the rows with the same filter
evaluated in memory on the files themselves. It also compares the recorded statistics with each file's
true minimum, maximum and null count, and `repair_delta_statistics` is tested on a table written with
the statistics of the old writer (one column per top-level field, not per Parquet leaf).

Leaving a statistic out is not always safe either: delta-rs's pyarrow reader (deltalake 1.6) turns a
missing min/max of a top-level column into ``col >= null`` in the file's guarantee, and a filter on that
column then skips the file. So the oracle also requires min/max wherever a bound can be written.
"""

from __future__ import annotations

import datetime
import json
import shutil
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.spark

deltalake = pytest.importorskip("deltalake", reason="the delta extra (pip install 'sparkinfer[delta]') is missing")

import sparkinfer as si  # noqa: E402
from sparkinfer.engine import faults  # noqa: E402
from sparkinfer.spark import _deltastats  # noqa: E402
from sparkinfer.spark.job import FINGERPRINT_COLUMN, Job, run  # noqa: E402
from sparkinfer.spark.tables import repair_delta_statistics  # noqa: E402

Names = tuple[str, ...]  # a column: field names from the top-level field down


# ------------------------------------------------------------------------------------------ the oracles


def _log_adds(root: Path) -> dict[str, dict[str, Any]]:
    """path → parsed stats of the table's live files, replayed from the JSON commits by hand."""
    live: dict[str, dict[str, Any]] = {}
    for commit in sorted((root / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                live[action["add"]["path"]] = json.loads(action["add"]["stats"])
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
    return live


def _file_path(root: Path, log_path: str) -> Path:
    return root / urllib.parse.unquote(log_path)


def _leaf_arrays(table: pa.Table) -> Iterator[tuple[Names, pa.Array, bool]]:
    """(names, values, under a list or map) for every leaf; struct children carry their parent's nulls."""

    def walk(names: Names, values: pa.Array, repeated: bool) -> Iterator[tuple[Names, pa.Array, bool]]:
        kind = values.type
        if pa.types.is_struct(kind):
            for field, child in zip(kind, values.flatten()):  # flatten() applies the struct's validity
                yield from walk((*names, field.name), child, repeated)
        elif pa.types.is_map(kind):
            yield from walk((*names, "key"), values.keys, True)
            yield from walk((*names, "value"), values.items, True)
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            yield from walk((*names, "element"), values.flatten(), True)
        else:
            yield names, values, repeated

    for name in table.column_names:
        yield from walk((name,), table.column(name).combine_chunks(), False)


def _get(tree: dict[str, Any], names: Names) -> Any:
    for name in names:
        if not isinstance(tree, dict) or name not in tree:
            return None
        tree = tree[name]
    return tree


def _assert_stats_are_true(root: Path) -> int:
    """Every live file's recorded statistics hold for its own rows; returns how many files were checked.

    Null counts are exact. Min/max are exact for integers, booleans, dates, floats and strings of up to 64
    characters; longer strings get a 64-character prefix of the minimum and a larger string of at most 64
    characters; timestamps the milliseconds around them. They must be present for every such column
    outside lists and maps that has a value (statistics that are merely left out would pass a filtered
    read too, and delta-rs's pyarrow reader drops files that lack them), except floats holding NaN.
    """
    adds = _log_adds(root)
    assert adds
    for log_path, stats in adds.items():
        data = pq.read_table(_file_path(root, log_path))
        assert stats["numRecords"] == data.num_rows, log_path
        for names, values, repeated in _leaf_arrays(data):
            where = f"{log_path}: {'.'.join(names)}"
            low, high, nulls = (_get(stats.get(k, {}), names) for k in ("minValues", "maxValues", "nullCount"))
            if repeated:  # Delta keeps none for leaves inside lists or maps
                assert (low, high, nulls) == (None, None, None), where
                continue
            if not pa.types.is_null(values.type):
                assert nulls == values.null_count, where
            _assert_bounds(values, low, high, where)
    return len(adds)


def _assert_bounds(values: pa.Array, low: Any, high: Any, where: str) -> None:
    kind = values.type
    bounds = pc.min_max(values).as_py()
    nan = pa.types.is_floating(kind) and pc.any(pc.is_nan(values)).as_py()
    if bounds["min"] is None or nan or pa.types.is_binary(kind) or pa.types.is_decimal(kind):
        assert (low, high) == (None, None), where
        return
    assert low is not None and high is not None, f"{where}: no min/max recorded"
    true_low, true_high = bounds["min"], bounds["max"]
    if pa.types.is_date(kind):
        assert (low, high) == (true_low.isoformat(), true_high.isoformat()), where
    elif pa.types.is_timestamp(kind):
        assert low.endswith("Z") == (kind.tz is not None), where
        milli = datetime.timedelta(milliseconds=1)
        parsed = [datetime.datetime.fromisoformat(v.removesuffix("Z")) for v in (low, high)]
        if kind.tz is not None:
            true_low, true_high = (v.astimezone(datetime.timezone.utc).replace(tzinfo=None) for v in bounds.values())
        assert parsed[0] <= true_low < parsed[0] + milli and parsed[1] - milli < true_high <= parsed[1], where
        assert all(v.microsecond % 1000 == 0 for v in parsed), where
    elif pa.types.is_string(kind) and max(len(true_low), len(true_high)) > 64:
        assert true_low.startswith(low) and len(low) <= 64, where
        assert high >= true_high and len(high) <= 64, where
    else:
        assert (low, high) == (true_low, true_high), where


def _probe_columns(schema: pa.Schema) -> list[Names]:
    """Every primitive column outside lists and maps, nested struct fields included."""
    out: list[Names] = []

    def walk(names: Names, kind: pa.DataType) -> None:
        if pa.types.is_struct(kind):
            for child in kind:
                walk((*names, child.name), child.type)
        elif not pa.types.is_nested(kind) and not pa.types.is_null(kind):
            out.append(names)

    for field in schema:
        walk((field.name,), field.type)
    return out


def _sql_literal(value: Any) -> str | None:
    """`value` in delta-rs's and DataFusion's SQL; None for timestamps (their time zones do not carry)."""
    if isinstance(value, datetime.datetime):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, datetime.date):
        return f"DATE '{value.isoformat()}'"
    return repr(value)


def _assert_filtered_reads_complete(root: Path, key: str) -> int:
    """Filter on every primitive column, through delta-rs's readers; each must return every matching row.

    The truth is the same filter evaluated in memory on the table's files read directly with pyarrow. The
    readers: ``to_pyarrow_table(filters=...)`` (DNF tuples, top-level columns), ``to_pyarrow_dataset()`` with
    a pyarrow dataset expression (its fragments carry the statistics as guarantees), ``to_pyarrow_dataset(
    file_pruning_predicate=...)`` (delta-rs prunes files during log replay) and DataFusion SQL through
    ``QueryBuilder``. Probes: the smallest, median and largest value with ``=``, the median with ``<`` and
    ``>=``, and ``IS NULL``. Returns how many filters were checked.
    """
    table = deltalake.DeltaTable(str(root))
    files = [pq.read_table(_file_path(root, p)) for p in _log_adds(root)]
    partitions = table.metadata().partition_columns
    if partitions:  # partition values are not in the files: read them as delta-rs does, unfiltered
        truth = table.to_pyarrow_table()
    else:
        truth = pa.concat_tables(files, promote_options="permissive")
    assert truth.num_rows == sum(f.num_rows for f in files)
    dataset = table.to_pyarrow_dataset()
    checked = 0
    for names in _probe_columns(truth.schema):
        column = pc.field(*names)
        sql_name = ".".join(names)
        values = sorted({v for v in _column(truth, names).to_pylist() if v is not None and v == v})  # not NaN
        if not values:
            continue
        middle = values[len(values) // 2]
        probes = [("=", "=", v, column == v) for v in (values[0], middle, values[-1])]
        probes += [("<", "<", middle, column < middle), (">=", ">=", middle, column >= middle)]
        probes.append(("is null", "IS NULL", None, column.is_null()))
        for index, (op, sql_op, value, expr) in enumerate(probes):
            literal = "" if value is None else _sql_literal(value)
            sql = None if literal is None else f"{sql_name} {sql_op} {literal}".rstrip()
            want = sorted(truth.filter(expr).column(key).to_pylist())
            where = f"{sql_name} {op} {value!r} (want {len(want)} rows)"
            assert sorted(dataset.to_table(filter=expr).column(key).to_pylist()) == want, f"dataset: {where}"
            if sql is not None and len(names) <= 2:  # delta-rs's predicates take one level of struct access
                pruned = table.to_pyarrow_dataset(file_pruning_predicate=sql).to_table(filter=expr)
                assert sorted(pruned.column(key).to_pylist()) == want, f"file_pruning_predicate: {where}"
            if len(names) == 1 and value is not None:
                tuples = table.to_pyarrow_table(columns=[key], filters=[(names[0], op, value)])
                assert sorted(tuples.column(key).to_pylist()) == want, f"to_pyarrow_table(filters): {where}"
            if sql is not None and index == 1:  # the median, with =
                query = deltalake.QueryBuilder().register("t", table).execute(f"SELECT {key} FROM t WHERE {sql}")
                got = pa.table(query.read_all()).column(key).to_pylist()
                assert sorted(got) == want, f"DataFusion SQL: {where}"
            checked += 1
    return checked


def _column(table: pa.Table, names: Names) -> pa.Array:
    values = table.column(names[0]).combine_chunks()
    for name in names[1:]:
        values = pc.struct_field(values, name)
    return values


# ------------------------------------------------------------------- any table: nested before primitive


GENERIC_SCHEMA = (
    "s struct<a:int,b:string,f:double,inner:struct<c:bigint,d:date>>, arr array<bigint>, m map<string,int>, "
    "id bigint, name string, ls array<struct<x:int,y:string>>, day date, mv map<string,struct<u:int>>, "
    "small int, flag boolean, tag string, score double, ts timestamp, s2 struct<e:string>, long_text string, "
    "nothing string, grp string"
)


def _generic_rows(n: int) -> list[tuple[Any, ...]]:
    start = datetime.date(2024, 1, 1)
    utc = datetime.timezone.utc
    return [
        (
            None if i % 17 == 3 else {
                "a": 2 * i, "b": f"b{i:03d}", "f": float("nan") if i == 40 else i / 3,
                "inner": None if i % 9 == 4 else {"c": -i, "d": start + datetime.timedelta(days=100 - i)},
            },
            None if i % 5 == 0 else [i, i + 1000],
            {f"k{i % 3}": i} if i % 4 else None,
            i,
            None if i % 11 == 0 else f"n{i:03d}",
            [{"x": i, "y": f"y{i}"}] if i % 6 else [],
            None if i % 13 == 0 else start + datetime.timedelta(days=i),
            {"z": {"u": i}} if i % 2 else None,
            i // 10,
            i % 3 == 0,
            f"t{i % 4}",
            i / 7.0,
            datetime.datetime(2024, 1, 1, 12, i % 60, i % 7, (i * 12_345) % 1_000_000, tzinfo=utc),
            {"e": f"e{i % 5}"} if i % 8 else None,
            chr(ord("a") + i % 5) * (60 + i % 9) + str(i),  # past 64 characters from i = 5 on
            None,
            "even" if i % 2 == 0 else "odd",
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def generic_table(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """90 rows, range-partitioned on id into 3 tasks, partitioned by grp: 6 files of 2-3 row groups each.

    One NaN in s.f (row 40): that file's s.f gets no min/max.
    """
    root = tmp_path_factory.mktemp("generic") / "t"
    df = spark.createDataFrame(_generic_rows(90), GENERIC_SCHEMA).repartitionByRange(3, "id")
    si.write_table(df, str(root), "delta", partition_by="grp", delta_engine="delta-rs")
    return root


def test_structs_arrays_and_maps_before_primitive_columns_keep_their_statistics(generic_table: Path) -> None:
    assert _assert_stats_are_true(generic_table) == 6
    row_groups = [pq.ParquetFile(_file_path(generic_table, p)).num_row_groups for p in _log_adds(generic_table)]
    assert min(row_groups) >= 2, row_groups
    # The statistics let readers skip: only the two files (one per grp) of the task holding id 42 remain.
    assert len(deltalake.DeltaTable(str(generic_table)).to_pyarrow_dataset(
        file_pruning_predicate="id = 42").files) == 2
    assert _assert_filtered_reads_complete(generic_table, "id") > 80


def test_leaf_columns_follow_the_footer_with_dotted_names(tmp_path: Path) -> None:
    """A top-level ``a.b`` next to a struct ``a`` with a field ``b``: Parquet paths alone cannot tell them
    apart; the Arrow walk must, and it must match the footer's order leaf by leaf."""
    table = pa.table({
        "a.b": pa.array([1, 2], pa.int64()),
        "m": pa.array([[("k", {"u": 1})], None], pa.map_(pa.string(), pa.struct([("u", pa.int64())]))),
        "fx": pa.array([[1, 2], [3, 4]], pa.list_(pa.int32(), 2)),
        "a": pa.array([{"b": 9, "c": {"d": "q"}}, None]),
        "nothing": pa.nulls(2),
        "z": pa.array(["p", None]),
    })
    pq.write_table(table, tmp_path / "f.parquet", row_group_size=1)
    metadata = pq.read_metadata(tmp_path / "f.parquet")
    leaves = _deltastats.leaf_columns(metadata.schema.to_arrow_schema())
    paths = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    assert len(leaves) == len(paths) == 8
    for leaf, path in zip(leaves, paths):
        if leaf.repeated:
            assert path.startswith(leaf.names[0] + "."), (leaf, path)
        else:
            assert path == ".".join(leaf.names), (leaf, path)
    assert _deltastats.file_stats(metadata) == {
        "numRecords": 2,
        "minValues": {"a.b": 1, "a": {"b": 9, "c": {"d": "q"}}, "z": "p"},
        "maxValues": {"a.b": 2, "a": {"b": 9, "c": {"d": "q"}}, "z": "p"},
        "nullCount": {"a.b": 0, "a": {"b": 1, "c": {"d": 1}}, "z": 1},
    }


def test_bounds_per_type_stay_bounds(tmp_path: Path) -> None:
    """Timestamps widen to whole milliseconds, long strings to 64-character bounds; floats get min/max
    only when the writer saw no NaN in them, binary and decimal columns none."""
    utc = datetime.timezone.utc
    long_high = "b" * 63 + "\U0010ffff" + "zz"  # the 64th character cannot grow: the 63rd does
    table = pa.table({
        "ts": pa.array([datetime.datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=utc),
                        datetime.datetime(2024, 1, 1, 0, 0, 1, 999001, tzinfo=utc)], pa.timestamp("us", tz="UTC")),
        "ntz": pa.array([datetime.datetime(2024, 1, 1, 0, 0, 0, 5000)] * 2, pa.timestamp("us")),
        "s": pa.array(["a" * 70, long_high]),
        "flag": pa.array([True, True]),
        "f": pa.array([0.5, -1.5]),
        "g": pa.array([float("nan"), 2.0]),
        "raw": pa.array([b"x", b"y"]),
        "dec": pa.array([1, 2], pa.decimal128(5, 2)),
    })
    pq.write_table(table, tmp_path / "f.parquet")
    metadata = pq.read_metadata(tmp_path / "f.parquet")
    assert _deltastats.nan_leaves(zip(table.column_names, table.columns)) == {("g",)}
    stats = _deltastats.file_stats(metadata, {("g",)})
    assert stats["minValues"] == {"ts": "2024-01-01T00:00:00.123Z", "ntz": "2024-01-01T00:00:00.005",
                                  "s": "a" * 64, "flag": True, "f": -1.5}
    assert stats["maxValues"] == {"ts": "2024-01-01T00:00:02.000Z", "ntz": "2024-01-01T00:00:00.005",
                                  "s": "b" * 62 + "c", "flag": True, "f": 0.5}
    assert stats["maxValues"]["s"] > long_high and stats["nullCount"]["g"] == 0
    assert "f" not in _deltastats.file_stats(metadata)["minValues"]  # NaN unknown: no float bounds


# -------------------------------------------------------------------------------- the job, every task


# One Spark worker pool for the whole module: Spark starts Python workers per environment, so the fault
# injection is set once, for every test, and the runs without failures read an input that lacks the
# poison. "┤" is [UNK] (id 100) to the MiniLM tokenizer and holds byte 0xA4 (id 100) to the byte-level BPE
# of the generation models: one token id poisons the rows of every task.
POISON, POISON_TOKEN = "\u2524", 100


@pytest.fixture(scope="module", autouse=True)
def poisoned_workers(spark: Any) -> Iterator[None]:
    environment = spark.sparkContext.environment
    environment[faults.ENV] = f"fail_on_token={POISON_TOKEN}"
    yield
    del environment[faults.ENV]


def _texts(docs: list[str], poisoned: bool) -> list[str | None]:
    """12 texts, one null; with `poisoned`, rows 2 and 9 end in the poison."""
    return [None if i == 5 else f"{docs[i][:20]} {POISON}" if poisoned and i in (2, 9) else docs[i][:60]
            for i in range(12)]


@pytest.fixture(scope="module")
def job_inputs(docs: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict[bool, str]:
    """poisoned → 12 rows in two files: id, the text, a date, an int, a string, then a struct.

    The job appends its prediction and the fingerprint: the fingerprint comes after two structs (or a
    struct and an array), where the old writer gave it the statistics of the prediction's first field.
    """
    start = datetime.date(2024, 3, 1)
    paths = {}
    for poisoned in (False, True):
        rows = [
            {"id": i, "text": text, "day": start + datetime.timedelta(days=i), "n": 100 - i,
             "tag": None if i % 5 == 1 else f"tag{i % 2}", "meta": {"a": i % 4, "b": f"m{i % 3}"}}
            for i, text in enumerate(_texts(docs, poisoned))
        ]
        root = tmp_path_factory.mktemp("job_input")
        for part in range(2):
            pq.write_table(pa.Table.from_pylist(rows[part * 6:(part + 1) * 6]), root / f"part-{part}.parquet")
        paths[poisoned] = str(root)
    return paths


# Every task with every on_error mode (grouped by model, so that workers keep it loaded); generation and
# text2text alternate return_details, classification returns all scores (an array inside the struct).
CASES = [
    ("embedding", "minilm_path", {}),
    ("classification", "tiny_classifier", {"return_all_scores": True}),
    ("token-classification", "tiny_ner", {}),
    ("generation", "tiny_causal_lm", {"max_new_tokens": 3}),
    ("text2text", "tiny_seq2seq", {"max_new_tokens": 3, "return_details": True}),
]


def _case_params() -> list[Any]:
    params = []
    for task, model, options in CASES:
        for on_error in ("raise", "null", "column"):
            flip = task in ("generation", "text2text") and on_error == "null"
            details = {"return_details": not options.get("return_details", False)} if flip else {}
            params.append(pytest.param(task, model, {**options, **details}, on_error, id=f"{task}-{on_error}"))
    return params


@pytest.mark.parametrize(("task", "model_fixture", "options", "on_error"), _case_params())
def test_job_output_reads_back_completely_under_any_filter(
    spark: Any, job_inputs: dict[bool, str], docs: list[str], tmp_path: Path, request: pytest.FixtureRequest,
    task: str, model_fixture: str, options: dict[str, Any], on_error: str,
) -> None:
    from transformers import AutoTokenizer

    model = request.getfixturevalue(model_fixture)
    tokenizer = AutoTokenizer.from_pretrained(model)
    poisoned = on_error != "raise"  # two rows fail: their predictions are null, or carry the error
    for text in filter(None, _texts(docs, poisoned)):
        assert (POISON_TOKEN in tokenizer(text)["input_ids"]) == (POISON in text), text
    spec = si.ModelSpec(model, task=task, on_error=on_error, max_length=32, batch_tokens=256,  # type: ignore[arg-type]
                        **options)
    output = tmp_path / "out"
    report = run(spark, Job(input=job_inputs[poisoned], output=str(output), spec=spec, key="id", partitions=2,
                            delta_engine="delta-rs"))
    assert (report.rows_out, report.errors) == (12, 2 if poisoned else 0)
    names = deltalake.DeltaTable(str(output)).schema().to_arrow()
    names = [f.name for f in pa.schema(names)]
    assert names[-1] == FINGERPRINT_COLUMN and names.index("meta") < names.index(FINGERPRINT_COLUMN)
    assert _assert_stats_are_true(output) >= 1
    for stats in _log_adds(output).values():
        assert stats["minValues"][FINGERPRINT_COLUMN] == report.to_dict()["fingerprint"]
    assert _assert_filtered_reads_complete(output, "id") >= 30


# ------------------------------------------------------------------------------------------ the repair


def _enumerate_stats(metadata: Any) -> dict[str, Any]:
    """What the writer recorded before the fix: column `index` of a row group read as the `index`-th
    top-level field, which is another column's once a struct or map came before it."""
    stats: dict[str, Any] = {"numRecords": metadata.num_rows, "minValues": {}, "maxValues": {}, "nullCount": {}}
    for index, field in enumerate(metadata.schema.to_arrow_schema()):
        if pa.types.is_nested(field.type):
            continue
        chunks = [metadata.row_group(g).column(index).statistics for g in range(metadata.num_row_groups)]
        if any(c is None for c in chunks):
            continue
        stats["nullCount"][field.name] = sum(c.null_count for c in chunks)
        exact = pa.types.is_integer(field.type) or pa.types.is_date(field.type) or pa.types.is_string(field.type)
        if exact and all(c.has_min_max for c in chunks):
            low, high = min(c.min for c in chunks), max(c.max for c in chunks)
            if isinstance(low, str) and max(len(low), len(high)) > 64:
                continue
            if isinstance(low, datetime.date):
                low, high = low.isoformat(), high.isoformat()
            stats["minValues"][field.name], stats["maxValues"][field.name] = low, high
    return stats


def _table_with_old_statistics(source: Path, root: Path) -> None:
    """The files of `source` committed again, with the statistics the old writer gave them."""
    from deltalake.transaction import AddAction, create_table_with_add_actions

    table = deltalake.DeltaTable(str(source))
    actions = []
    for row in pa.table(table.get_add_actions(flatten=False)).to_pylist():
        relative = urllib.parse.unquote(row["path"])
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / relative, root / relative)
        stats = _enumerate_stats(pq.read_metadata(root / relative))
        actions.append(AddAction(relative, row["size_bytes"], {"grp": row["partition"]["grp"]},
                                 row["modification_time"], True, json.dumps(stats)))
    create_table_with_add_actions(str(root), table.schema(), actions, partition_by=["grp"])


def test_repair_restates_old_statistics_once(generic_table: Path, tmp_path: Path) -> None:
    root = tmp_path / "old"
    _table_with_old_statistics(generic_table, root)
    broken = deltalake.DeltaTable(str(root))
    # As written before the fix: a filter on a column after the struct misses rows.
    assert broken.to_pyarrow_table(filters=[("name", "=", "n042")]).num_rows == 0
    with pytest.raises(AssertionError):
        _assert_stats_are_true(root)

    assert repair_delta_statistics(str(root)) == 6
    repaired = deltalake.DeltaTable(str(root))
    assert repaired.version() == 1 and repaired.count() == 90 and len(repaired.file_uris()) == 6
    commit = [json.loads(line) for line in (root / "_delta_log" / f"{1:020d}.json").read_text().splitlines()]
    adds = [a["add"] for a in commit if "add" in a]
    assert len(adds) == 6 and not any(a["dataChange"] for a in adds)
    assert not any("remove" in a for a in commit)
    assert commit[0]["commitInfo"]["sparkinfer"] == {"operation": "repair statistics", "files": 6}
    assert {a["path"]: a["partitionValues"] for a in adds} == {
        r["path"]: {"grp": r["partition"]["grp"]} for r in pa.table(broken.get_add_actions(flatten=False)).to_pylist()
    }
    assert _assert_stats_are_true(root) == 6
    assert _assert_filtered_reads_complete(root, "id") > 80
    assert repair_delta_statistics(str(root)) == 0  # nothing left to repair: nothing committed
    assert deltalake.DeltaTable(str(root)).version() == 1
    assert repair_delta_statistics(str(generic_table)) == 0  # written by the fixed writer


def test_repair_commits_nothing_when_the_table_changes_meanwhile(
    generic_table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compaction between the repair's snapshot and its commit removed the files it re-adds: committing
    anyway would bring their rows back a second time."""
    root = tmp_path / "old"
    _table_with_old_statistics(generic_table, root)
    real = _deltastats.file_stats
    compacted: list[Any] = []
    lock = threading.Lock()  # footers are read by a thread pool

    def compact_first(metadata: Any, nan_leaves: Any = None) -> dict[str, Any]:
        with lock:
            if not compacted:
                compacted.append(deltalake.DeltaTable(str(root)).optimize.compact())
        return real(metadata, nan_leaves)

    monkeypatch.setattr(_deltastats, "file_stats", compact_first)
    with pytest.raises(si.TableError, match="changed while its statistics were being repaired"):
        repair_delta_statistics(str(root))
    assert compacted and compacted[0]["numFilesRemoved"] == 6
    table = deltalake.DeltaTable(str(root))
    assert table.version() == 1 and table.count() == 90
