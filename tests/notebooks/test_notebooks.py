"""The notebooks in notebooks/, run end to end on CPU against Spark-free oracles, and read by jupytext.

Each notebook is executed in this process with ``runpy`` on the suite's Spark session, as Databricks would run
it: ``spark`` and a fake ``dbutils`` (widgets) as globals. One notebook (02) gets neither and takes the active
session and its parameters from ``SPARKINFER_NB_*`` environment variables, the local fallback. The notebook's
variables are then checked against oracles that share no code with sparkinfer: sentence-transformers'
``encode`` for embeddings, transformers on each row alone for classification, ``model.generate`` of the
bitsandbytes 4-bit model on each prompt alone for generation.

The jupytext test reads every notebook as Jupyter (with jupytext) would open it and checks that it shows the
Databricks cells: the same number, the same kinds (markdown for ``# MAGIC %md`` cells), the same code.
"""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from sparkinfer import notebook
from sparkinfer.engine import cache
from sparkinfer.errors import SpecError
from tests.quantized import CPU_4BIT_PATHS, spark_cpu_4bit_path, use_cpu_4bit_path
from tests.spark.helpers import single_torch_thread
from tests.unit.helpers import ClassifierOracle, SentenceTransformerOracle
from tests.unit.test_generation import GenerateOracle

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
SAMPLE = ROOT / "sparkinfer" / "data" / "sample_docs.parquet"
SEPARATOR = "# COMMAND ----------"
HEADER = "# Databricks notebook source"


class FakeWidgets:
    """``dbutils.widgets``: `values` stand for what a user typed; an undeclared widget cannot be read."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.declared: dict[str, str] = {}

    def text(self, name: str, defaultValue: str, label: str | None = None) -> None:  # noqa: N803 (dbutils' name)
        self.declared[name] = defaultValue
        self.values.setdefault(name, defaultValue)

    def get(self, name: str) -> str:
        assert name in self.declared, f"widget {name!r} read before it was declared"
        return self.values[name]


class FakeDbutils:
    def __init__(self, **values: Any) -> None:
        self.widgets = FakeWidgets({k: str(v) for k, v in values.items()})


def run_notebook(name: str, **init_globals: Any) -> dict[str, Any]:
    """Execute notebooks/<name> as a script with these globals; returns its variables."""
    (path,) = [p for p in NOTEBOOKS if p.name == name]
    return runpy.run_path(str(path), init_globals=init_globals, run_name="__main__")


@pytest.fixture(scope="module")
def sample() -> list[dict[str, Any]]:
    """The bundled sample docstrings, read with pyarrow (not through `notebook.sample_docs`)."""
    return pq.read_table(SAMPLE).to_pylist()


@pytest.fixture(scope="module")
def st_oracle(minilm_path: str) -> SentenceTransformerOracle:
    return SentenceTransformerOracle(minilm_path)


@pytest.fixture(autouse=True, scope="module")
def empty_driver_cache() -> Any:
    """Notebook 04 loads a model on the driver (this process): leave no model behind."""
    yield
    cache.clear()


def assert_embeddings_match(got: dict[int, Any], texts: dict[int, str], oracle: SentenceTransformerOracle) -> None:
    assert got.keys() == texts.keys()
    with single_torch_thread():
        for i, vector in got.items():
            expected = oracle(texts[i])
            vector = np.asarray(vector, dtype=np.float64)
            assert vector.shape == (384,)
            assert float(vector @ expected) / float(np.linalg.norm(vector)) > 0.99999, i


# ------------------------------------------------------------------------------------------------ jupytext


def databricks_cells(text: str) -> list[tuple[str, list[str]]]:
    """(kind, lines) of each cell as Databricks reads the file: the cells between separator lines.

    Each cell's lines start with the line before it (the header, or the separator), which jupytext keeps.
    """
    lines = text.splitlines()
    assert lines[0] == HEADER
    cells = [[HEADER]]
    for line in lines[1:]:
        if line == SEPARATOR:
            while cells[-1][-1] == "":
                cells[-1].pop()  # the blank line before a separator closes the cell
            cells.append([line])
        else:
            cells[-1].append(line)
    out = []
    for cell in cells:
        assert "" not in cell, cell  # a blank line inside a cell would split it in jupytext's light format
        if cell[1].startswith("# MAGIC %md"):
            assert all(line.startswith("# MAGIC") for line in cell[1:]), cell  # all %md, as Databricks needs
            out.append(("markdown", cell))
        else:
            assert not all(line.startswith("#") for line in cell), cell
            out.append(("code", cell))
    return out


def uncomment(line: str) -> str:
    """A comment line as jupytext shows it in a markdown cell."""
    return line[2:] if line.startswith("# ") else line[1:]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_jupytext_shows_the_databricks_cells(path: Path) -> None:
    import jupytext

    expected = databricks_cells(path.read_text())
    assert [kind for kind, _ in expected][:2] == ["markdown", "code"]  # a title, then the parameters
    # What Jupyter shows is jupytext's reading of the file in the format it detects. jupytext has no Databricks
    # reader: its "light" format makes a cell of each paragraph, markdown when every line is a comment. Without
    # a blank line after each separator, that is exactly one cell per Databricks cell.
    nb = jupytext.read(path)
    assert nb.metadata["jupytext"]["text_representation"]["format_name"] == "light"
    assert len(nb.cells) == len(expected)
    assert [c.cell_type for c in nb.cells] == [kind for kind, _ in expected]
    for cell, (kind, lines) in zip(nb.cells, expected):
        assert cell.source.splitlines() == (lines if kind == "code" else [uncomment(line) for line in lines])


def test_notebooks_are_all_there() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.py", "02_delta_pipeline.py", "03_quantized_generation.py", "04_gpu_cluster.py",
        "05_extraction.py",
        "06_validation.py",
    ]


# ------------------------------------------------------------------------------------------ local fallbacks


def test_params_read_widgets_on_databricks_and_the_environment_locally() -> None:
    dbutils = FakeDbutils(rows="5")
    on_databricks = notebook.Params(dbutils)
    assert on_databricks.integer("rows", 8) == 5 and on_databricks.text("model", "/Volumes/m") == "/Volumes/m"
    assert dbutils.widgets.declared == {"rows": "8", "model": "/Volumes/m"}
    local = notebook.Params(environ={"SPARKINFER_NB_ROWS": "3", "SPARKINFER_NB_MODEL_DIR": "x"})
    assert (local.integer("rows", 8), local.text("model_dir", "d"), local.text("query", "q")) == (3, "x", "q")
    with pytest.raises(SpecError, match=r"rows must be an integer \(got 'many' from SPARKINFER_NB_ROWS\)"):
        notebook.Params(environ={"SPARKINFER_NB_ROWS": "many"}).integer("rows", 8)


def test_sample_docs_refuses_rows_outside_the_sample(minilm_path: str) -> None:
    with pytest.raises(SpecError, match=r"sample_docs holds 100 rows; rows=10, start=95 must pick 1 to 100 of them"):
        notebook.sample_docs(None, 10, start=95)  # checked before any Spark call
    assert notebook.bundled_minilm("/Volumes/x") == minilm_path


def test_gpu_cluster_confs_give_each_task_a_whole_gpu_and_its_share_of_cores() -> None:
    confs = notebook.gpu_cluster_confs(16, gpus_per_executor=2, discovery_script="/opt/gpus.sh")
    assert confs == {
        "spark.executor.resource.gpu.amount": "2",
        "spark.executor.resource.gpu.discoveryScript": "/opt/gpus.sh",
        "spark.task.resource.gpu.amount": "1",
        "spark.executor.cores": "16",
        "spark.task.cpus": "8",
    }
    with pytest.raises(SpecError, match="at least one core per GPU"):
        notebook.gpu_cluster_confs(1, gpus_per_executor=2)


# ------------------------------------------------------------------------------------------------ notebooks


@pytest.mark.spark
def test_01_quickstart_embeds_classifies_and_searches_in_sql(
    spark: Any, minilm_path: str, tiny_classifier: str, sample: list[dict[str, Any]],
    st_oracle: SentenceTransformerOracle,
) -> None:
    rows, query = 8, "read a file line by line"
    texts = {r["id"]: r["text"] for r in sample[:rows]}
    classifier = ClassifierOracle(tiny_classifier)
    with single_torch_thread():
        probs = {i: classifier.scores(t) for i, t in texts.items()}
        ranking = sorted(texts, key=lambda i: -float(st_oracle(texts[i]) @ st_oracle(query)))
    dbutils = FakeDbutils(classifier=tiny_classifier, rows=rows)

    ns = run_notebook("01_quickstart.py", spark=spark, dbutils=dbutils)

    assert dbutils.widgets.declared == {"model": minilm_path, "classifier": "", "rows": "8",
                                        "query": "read a file line by line"}
    embeddings = ns["embeddings"]
    assert_embeddings_match(dict(zip(embeddings.id, embeddings.embedding)), texts, st_oracle)
    predictions = ns["predictions"].set_index("id")
    assert sorted(predictions.index) == sorted(texts)
    for i, p in probs.items():
        assert predictions.label[i] == classifier.labels[int(p.argmax())]
        assert predictions.score[i] == pytest.approx(p.max(), abs=1e-5)
        assert [s["label"] for s in predictions.scores[i]] == classifier.labels  # return_all_scores
    assert len(set(predictions.label)) > 1  # the oracle tells rows apart
    hits = ns["hits"]
    assert list(hits.id) == ranking[:3]
    with single_torch_thread():
        expected = [float(st_oracle(texts[i]) @ st_oracle(query)) for i in hits.id]
    assert list(hits.cosine) == pytest.approx(expected, abs=1e-5)


@pytest.mark.spark
def test_02_delta_pipeline_without_databricks_globals_runs_incrementally(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample: list[dict[str, Any]],
    st_oracle: SentenceTransformerOracle,
) -> None:
    pytest.importorskip("deltalake")
    rows = 12
    for name, value in (("INPUT", tmp_path / "docs"), ("OUTPUT", tmp_path / "emb"), ("ROWS", rows)):
        monkeypatch.setenv(f"SPARKINFER_NB_{name}", str(value))

    ns = run_notebook("02_delta_pipeline.py")  # no spark, no dbutils: the active session, the environment

    assert ns["spark"] is spark and not ns["params"].on_databricks
    first, second, third = ns["first"], ns["second"], ns["third"]
    assert (first.rows_in, first.rows_skipped, first.rows_out) == (6, 0, 6)
    assert (second.rows_in, second.rows_skipped, second.rows_out) == (12, 6, 6)
    assert (third.rows_in, third.rows_skipped, third.rows_out, third.chunks) == (12, 12, 0, 0)
    assert first.delta_versions and second.delta_versions and not third.delta_versions
    assert first.fingerprint == second.fingerprint == third.fingerprint
    output = ns["output"]
    texts = {r["id"]: r["text"] for r in sample[:rows]}
    assert sorted(output.id) == sorted(texts)  # every key exactly once
    assert set(output.sparkinfer_fingerprint) == {first.fingerprint.id}
    assert_embeddings_match(dict(zip(output.id, output.embedding)), texts, st_oracle)
    on_disk = json.loads(Path(f"{tmp_path / 'emb'}.report.json").read_text())
    assert on_disk == ns["last_report"]
    assert (on_disk["rows_out"], on_disk["rows_skipped"], on_disk["errors"]) == (6, 6, 0)


@pytest.mark.spark
def test_04_gpu_cluster_prints_confs_measures_budgets_and_runs_the_job(
    spark: Any, tmp_path: Path, sample: list[dict[str, Any]], st_oracle: SentenceTransformerOracle,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows, budgets, chosen = 12, [256, 1024, 4096], 512
    dbutils = FakeDbutils(rows=rows, budgets=",".join(map(str, budgets)), batch_tokens=chosen, work_dir=tmp_path)

    with single_torch_thread():  # the budget probe runs the engine in this process
        ns = run_notebook("04_gpu_cluster.py", spark=spark, dbutils=dbutils)

    printed = capsys.readouterr().out
    assert ns["confs"]["spark.task.resource.gpu.amount"] == "1" and ns["confs"]["spark.task.cpus"] == "8"
    assert "  --conf spark.task.resource.gpu.amount=1 \\\n" in printed
    assert "spark.task.resource.gpu.amount=0.25 lets 4 tasks share cuda:0" in printed  # the real model's size
    probes = ns["probes"]
    assert [p.batch_tokens for p in probes] == budgets
    assert {(p.rows, p.real_tokens, p.device, p.peak_memory_bytes) for p in probes} == {
        (rows, probes[0].real_tokens, "cpu", None)
    }
    micro_batches = [p.micro_batches for p in probes]
    assert micro_batches == sorted(micro_batches, reverse=True) and micro_batches[0] > micro_batches[-1] == 1
    for p in probes:
        assert p.real_tokens <= p.padded_tokens <= p.micro_batches * p.batch_tokens
    minilm_params = sum(t.numel() for t in st_oracle.model.parameters())
    assert minilm_params * 4 <= probes[0].model_bytes < minilm_params * 4 * 1.01  # float32 on CPU
    report = ns["report"]
    engine = report.metrics
    assert (report.rows_out, engine.rows, engine.oom_splits, report.errors) == (rows, rows, 0, 0)
    assert engine.real_tokens == probes[0].real_tokens
    assert math.ceil(engine.padded_tokens / chosen) <= engine.micro_batches
    assert engine.padded_tokens <= engine.micro_batches * chosen
    assert "batch_tokens" not in report.fingerprint.fields
    table = pq.read_table(tmp_path / "docs_embeddings").to_pydict()
    texts = {r["id"]: r["text"] for r in sample[:rows]}
    assert_embeddings_match(dict(zip(table["id"], table["embedding"])), texts, st_oracle)


@pytest.mark.spark
def test_05_extraction_gives_the_schemas_columns_as_each_row_alone(
    spark: Any, tiny_extraction_lm: str, sample: list[dict[str, Any]]
) -> None:
    import pyarrow as pa

    from sparkinfer.engine import run
    from sparkinfer.spec import ModelSpec

    rows, new = 6, 200
    ddl = "summary varchar(60), kind varchar(12), arguments array<varchar(16)>, returns_none boolean"
    template = "Module {module}. Docstring: {text}\nAs JSON:"
    spec = ModelSpec(tiny_extraction_lm, task="extraction", schema=ddl, max_new_tokens=new, device="cpu")
    with single_torch_thread():
        expected = {r["id"]: run(spec, pa.array([template.format(**r)]))[0].to_pylist()[0] for r in sample[:rows]}
    dbutils = FakeDbutils(model=tiny_extraction_lm, rows=rows, max_new_tokens=new)

    ns = run_notebook("05_extraction.py", spark=spark, dbutils=dbutils)

    assert dbutils.widgets.declared["schema"] == ddl and dbutils.widgets.declared["template"] == template
    assert ns["extracted"].schema["fields"].dataType["value"].dataType.simpleString() == (
        "struct<summary:string,kind:string,arguments:array<string>,returns_none:boolean>")
    columns = ns["columns"]
    assert list(columns.columns) == ["id", "status", "summary", "kind", "arguments", "returns_none", "raw"]
    got = {
        row.id: {"status": row.status, "raw": row.raw, "value": None if row.status != "ok" else {
            "summary": row.summary, "kind": row.kind,
            "arguments": None if row.arguments is None else list(row.arguments), "returns_none": row.returns_none}}
        for row in columns.itertuples()
    }
    assert got == {i: {"status": e["status"], "raw": e["raw"], "value": e["value"]} for i, e in expected.items()}
    assert sum(e["status"] == "ok" for e in expected.values()) >= rows - 1
    assert int(ns["statuses"].sum()) == rows


# Last: the other notebooks use MiniLM, which the Python workers keep cached from one notebook to the next.
@pytest.mark.spark
@pytest.mark.parametrize("path", CPU_4BIT_PATHS)
def test_03_quantized_generation_equals_the_4bit_models_own_generate(
    spark: Any, monkeypatch: pytest.MonkeyPatch, tiny_causal_lm_4bit: str, sample: list[dict[str, Any]], path: str
) -> None:
    pytest.importorskip("bitsandbytes")
    use_cpu_4bit_path(monkeypatch, path)  # the driver's oracle; the workers' path is set around the notebook
    rows, new = 6, 12
    template = "Module {module}. Docstring: {text}\nOne-line summary:"
    oracle = GenerateOracle(tiny_causal_lm_4bit, causal=True, quantized=True, cpu_4bit_path=path)
    plain = GenerateOracle(tiny_causal_lm_4bit, causal=True)
    with single_torch_thread():
        expected = {r["id"]: oracle.details(template.format(**r), new) for r in sample[:rows]}
        float32 = {r["id"]: plain.details(template.format(**r), new) for r in sample[:rows]}
    assert float32 != expected  # so equality below shows that the 4-bit model ran
    assert {d["finish_reason"] for d in expected.values()} == {"stop", "length"}
    dbutils = FakeDbutils(model=tiny_causal_lm_4bit, rows=rows, max_new_tokens=new)

    with spark_cpu_4bit_path(spark, monkeypatch, path):
        ns = run_notebook("03_quantized_generation.py", spark=spark, dbutils=dbutils)

    assert dbutils.widgets.declared["quantization"] == "4bit" and dbutils.widgets.declared["template"] == template
    details = ns["details"]
    got = {
        row.id: {"text": row.text, "prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens,
                 "finish_reason": row.finish_reason}
        for row in details.itertuples()
    }
    assert got == expected
    finished = ns["finished"]
    assert finished.rows.sum() == rows
    assert finished.completion_tokens.sum() == sum(d["completion_tokens"] for d in expected.values())


@pytest.mark.spark
def test_06_validation_passes_rows_of_the_same_kind_and_fails_a_changed_upstream(
    spark: Any, tmp_path: Path, minilm_path: str, sample: list[dict[str, Any]], st_oracle: SentenceTransformerOracle,
) -> None:
    from collections import Counter

    from scipy.stats import ks_2samp, wasserstein_distance

    deltalake = pytest.importorskip("deltalake")
    rows, per_stratum = 50, 5
    table, reports = tmp_path / "doc_embeddings", tmp_path / "reports"
    dbutils = FakeDbutils(table=table, report_dir=reports)

    ns = run_notebook("06_validation.py", spark=spark, dbutils=dbutils)

    assert dbutils.widgets.declared["model"] == minilm_path
    assert (dbutils.widgets.declared["rows"], dbutils.widgets.declared["per_stratum"]) == (str(rows), str(per_stratum))
    # What each version holds, read with delta-rs alone: v0 and v1 the two halves of the sample, v2 v1's rows in
    # HTML markup.
    halves = [{r["id"]: r["text"] for r in sample[:rows]}, {r["id"]: r["text"] for r in sample[rows:2 * rows]}]
    texts = [*halves, {i: f'<div class="docstring"><p>{t}</p></div>' for i, t in halves[1].items()}]
    written = [deltalake.DeltaTable(str(table), version=v).to_pyarrow_table().to_pydict() for v in range(3)]
    assert [dict(zip(w["id"], w["text"])) for w in written] == texts
    assert deltalake.DeltaTable(str(table)).version() == 2
    for version in (0, 2):
        assert_embeddings_match(dict(zip(written[version]["id"], written[version]["embedding"])), texts[version],
                                st_oracle)

    report_1, report_2, report = ns["report_1"], ns["report_2"], ns["report"]
    # Run 1 against run 0: zero configuration, so the embedding column only; it passes.
    assert (report_1.current.source, report_1.reference.source) == (f"{table}@v1", f"{table}@v0")
    assert list(report_1.current.columns) == ["embedding"] and report_1.current.rows == rows
    assert report_1.passed, report_1.summary()
    assert {r.status for r in report_1.results if r.check.metric == "domain_auc"} == {"pass"}
    # Run 2 against run 1: the domain classifier separates them, and the centroid moved.
    assert report_2.reference.source == f"{table}@v1" and not report_2.passed
    assert {(r.check.column, r.check.metric) for r in report_2.failures} == {("embedding", "domain_auc")}
    assert report_2.metric("embedding", "domain_auc") > 0.9 and report_1.metric("embedding", "domain_auc") < 0.55
    assert report_2.metric("embedding", "null_rate") == 0.0
    with single_torch_thread():
        centroids = [np.mean([st_oracle(t) for t in version.values()], axis=0) for version in texts[1:]]
    cosine = float(centroids[0] @ centroids[1]) / float(np.linalg.norm(centroids[0]) * np.linalg.norm(centroids[1]))
    assert report_2.metric("embedding", "centroid_cosine") == pytest.approx(1.0 - cosine, abs=1e-5)
    assert ("embedding", "centroid_cosine") in {(r.check.column, r.check.metric) for r in report_2.warnings}
    # The user's checks replace the defaults on the same metric ("*": every profiled column); the text column's
    # length is profiled exactly.
    thresholds = {(r.check.column, r.check.metric): (r.check.threshold, r.check.severity) for r in report.results}
    assert thresholds[("embedding", "centroid_cosine")] == (0.02, "error")
    assert thresholds[("embedding", "null_rate")] == thresholds[("text", "null_rate")] == (0.0, "error")
    lengths = [np.array([len(t) for t in version.values()], dtype=float) for version in texts[1:]]
    assert report.metric("text", "length.wasserstein") == pytest.approx(
        wasserstein_distance(lengths[0], lengths[1]) / lengths[0].std(), rel=1e-9)
    # The markup adds 36 characters to every text: a shift scipy's KS test finds significant, as the check does.
    ks = ks_2samp(lengths[0], lengths[1], method="asymp")
    assert (report.metric("text", "length.ks"), report.metric("text", "length.ks_pvalue")) == pytest.approx(
        (ks.statistic, ks.pvalue), rel=1e-9)
    assert ks.pvalue < 0.01
    assert {(r.check.column, r.check.metric) for r in report.failures} == {
        ("embedding", "domain_auc"), ("embedding", "centroid_cosine"), ("text", "length.wasserstein")}
    assert ns["blocked"] == report.summary() and ns["blocked"].startswith("validation FAILED")

    html = Path(ns["html_path"]).read_text()
    assert Path(ns["html_path"]).parent == reports and "<svg" in html and "domain_auc" in html
    assert json.loads(Path(ns["json_path"]).read_text()) == json.loads(report.to_json())

    # The review sample: per_stratum rows of v2 from each text-length quintile (numpy's), and from the embeddings.
    review = ns["review_rows"]
    current = texts[2]
    edges = np.unique(np.quantile(lengths[1], [0.2, 0.4, 0.6, 0.8], method="inverted_cdf"))
    strata = {i: f"length bin {1 + int(np.sum(len(t) > edges))}/{len(edges) + 1}" for i, t in current.items()}
    assert len(set(strata.values())) == 5
    by_text = review[review.review_column == "text"]
    assert all(current[row.id] == row.text and strata[row.id] == row.review_stratum for row in by_text.itertuples())
    assert Counter(by_text.review_stratum) == {s: min(per_stratum, n) for s, n in Counter(strata.values()).items()}
    by_embedding = review[review.review_column == "embedding"]
    assert set(by_embedding.review_stratum) == {"all"} and len(by_embedding) == per_stratum
    assert all(current[row.id] == row.text for row in by_embedding.itertuples())
