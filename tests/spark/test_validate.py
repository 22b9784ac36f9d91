"""si.validate and si.review_sample on Spark: detection power at the default checks, false alarms on random
splits of one corpus, the references (Delta versions, stored profiles, Profile objects, JSON), exact
statistics against scipy, column selection, and the stratified review sample.

The predictions are built here, not predicted: these tests are about validation, not inference. Embeddings
are the real all-MiniLM-L6-v2 vectors of the docstring corpus (and of template sentences from other
domains), computed once per module with sentence-transformers in this process; classifications are derived
from them by a fixed random projection, so that every row differs. Tables are Parquet files written with
pyarrow, one file per partition, so that every profile merges the partials of several partitions.
"""

from __future__ import annotations

import functools
import itertools
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sparkinfer as si
from sparkinfer.errors import SpecError, TableError
from sparkinfer.spark.validate import profile, store_profile, stored_profile_path
from sparkinfer.validation.report import ValidationReport
from tests.spark.helpers import DOCS_PARQUET, single_torch_thread

pytestmark = pytest.mark.spark

LABELS = ("neg", "neu", "pos")
# MiniLM truncates at 256 tokens; 128 keeps the module's one encoding pass to about half the time, and
# validation only needs vectors that tell domains apart, not the vectors si.embed must reproduce.
MAX_SEQ_LENGTH = 128


# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Corpus:
    """The docstrings and the template sentences with their MiniLM vectors (float32, normalised)."""

    ids: npt.NDArray[np.int64]
    docs: list[str]
    doc_vectors: npt.NDArray[np.float32]
    other: list[str]
    other_vectors: npt.NDArray[np.float32]


def _other_domain(count: int) -> list[str]:
    """Recipe and sports sentences from templates: text far from any Python docstring."""
    rng = np.random.default_rng(11)
    recipes = (
        ("Whisk", "Fold", "Simmer", "Roast", "Season", "Knead"),
        ("the butter", "two eggs", "the garlic", "the chickpeas", "fresh basil", "the dough"),
        ("with a pinch of salt", "into the flour", "over low heat", "with olive oil", "until golden"),
        ("for ten minutes", "before serving", "and let it rest", "then chill overnight", "for half an hour"),
    )
    sports = (
        ("The home team", "Our striker", "The visiting side", "The veteran goalkeeper", "The rookie guard"),
        ("scored twice", "lost on penalties", "won the derby", "missed a late free throw", "set a new record"),
        ("in the second half", "at the cup final", "after extra time", "in front of a sold-out crowd"),
        ("last Saturday", "this season", "despite the rain", "for the third year running"),
    )
    sentences = []
    for i in range(count):
        parts = recipes if i % 2 == 0 else sports
        sentences.append(" ".join(str(rng.choice(p)) for p in parts) + ".")
    return sentences


@pytest.fixture(scope="module")
def corpus(minilm_path: str) -> Corpus:
    """MiniLM embeddings of the 600 docstrings and of 300 template sentences, from one encode call."""
    from sentence_transformers import SentenceTransformer

    table = pq.read_table(DOCS_PARQUET).sort_by("id")
    docs = table.column("text").to_pylist()
    other = _other_domain(300)
    with single_torch_thread():
        model = SentenceTransformer(minilm_path, device="cpu")
        model.max_seq_length = MAX_SEQ_LENGTH
        vectors = model.encode(docs + other, normalize_embeddings=True, convert_to_numpy=True)
    assert vectors.shape == (900, 384)
    return Corpus(np.asarray(table.column("id").to_pylist()), docs, vectors[:600], other, vectors[600:])


def _classifications(vectors: npt.NDArray[np.float32]) -> tuple[list[str], npt.NDArray[np.float64]]:
    """(label, score) per row from a fixed random projection of its embedding: deterministic, row-specific."""
    projection = np.random.default_rng(7).normal(size=(vectors.shape[1], len(LABELS))) * 4.0
    logits = vectors.astype(np.float64) @ projection
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return [LABELS[i] for i in probs.argmax(axis=1)], probs.max(axis=1)


def _classification(labels: Any, scores: Any) -> pa.StructArray:
    return pa.StructArray.from_arrays([pa.array(list(labels), pa.string()), pa.array(np.asarray(scores), pa.float64())],
                                      names=["label", "score"])


def _embedding(vectors: npt.NDArray[np.float32]) -> pa.Array:
    return pa.array(list(np.asarray(vectors, dtype=np.float32)), pa.list_(pa.float32()))


@pytest.fixture(scope="module")
def tables_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("validate")


@pytest.fixture(scope="module")
def frame(spark: Any, tables_dir: Path) -> Any:
    """``frame(columns, parts=2)``: a DataFrame of `columns` in `parts` partitions (one Parquet file each)."""

    def make(columns: dict[str, Any], parts: int = 2) -> Any:
        table = pa.table(columns)
        directory = tables_dir / uuid.uuid4().hex
        directory.mkdir()
        bounds = np.linspace(0, table.num_rows, parts + 1).astype(int)
        files = [str(directory / f"part-{i}.parquet") for i in range(parts)]
        for file, (start, stop) in zip(files, itertools.pairwise(bounds)):
            pq.write_table(table.slice(start, stop - start), file)
        # One scan per file: a single scan packs small files into fewer partitions than files.
        df = functools.reduce(lambda a, b: a.unionByName(b), (spark.read.parquet(f) for f in files))
        assert df.rdd.getNumPartitions() == parts
        return df

    return make


def _psi(reference: dict[str, int], current: dict[str, int]) -> float:
    """PSI from its definition, on categories that both sides have."""
    ref = np.array([reference[k] for k in LABELS], dtype=float)
    cur = np.array([current[k] for k in LABELS], dtype=float)
    ref, cur = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _labels(counts: dict[str, int], rng: np.random.Generator) -> list[str]:
    """Exactly `counts` of each label, shuffled."""
    labels = [label for label, n in counts.items() for _ in range(n)]
    return [labels[i] for i in rng.permutation(len(labels))]


def _failed(report: ValidationReport) -> set[tuple[str, str]]:
    return {(r.check.column, r.check.metric) for r in report.failures}


# ------------------------------------------------------------- 1. synthetic shifts at the default checks


def test_embeddings_of_another_text_domain_fail_domain_auc(corpus: Corpus, frame: Any) -> None:
    # First in the module, so that the MiniLM pass runs before Spark's first job. Docstrings against recipe
    # and sports sentences; random halves of the docstrings (the same distribution) must pass instead, in
    # test_random_halves_of_one_corpus_rarely_fail (its splits 0-2 train the classifier).
    reference = frame({"id": corpus.ids[:300], "embedding": _embedding(corpus.doc_vectors[:300])})
    current = frame({"id": np.arange(300), "embedding": _embedding(corpus.other_vectors)})
    report = si.validate(current, reference)
    assert report.metric("embedding", "domain_auc") > 0.95
    assert report.metric("embedding", "centroid_cosine") > 0.05  # the warn-level check fails too
    assert ("embedding", "domain_auc") in _failed(report), report.summary()


PRIORS = {"neg": 2500, "neu": 1500, "pos": 1000}  # 0.5 / 0.3 / 0.2 of 5000 rows
FLIPPED = {"neg": 1000, "neu": 1500, "pos": 2500}  # 0.2 / 0.3 / 0.5


def _classified(frame: Any, counts: dict[str, int], scores: npt.NDArray[np.float64], seed: int) -> Any:
    labels = _labels(counts, np.random.default_rng(seed))
    return frame({"id": np.arange(len(labels)), "prediction": _classification(labels, scores)})


def test_label_prior_shift_fails_label_psi_and_a_fresh_sample_passes(frame: Any) -> None:
    rng = np.random.default_rng(1)
    reference = _classified(frame, PRIORS, rng.beta(5, 2, 5000), seed=2)
    shifted = si.validate(_classified(frame, FLIPPED, rng.beta(5, 2, 5000), seed=3), reference)
    expected = _psi(PRIORS, FLIPPED)
    assert expected == pytest.approx(0.5498, abs=1e-4)  # 2 x 0.3 x ln 2.5
    assert shifted.metric("prediction", "label.psi") == pytest.approx(expected, rel=1e-9)
    assert _failed(shifted) == {("prediction", "label.psi")}, shifted.summary()
    # Same priors, new rows and new scores: nothing fails, and the PSI of equal counts is 0.
    same = si.validate(_classified(frame, PRIORS, rng.beta(5, 2, 5000), seed=4), reference)
    assert same.passed, same.summary()
    assert same.metric("prediction", "label.psi") == pytest.approx(0.0, abs=1e-12)
    assert same.metric("prediction", "score.wasserstein") < 0.06


@pytest.mark.parametrize(("shift", "fresh", "fails"), [
    (0.09, False, False),  # the same scores moved by 0.09 std: normalised Wasserstein exactly 0.09, passes
    (0.11, False, True),   # moved by 0.11 std: 0.11, above the default 0.1 (0.1 itself passes: the check is <=)
    (0.2, True, True),     # a new sample of the same scores, moved by 0.2 std
])
def test_score_shift_fails_score_wasserstein(frame: Any, shift: float, fresh: bool, fails: bool) -> None:
    rng = np.random.default_rng(5)
    scores = rng.beta(5, 2, 5000)
    reference = _classified(frame, PRIORS, scores, seed=6)
    moved = (rng.beta(5, 2, 5000) if fresh else scores) + shift * np.std(scores)
    report = si.validate(_classified(frame, PRIORS, moved, seed=6), reference)
    value = report.metric("prediction", "score.wasserstein")
    if fresh:
        assert value == pytest.approx(shift, abs=0.05)
    else:  # a translation: the Wasserstein distance is the shift itself
        assert value == pytest.approx(shift, rel=1e-9)
    assert _failed(report) == ({("prediction", "score.wasserstein")} if fails else set()), report.summary()


def _generations(lengths: npt.NDArray[np.int64], seed: int) -> pa.StructArray:
    rng = np.random.default_rng(seed)
    words = "the quick brown fox jumps over a lazy dog while it rains " * 40
    texts = [words[int(start):int(start) + int(n)] for start, n in zip(rng.integers(0, 60, len(lengths)), lengths)]
    assert [len(t) for t in texts] == lengths.tolist()
    reasons = np.where(rng.random(len(lengths)) < 0.05, "length", "stop")
    return pa.StructArray.from_arrays(
        [pa.array(texts), pa.array(rng.integers(5, 60, len(lengths)), pa.int32()),
         pa.array(lengths // 4 + 1, pa.int32()), pa.array(reasons.tolist())],
        names=["text", "prompt_tokens", "completion_tokens", "finish_reason"])


@pytest.mark.parametrize("shifted", [False, True], ids=["new-sample", "longer"])
def test_generation_length_shift_fails_length_wasserstein(frame: Any, shifted: bool) -> None:
    rng = np.random.default_rng(8)
    lengths = np.clip(rng.lognormal(5.0, 0.5, 4000), 1, 1500).astype(np.int64)
    reference = frame({"id": np.arange(4000), "generation": _generations(lengths, 9)})
    step = int(round(0.2 * np.std(lengths)))  # every text longer by 0.2 std (in whole characters)
    current_lengths = (lengths + step) if shifted else np.clip(rng.lognormal(5.0, 0.5, 4000), 1, 1500).astype(np.int64)
    report = si.validate(frame({"id": np.arange(4000), "generation": _generations(current_lengths, 10)}), reference)
    value = report.metric("generation", "length.wasserstein")
    if shifted:
        assert value == pytest.approx(step / np.std(lengths), rel=1e-9)
        assert value > 0.19
        assert _failed(report) == {("generation", "length.wasserstein")}, report.summary()
    else:
        assert value < 0.06
        assert report.passed, report.summary()
    assert report.metric("generation", "truncation_rate") == pytest.approx(
        np.mean(np.asarray(_generations(current_lengths, 10).field("finish_reason").to_pylist()) == "length"))


# ------------------------------------------------------- 2. random halves of one corpus: false alarms


SPLITS = 20
EMBEDDING_SPLITS = (0, 1, 2)  # these splits also profile the embedding column (the domain classifier)


@pytest.fixture(scope="module")
def halves(corpus: Corpus, frame: Any) -> Any:
    """The 600 docstrings' predictions; ``halves[s]`` is each row's half (0: reference, 1: current) in split s."""
    labels, scores = _classifications(corpus.doc_vectors)
    assert set(labels) == set(LABELS) and len(np.unique(scores)) == 600  # the rows differ
    rng = np.random.default_rng(2024)
    sides = np.stack([rng.permutation(600) % 2 for _ in range(SPLITS)], axis=1)
    return frame({"id": corpus.ids, "prediction": _classification(labels, scores),
                  "embedding": _embedding(corpus.doc_vectors),
                  "halves": pa.array(list(sides.astype(np.int8)), pa.list_(pa.int8()))})


def test_random_halves_of_one_corpus_rarely_fail(halves: Any) -> None:
    """Two random halves of one corpus are one distribution: at most 1 split in 20 may fail a default check.

    At 300 rows a side the Wasserstein distance over the reference's std between two samples of ONE
    distribution has a median near 0.09 (simulated: above the default 0.1 for ~40 % of the pairs, normal or
    beta), so the threshold alone fails about half the splits; the default checks also need the breach
    to be significant (their alpha, 0.01 on the KS / chi-square / AUC p-value) before they fail.
    """
    from pyspark.sql import functions as F

    lines, failed = [], []
    for split in range(SPLITS):
        columns = ["prediction", "embedding"] if split in EMBEDDING_SPLITS else ["prediction"]
        side = F.col("halves")[split]
        report = si.validate(halves.where(side == 1), halves.where(side == 0), columns=columns)
        assert (report.current.rows, report.reference.rows) == (300, 300)
        names = ["label.psi", "label.chi2_pvalue", "score.wasserstein", "score.ks", "score.ks_pvalue"]
        values = {m: report.metric("prediction", m) for m in names}
        if split in EMBEDDING_SPLITS:
            values.update({m: report.metric("embedding", m) for m in ("domain_auc", "domain_auc_pvalue",
                                                                      "centroid_cosine")})
        lines.append(f"split {split:2d}: {'pass' if report.passed else 'FAIL'} "
                     + " ".join(f"{k}={v:.4f}" for k, v in values.items())
                     + "".join(f" [{r.check.column} {r.check.metric}]" for r in report.failures))
        failed += [] if report.passed else [split]
    table = "\n".join(lines)
    print(table)
    assert len(failed) <= 1, f"{len(failed)} of {SPLITS} random halves failed:\n{table}"


# --------------------------------------------------------------------------------------- 3. references


@pytest.fixture(scope="module")
def versions(frame: Any, tables_dir: Path) -> tuple[str, Any, Any]:
    """A Delta table written twice: v0 with priors 0.5/0.3/0.2, v1 (an overwrite) with 0.2/0.3/0.5."""
    rng = np.random.default_rng(12)
    v0 = _classified(frame, {k: n // 10 for k, n in PRIORS.items()}, rng.beta(5, 2, 500), seed=13)
    v1 = _classified(frame, {k: n // 10 for k, n in FLIPPED.items()}, rng.beta(5, 2, 500), seed=14)
    path = str(tables_dir / "delta-versions")
    si.write_table(v0, path, "delta", "error")
    si.write_table(v1, path, "delta", "overwrite")
    return path, v0, v1


EXPECTED_PSI = _psi(PRIORS, FLIPPED)  # v0 and v1 have a tenth of these counts: the same proportions


def test_previous_compares_the_last_delta_version_with_the_one_before(
    spark: Any, versions: tuple[str, Any, Any]
) -> None:
    from sparkinfer.spark import tables

    path, _, _ = versions
    assert tables.delta_version(spark, path) == 1
    previous = si.validate(path, "previous")
    assert (previous.current.source, previous.reference.source) == (f"{path}@v1", f"{path}@v0")
    assert previous.metric("prediction", "label.psi") == pytest.approx(EXPECTED_PSI, rel=1e-9)
    assert _failed(previous) == {("prediction", "label.psi")}
    pinned = si.validate(path, f"{path}@v0")
    assert pinned.reference.source == f"{path}@v0"
    assert pinned.metric("prediction", "label.psi") == pytest.approx(EXPECTED_PSI, rel=1e-9)
    assert pinned.metric("prediction", "score.wasserstein") == previous.metric("prediction", "score.wasserstein")
    # Version 0 has nothing before it: only the rate checks run.
    first = si.validate(f"{path}@v0", "previous")
    assert first.reference is None and first.current.source == f"{path}@v0"
    assert {r.status for r in first.results if "." in r.check.metric} == {"skipped"}
    assert first.passed


def test_profile_object_and_json_references(spark: Any, versions: tuple[str, Any, Any], tables_dir: Path) -> None:
    path, v0, _ = versions
    reference = profile(si.read_table(spark, path, version=0), source="v0 rows")
    assert reference.rows == 500
    from_object = si.validate(path, reference)
    assert from_object.reference is reference
    json_path = str(tables_dir / "v0-profile.json")
    reference.save(json_path)
    from_json = si.validate(path, json_path)
    assert from_json.reference.source == "v0 rows"
    from_frame = si.validate(path, v0)
    for report in (from_object, from_json, from_frame):
        assert report.metric("prediction", "label.psi") == pytest.approx(EXPECTED_PSI, rel=1e-9)
        assert report.metric("prediction", "score.ks") == pytest.approx(
            from_object.metric("prediction", "score.ks"), abs=1e-12)


def test_a_stored_profile_replaces_reading_the_version(
    spark: Any, frame: Any, versions: tuple[str, Any, Any], tables_dir: Path
) -> None:
    from deltalake import DeltaTable

    # A copy of the table, since this test deletes v0's files.
    path = str(tables_dir / "delta-stored")
    _, v0, v1 = versions
    si.write_table(v0, path, "delta", "error")
    si.write_table(v1, path, "delta", "overwrite")
    # First proof: store the profile of v1's rows as v0's; the comparison follows it (no drift at all).
    decoy = profile(v1, source="v1 rows, stored as v0")
    assert store_profile(path, 0, decoy) == stored_profile_path(path, 0)
    report = si.validate(path, "previous")
    assert report.reference.source == "v1 rows, stored as v0"
    assert report.metric("prediction", "label.psi") == pytest.approx(0.0, abs=1e-12)
    assert report.metric("prediction", "score.wasserstein") == pytest.approx(0.0, abs=1e-12)
    assert report.passed, report.summary()
    # Second proof: store v0's true profile and delete v0's data files; both reference forms still work.
    store_profile(path, 0, profile(si.read_table(spark, path, version=0), source="v0, stored"))
    old_files = set(DeltaTable(path, version=0).file_uris()) - set(DeltaTable(path).file_uris())
    assert old_files
    for uri in old_files:
        Path(uri.removeprefix("file://")).unlink()
    for reference in ("previous", f"{path}@v0"):
        report = si.validate(path, reference)
        assert report.reference.source == "v0, stored"
        assert report.metric("prediction", "label.psi") == pytest.approx(EXPECTED_PSI, rel=1e-9)
    # Without the stored profile, v0 cannot be read any more: the profile above was all that was used.
    Path(stored_profile_path(path, 0)).unlink()
    with pytest.raises(Exception, match="(?i)not exist|not found|FileNotFound|No such file"):
        si.validate(path, "previous")


def test_bad_references(versions: tuple[str, Any, Any], tables_dir: Path) -> None:
    path, v0, _ = versions
    with pytest.raises(SpecError, match="reference='previous' needs the predictions as a Delta table path"):
        si.validate(v0, "previous")
    parquet = str(tables_dir / "plain-parquet")
    si.write_table(v0, parquet, "parquet", "error")
    with pytest.raises(SpecError, match="reference='previous'"):
        si.validate(parquet, "previous")
    missing = str(tables_dir / "no-such-table")
    for predictions, reference in ((missing, None), (path, missing)):
        with pytest.raises(TableError, match=f"no table at '{missing}'"):
            si.validate(predictions, reference)
    with pytest.raises(TableError, match="version 7"):
        si.validate(path, f"{path}@v7")


# ------------------------------------------------------------------ 4. exact statistics against scipy


def test_small_tables_give_scipys_statistics(frame: Any) -> None:
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency, ks_2samp, wasserstein_distance

    rng = np.random.default_rng(15)
    # Rounded to 0.01: many ties, within and across the two sides. Three partitions each.
    ref_scores, cur_scores = np.round(rng.beta(5, 2, 500), 2), np.round(rng.beta(4, 2, 700), 2)
    ref_labels = rng.choice(LABELS, 500, p=[0.5, 0.3, 0.2]).tolist()
    cur_labels = rng.choice(LABELS, 700, p=[0.4, 0.35, 0.25]).tolist()
    reference = frame({"prediction": _classification(ref_labels, ref_scores)}, parts=3)
    current = frame({"prediction": _classification(cur_labels, cur_scores)}, parts=3)
    report = si.validate(current, reference)

    assert report.metric("prediction", "score.ks") == pytest.approx(
        ks_2samp(ref_scores, cur_scores).statistic, abs=1e-6)
    assert report.metric("prediction", "score.ks_pvalue") == pytest.approx(
        ks_2samp(ref_scores, cur_scores, method="asymp").pvalue, abs=1e-6)
    assert report.metric("prediction", "score.wasserstein") == pytest.approx(
        wasserstein_distance(ref_scores, cur_scores) / np.std(ref_scores), abs=1e-6)
    ref_counts = {k: ref_labels.count(k) for k in LABELS}
    cur_counts = {k: cur_labels.count(k) for k in LABELS}
    assert report.metric("prediction", "label.psi") == pytest.approx(_psi(ref_counts, cur_counts), abs=1e-9)
    ref_p = np.array([ref_counts[k] for k in LABELS]) / 500
    cur_p = np.array([cur_counts[k] for k in LABELS]) / 700
    assert report.metric("prediction", "label.js") == pytest.approx(jensenshannon(ref_p, cur_p), abs=1e-9)
    chi2 = chi2_contingency(np.array([[ref_counts[k] for k in LABELS], [cur_counts[k] for k in LABELS]]),
                            correction=False)
    assert report.metric("prediction", "label.chi2") == pytest.approx(chi2.statistic, rel=1e-9)
    assert report.metric("prediction", "label.chi2_pvalue") == pytest.approx(chi2.pvalue, rel=1e-6, abs=1e-12)
    score = report.current.columns["prediction"].numeric["score"]
    assert score.exact and score.count == 700
    assert score.mean == pytest.approx(cur_scores.mean(), abs=1e-12)
    assert score.std == pytest.approx(cur_scores.std(), abs=1e-12)


# ------------------------------------------------------------------------------------------ 5. columns


@pytest.fixture(scope="module")
def mixed(frame: Any) -> Any:
    """id, text, summary (2 of 200 blank), prediction, embedding (dim 8), sparkinfer_fingerprint."""
    rng = np.random.default_rng(16)
    labels = rng.choice(LABELS, 200).tolist()
    summaries = [("" if i in (3, 77) else "summary " * int(n)) for i, n in enumerate(rng.integers(1, 30, 200))]
    return frame({
        "id": np.arange(200), "text": [f"document {i}" for i in range(200)], "summary": summaries,
        "prediction": _classification(labels, rng.random(200)),
        "embedding": _embedding(rng.normal(size=(200, 8)).astype(np.float32)),
        "sparkinfer_fingerprint": ["abc123"] * 200,
    })


def test_default_columns_are_the_prediction_typed_ones(mixed: Any) -> None:
    report = si.validate(mixed)
    assert {name: c.kind for name, c in report.current.columns.items()} == {
        "prediction": "classification", "embedding": "embedding"}
    assert report.reference is None and report.passed
    assert report.current.columns["embedding"].embedding.dim == 8
    assert {r.check.metric for r in report.results if r.status != "skipped"} == {"null_rate"}  # no reference


def test_explicit_text_column(mixed: Any) -> None:
    report = si.validate(mixed, columns={"summary": "text"})
    column = report.current.columns["summary"]
    assert (column.kind, column.rows, column.empty) == ("text", 200, 2)
    assert report.metric("summary", "empty_rate") == pytest.approx(0.01)
    lengths = [len(s) for s in mixed.select("summary").toPandas()["summary"]]
    assert column.numeric["length"].mean == pytest.approx(np.mean(lengths))
    assert report.passed


@pytest.mark.parametrize(("columns", "message"), [
    ({"text": "classification"}, "cannot be profiled as 'classification'"),
    ({"prediction": "embedding"}, "cannot be profiled as 'embedding'"),
    ({"embedding": "text"}, "cannot be profiled as 'text'"),
    ({"summary": "sentiment"}, "kind must be one of"),
    ({"missing": "text"}, "which the table does not have"),
])
def test_a_wrong_kind_is_a_spec_error(mixed: Any, columns: dict[str, str], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        si.validate(mixed, columns=columns)


@pytest.mark.parametrize(("errors", "fails"), [(1, False), (3, True)])
def test_on_error_column_counts_errors(frame: Any, errors: int, fails: bool) -> None:
    rng = np.random.default_rng(17)
    labels, scores = rng.choice(LABELS, 200).tolist(), rng.random(200)
    failed = set(rng.choice(200, errors, replace=False).tolist())
    result = pa.StructArray.from_arrays(
        [pa.array(labels), pa.array(scores)], names=["label", "score"],
        mask=pa.array([i in failed for i in range(200)]))
    error = pa.array([("ValueError: bad row" if i in failed else None) for i in range(200)], pa.string())
    column = pa.StructArray.from_arrays([result, error], names=["result", "error"])
    report = si.validate(frame({"id": np.arange(200), "prediction": column}))
    profiled = report.current.columns["prediction"]
    assert (profiled.kind, profiled.errors, profiled.nulls) == ("classification", errors, errors)
    assert sum(profiled.categorical["label"].counts.values()) == 200 - errors
    assert report.metric("prediction", "error_rate") == pytest.approx(errors / 200)
    assert _failed(report) == ({("prediction", "error_rate")} if fails else set()), report.summary()


# ------------------------------------------------------------------------------------ 6. review_sample


REVIEW_COUNTS = {"neg": 14000, "neu": 5800, "pos": 200, "rare": 7}  # 20,007 rows: a 1 % label, a 7-row one


def test_review_sample_takes_per_stratum_rows_of_every_stratum(spark: Any, frame: Any) -> None:
    rng = np.random.default_rng(18)
    labels = [label for label, n in REVIEW_COUNTS.items() for _ in range(n)]
    scores = rng.beta(5, 2, len(labels))
    df = frame({"id": np.arange(len(labels)), "prediction": _classification(labels, scores)})
    profiled = profile(df, exact_max=50_000)  # exact quantiles: the strata below are computed from the rows
    edges = np.unique(np.quantile(scores, [0.2, 0.4, 0.6, 0.8], method="inverted_cdf"))
    bins = np.searchsorted(edges, scores, side="left") + 1  # bin k + 1 holds the values above k edges
    truth = [f"label={label}, score bin {b}/{len(edges) + 1}" for label, b in zip(labels, bins)]
    per_stratum = 20
    sample = si.review_sample(df, profiled, per_stratum=per_stratum).toPandas()

    assert list(sample.columns) == ["id", "prediction", "review_column", "review_stratum"]
    assert set(sample["review_column"]) == {"prediction"}
    assert sample["id"].is_unique
    assert all(sample["review_stratum"] == [truth[i] for i in sample["id"]])  # every row in its own stratum
    want = {s: min(per_stratum, n) for s, n in zip(*np.unique(truth, return_counts=True))}
    got = sample["review_stratum"].value_counts().to_dict()
    assert got == want  # every stratum, with per_stratum rows where it has them, all of them where not
    assert {s.split(",")[0] for s in got} == {f"label={k}" for k in REVIEW_COUNTS}
    assert sum(n for s, n in got.items() if s.startswith("label=rare")) == 7


def test_review_sample_profiles_when_given_no_profile(frame: Any) -> None:
    labels = ["neg"] * 50 + ["pos"] * 3
    df = frame({"id": np.arange(53), "label": labels})
    sample = si.review_sample(df, columns={"label": "labels"}, per_stratum=10, seed=3).toPandas()
    assert sample.groupby("review_stratum").size().to_dict() == {"value=neg": 10, "value=pos": 3}
    assert set(sample.loc[sample["review_stratum"] == "value=pos", "id"]) == {50, 51, 52}
