"""sparkinfer.validation without Spark: every statistic against scipy on the raw values.

The oracle is scipy (``wasserstein_distance``, ``ks_2samp``, ``jensenshannon``, ``chi2_contingency``) and
numpy on the rows themselves; the code under test only ever sees Distributions and Arrow batches. The
one-pass tests build Arrow batches of every prediction kind, with null rows whose children still hold
values (a null struct's children are not nulls in Arrow, so code that reads them unmasked counts them),
feed them to several Accumulators ("partitions"), merge, and compare with the rows.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from sparkinfer.errors import SpecError
from sparkinfer.validation import stats
from sparkinfer.validation.checks import Check, default_checks, load_checks, metric_names, resolve
from sparkinfer.validation.partial import Accumulator, Settings, merge
from sparkinfer.validation.profile import Profile
from sparkinfer.validation.report import MIN_SAMPLE, ValidationError, ValidationReport, compare
from sparkinfer.validation.stats import Distribution

TOL = 1e-6
LABELS = ("pos", "neg", "neu")
ENTITIES = ("PER", "ORG", "LOC")
KINDS = {"cls": "classification", "emb": "embedding", "gen": "generation", "ext": "extraction",
         "tok": "token_classification", "scores": "scores", "text": "text", "lab": "labels",
         "wrapped": "classification"}


# ------------------------------------------------------------------------------------ raw data → Arrow


def _texts(rng: np.random.Generator, rows: int) -> list[str]:
    """Words with non-ASCII letters (characters, not bytes, are counted), some empty or blank."""
    pool = ["", "  ", " \t\n", "café", "naïve résumé", "ok", "a longer answer here", "x" * 40, "déjà vu"]
    return [pool[i] if i < 3 else pool[i] * int(rng.integers(1, 4)) for i in rng.integers(0, len(pool), rows)]


def _predictions(seed: int, rows: int = 600, *, label_p: tuple[float, ...] = (0.5, 0.3, 0.2),
                 error_p: float = 0.05, shift: float = 0.0) -> tuple[pa.RecordBatch, dict[str, Any]]:
    """A batch with one column of each kind, and what the profile must find in it, from the rows.

    Null rows of struct and list columns keep values in their children ("zzz" labels, "length" finish
    reasons, blank texts, entities), which a profile must not count.
    """
    rng = np.random.default_rng(seed)
    null = rng.random((9, rows)) < 0.1
    raw: dict[str, Any] = {}

    # classification: struct<label, score>
    labels = rng.choice(LABELS, rows, p=label_p).astype(object)
    scores = np.round(rng.random(rows), 2) + shift  # rounded: ties
    labels[null[0]], scores[null[0]] = "zzz", 9.99
    cls = pa.StructArray.from_arrays([pa.array(labels, pa.string()), pa.array(scores)], names=["label", "score"],
                                     mask=pa.array(null[0]))
    raw["cls"] = {"nulls": int(null[0].sum()), "label": Counter(labels[~null[0]].tolist()),
                  "score": scores[~null[0]]}

    # embedding: list<float>, dim 4
    vectors = (rng.normal(size=(rows, 4)) + 0.5 + shift).astype(np.float32)
    emb = pa.ListArray.from_arrays(pa.array(np.arange(0, 4 * rows + 1, 4), pa.int32()),
                                   pa.array(vectors.ravel(), pa.float32()), mask=pa.array(null[1]))
    valid_vectors = vectors[~null[1]].astype(np.float64)
    raw["emb"] = {"nulls": int(null[1].sum()), "vectors": valid_vectors,
                  "norm": np.linalg.norm(valid_vectors, axis=1)}

    # generation: struct<text, prompt_tokens, completion_tokens, finish_reason>
    texts = np.array(_texts(rng, rows), dtype=object)
    reasons = rng.choice(["stop", "length"], rows, p=[0.8, 0.2]).astype(object)
    completion = rng.integers(1, 60, rows).astype(np.int32)
    texts[null[2]], reasons[null[2]] = "", "length"
    gen = pa.StructArray.from_arrays(
        [pa.array(texts, pa.string()), pa.array(rng.integers(1, 30, rows).astype(np.int32)), pa.array(completion),
         pa.array(reasons, pa.string())],
        fields=[pa.field("text", pa.string()), pa.field("prompt_tokens", pa.int32()),
                pa.field("completion_tokens", pa.int32()), pa.field("finish_reason", pa.string())],
        mask=pa.array(null[2]))
    ok = ~null[2]
    raw["gen"] = {"nulls": int(null[2].sum()), "truncated": int((reasons[ok] == "length").sum()),
                  "empty": sum(t.strip() == "" for t in texts[ok]), "finish_reason": Counter(reasons[ok].tolist()),
                  "length": np.array([len(t) for t in texts[ok]], float),
                  "completion_tokens": completion[ok].astype(float)}

    # extraction: struct<value struct<name, age>, status, raw>
    statuses = rng.choice(["ok", "invalid", "truncated"], rows, p=[0.9, 0.03, 0.07]).astype(object)
    raws = np.array(_texts(rng, rows), dtype=object)
    statuses[null[3]], raws[null[3]] = "truncated", ""
    value = pa.StructArray.from_arrays([pa.array(["n"] * rows), pa.array(np.arange(rows, dtype=np.int32))],
                                       names=["name", "age"])
    ext = pa.StructArray.from_arrays([value, pa.array(statuses, pa.string()), pa.array(raws, pa.string())],
                                     names=["value", "status", "raw"], mask=pa.array(null[3]))
    ok = ~null[3]
    raw["ext"] = {"nulls": int(null[3].sum()), "truncated": int((statuses[ok] == "truncated").sum()),
                  "invalid": int((statuses[ok] == "invalid").sum()),
                  "empty": sum(t.strip() == "" for t in raws[ok]), "status": Counter(statuses[ok].tolist()),
                  "length": np.array([len(t) for t in raws[ok]], float)}

    # token_classification: list<struct<entity, word, score, start int32, end int32>>
    per_row = rng.integers(0, 4, rows)
    per_row[null[4]] = 2  # null rows keep entities underneath
    total = int(per_row.sum())
    entity_names = rng.choice(ENTITIES, total).astype(object)
    owner = np.repeat(np.arange(rows), per_row)
    entity_names[null[4][owner]] = "ZZZ"
    entity = pa.StructArray.from_arrays(
        [pa.array(entity_names, pa.string()), pa.array(["w"] * total), pa.array(rng.random(total)),
         pa.array(np.zeros(total, np.int32)), pa.array(np.ones(total, np.int32))],
        names=["entity", "word", "score", "start", "end"])
    tok = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(per_row)]), pa.int32()), entity,
                                   mask=pa.array(null[4]))
    raw["tok"] = {"nulls": int(null[4].sum()), "entities": per_row[~null[4]].astype(float),
                  "entity": Counter(entity_names[~null[4][owner]].tolist())}

    # scores: double; text: string; labels: string (plain nullable columns)
    values = np.round(rng.normal(3.0, 2.0, rows) + shift, 1)
    raw["scores"] = {"nulls": int(null[5].sum()), "value": values[~null[5]]}
    plain_texts = _texts(rng, rows)
    valid_texts = [t for t, n in zip(plain_texts, null[6]) if not n]
    raw["text"] = {"nulls": int(null[6].sum()), "length": np.array([len(t) for t in valid_texts], float),
                   "empty": sum(t.strip() == "" for t in valid_texts)}
    plain_labels = rng.choice(LABELS, rows).tolist()
    raw["lab"] = {"nulls": int(null[8].sum()), "value": Counter(v for v, n in zip(plain_labels, null[8]) if not n)}

    # on_error="column": struct<result: struct<label, score>, error: string>; failed rows have a null result
    # and an error; null outer rows keep a result ("zzz") and an error underneath.
    outer = null[7]
    failed = (rng.random(rows) < error_p) & ~outer
    wrapped_labels = rng.choice(LABELS, rows).astype(object)
    wrapped_labels[outer] = "zzz"
    result = pa.StructArray.from_arrays([pa.array(wrapped_labels, pa.string()), pa.array(rng.random(rows))],
                                        names=["label", "score"], mask=pa.array(failed))
    error = pa.array(["boom" if f or o else None for f, o in zip(failed, outer)], pa.string())
    wrapped = pa.StructArray.from_arrays([result, error], names=["result", "error"], mask=pa.array(outer))
    raw["wrapped"] = {"nulls": int((outer | failed).sum()), "errors": int(failed.sum()),
                      "label": Counter(wrapped_labels[~outer & ~failed].tolist())}

    batch = pa.RecordBatch.from_arrays(
        [cls, emb, gen, ext, tok, pa.array([None if n else v for v, n in zip(values.tolist(), null[5])], pa.float64()),
         pa.array([None if n else t for t, n in zip(plain_texts, null[6])], pa.string()),
         pa.array([None if n else v for v, n in zip(plain_labels, null[8])], pa.string()), wrapped],
        names=list(KINDS))
    return batch, raw


def _partials(batch: pa.RecordBatch, settings: Settings, partitions: int = 3, chunk: int = 97) -> list[bytes]:
    """One partial per partition, each fed uneven slices (Arrow offsets); the last gets a two-chunk Table."""
    cuts = np.linspace(0, batch.num_rows, partitions + 1).astype(int)
    out = []
    for p in range(partitions):
        accumulator = Accumulator(settings, partition=p)
        part = batch.slice(cuts[p], cuts[p + 1] - cuts[p])
        if p == partitions - 1:
            accumulator.update(pa.Table.from_batches([part.slice(0, 50), part.slice(50)]))
        else:
            for start in range(0, part.num_rows, chunk):
                accumulator.update(part.slice(start, chunk))
        out.append(accumulator.finish())
    return out


def _profile(batch: pa.RecordBatch, settings: Settings, **merge_options: Any) -> Profile:
    return merge(_partials(batch, settings)[::-1], settings, rows=batch.num_rows, **merge_options)


def _settings(kinds: dict[str, str] | None = None, **options: Any) -> Settings:
    chosen = KINDS if kinds is None else kinds
    return Settings(kinds=chosen, unwrap=frozenset({"wrapped"} & set(chosen)), **options)


def _expanded(d: Distribution) -> np.ndarray:
    """The values an exact distribution stands for, sorted."""
    assert d.exact and all(w == int(w) for w in d.weights)
    return np.repeat(np.asarray(d.points), np.asarray(d.weights, dtype=int))


# ------------------------------------------------------------------------------ 1. exact path vs scipy


def _numeric_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    return [
        ("normal", rng.normal(0, 1, 200), rng.normal(0.3, 1.2, 317)),
        ("discrete-ties", rng.integers(0, 5, 150).astype(float), rng.integers(1, 7, 401).astype(float)),
        ("rounded-exponential", np.round(rng.exponential(2.0, 500), 1), np.round(rng.exponential(2.5, 77), 1)),
        ("tiny-vs-large", rng.normal(0, 1, 3), rng.normal(0, 1, 1000)),
        ("same-support", rng.choice([0.0, 1.0], 90, p=[0.3, 0.7]), rng.choice([0.0, 1.0], 130, p=[0.6, 0.4])),
    ]


@pytest.mark.parametrize(("name", "a", "b"), _numeric_pairs(), ids=[p[0] for p in _numeric_pairs()])
def test_exact_numeric_statistics_equal_scipy(name: str, a: np.ndarray, b: np.ndarray) -> None:
    ref, cur = Distribution.from_values(a), Distribution.from_values(b)
    assert ref.exact and ref.count == len(a) and sum(ref.weights) == len(a)
    assert ref.mean == pytest.approx(np.mean(a), rel=1e-12) and ref.std == pytest.approx(np.std(a), rel=1e-12)
    assert (ref.min, ref.max) == (a.min(), a.max())

    expected_w = sps.wasserstein_distance(a, b)
    assert expected_w > 0.01  # the samples differ, so a zero would not pass
    assert stats.wasserstein(ref, cur) == pytest.approx(expected_w, abs=TOL)
    assert stats.normed_wasserstein(ref, cur) == pytest.approx(expected_w / np.std(a), abs=TOL)

    statistic, pvalue = stats.ks(ref, cur)
    assert statistic == pytest.approx(sps.ks_2samp(a, b).statistic, abs=TOL)
    assert pvalue == pytest.approx(sps.ks_2samp(a, b, method="asymp").pvalue, abs=TOL)
    assert stats.sketch_bounds(ref, cur) == {"ks": 0.0, "wasserstein": 0.0}


def test_exact_statistics_are_not_symmetric_where_scipy_is_not() -> None:
    a, b = _numeric_pairs()[0][1:]
    ref, cur = Distribution.from_values(a), Distribution.from_values(b)
    # normed by the *reference's* std: swapping the sides changes the value as scipy / np.std says
    assert stats.normed_wasserstein(cur, ref) == pytest.approx(sps.wasserstein_distance(a, b) / np.std(b), abs=TOL)
    assert stats.normed_wasserstein(cur, ref) != pytest.approx(stats.normed_wasserstein(ref, cur), abs=1e-3)


def test_wasserstein_scale_floors_a_near_constant_reference() -> None:
    a = 1.0 + np.random.default_rng(0).normal(0, 1e-9, 100)  # unit embedding norms with float noise
    b = a + 1e-6
    ref = Distribution.from_values(a)
    assert stats.wasserstein_scale(ref) == pytest.approx(1e-3 * abs(np.mean(a)), rel=1e-12)
    assert stats.normed_wasserstein(ref, Distribution.from_values(b)) == pytest.approx(
        sps.wasserstein_distance(a, b) / 1e-3, rel=1e-6)


def test_cdf_is_right_continuous_and_weighted() -> None:
    d = Distribution.from_values([1.0, 2.0, 2.0, 3.0])
    assert d.cdf(np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 9.0])).tolist() == [0.0, 0.25, 0.25, 0.75, 0.75, 1.0, 1.0]
    edges = np.array([0.0, 1.5, 3.0])
    np.testing.assert_array_equal(d.histogram(edges), np.histogram([1.0, 2.0, 2.0, 3.0], bins=edges)[0])


def test_statistics_of_an_empty_side_raise() -> None:
    empty, one = Distribution.from_values([]), Distribution.from_values([1.0])
    assert empty.count == 0 and math.isnan(empty.mean)
    for statistic in (stats.wasserstein, stats.ks):
        with pytest.raises(ValueError, match="empty distribution"):
            statistic(empty, one)
    with pytest.raises(ValueError, match="empty distribution"):
        stats.psi({"a": 0}, {"a": 3})


def _categorical_pairs() -> list[tuple[str, dict[str, float], dict[str, float]]]:
    rng = np.random.default_rng(11)
    return [
        ("shifted", dict(zip("abc", rng.multinomial(500, [0.5, 0.3, 0.2]).tolist())),
         dict(zip("abc", rng.multinomial(321, [0.2, 0.3, 0.5]).tolist()))),
        ("category-missing-on-one-side", {"a": 40, "b": 60, "c": 5}, {"a": 50, "b": 70, "d": 9}),
        ("zero-count-on-both-sides", {"a": 10, "b": 20, "z": 0}, {"a": 30, "b": 5, "z": 0}),
        ("many", {str(i): int(n) for i, n in enumerate(rng.integers(1, 100, 30))},
         {str(i): int(n) for i, n in enumerate(rng.integers(1, 100, 30))}),
    ]


def _proportions(ref: dict[str, float], cur: dict[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    keys = sorted(set(ref) | set(cur))
    p = np.array([ref.get(k, 0) for k in keys], float)
    q = np.array([cur.get(k, 0) for k in keys], float)
    return keys, p / p.sum(), q / q.sum()


@pytest.mark.parametrize(("name", "ref", "cur"), _categorical_pairs(), ids=[p[0] for p in _categorical_pairs()])
def test_categorical_statistics_equal_scipy(name: str, ref: dict[str, float], cur: dict[str, float]) -> None:
    keys, p, q = _proportions(ref, cur)
    assert stats.js_distance(ref, cur) == pytest.approx(jensenshannon(p, q), abs=TOL)
    assert stats.js_distance(ref, cur) > 0.01

    # PSI: zero proportions replaced by the documented epsilon, then sum (q - p) ln(q / p)
    assert stats.PSI_EPSILON == 1e-4
    expected_psi = 0.0
    for pi, qi in zip(p, q):
        pi, qi = pi or 1e-4, qi or 1e-4
        expected_psi += (qi - pi) * math.log(qi / pi)
    assert stats.psi(ref, cur) == pytest.approx(expected_psi, abs=TOL)

    table = np.array([[ref.get(k, 0) for k in keys], [cur.get(k, 0) for k in keys]], float)
    table = table[:, table.sum(axis=0) > 0]  # scipy refuses a category no one has
    expected = sps.chi2_contingency(table, correction=False)
    statistic, pvalue = stats.chi_square(ref, cur)
    assert statistic == pytest.approx(expected.statistic, rel=TOL)
    assert pvalue == pytest.approx(expected.pvalue, abs=TOL)


def test_psi_of_a_known_shift() -> None:
    # 50/50 → 80/20: (0.3 ln 1.6) + (-0.3 ln 0.4), computed by hand
    assert stats.psi({"a": 50, "b": 50}, {"a": 80, "b": 20}) == pytest.approx(0.3 * math.log(1.6) - 0.3 * math.log(0.4))
    assert stats.psi({"a": 1, "b": 1}, {"a": 7, "b": 7}) == 0.0


def test_chi_square_of_a_single_category_is_no_evidence() -> None:
    assert stats.chi_square({"a": 10}, {"a": 99}) == (0.0, 1.0)


def test_cosine_distance_equals_scipy() -> None:
    from scipy.spatial.distance import cosine

    x, y = np.random.default_rng(3).normal(size=(2, 16))
    assert stats.cosine_distance(x, y) == pytest.approx(cosine(x, y), abs=1e-12)
    assert stats.cosine_distance(x, 3 * x) == pytest.approx(0.0, abs=1e-12)
    assert stats.cosine_distance(x, -x) == pytest.approx(2.0, abs=1e-12)


# ------------------------------------------------------------------- 2. the one-pass partials, merged


@pytest.fixture(scope="module")
def dataset() -> tuple[pa.RecordBatch, dict[str, Any], Profile]:
    batch, raw = _predictions(1)
    return batch, raw, _profile(batch, _settings(sample_fraction=0.5))


def test_merged_counts_equal_the_rows(dataset: tuple[pa.RecordBatch, dict[str, Any], Profile]) -> None:
    batch, raw, profiled = dataset
    assert profiled.rows == batch.num_rows == 600
    for name, kind in KINDS.items():
        column = profiled.columns[name]
        assert (column.kind, column.rows, column.nulls) == (kind, 600, raw[name]["nulls"]), name
        assert column.nulls > 0, name  # every column has nulls, so a zero would not pass
    c = profiled.columns
    assert c["wrapped"].errors == raw["wrapped"]["errors"] > 0
    assert all(c[n].errors is None for n in KINDS if n != "wrapped")  # unknown, not 0
    assert (c["gen"].truncated, c["gen"].empty) == (raw["gen"]["truncated"], raw["gen"]["empty"])
    assert (c["ext"].truncated, c["ext"].empty) == (raw["ext"]["truncated"], raw["ext"]["empty"])
    assert c["text"].empty == raw["text"]["empty"] > 0
    assert (c["gen"].empty or 0) > 0 and (c["ext"].empty or 0) > 0
    assert c["cls"].truncated is None and c["cls"].empty is None
    assert c["wrapped"].rate("error_rate") == pytest.approx(raw["wrapped"]["errors"] / 600)


def test_merged_categorical_counts_equal_the_rows(dataset: tuple[pa.RecordBatch, dict[str, Any], Profile]) -> None:
    _, raw, profiled = dataset
    c = profiled.columns
    for column, field in (("cls", "label"), ("wrapped", "label"), ("gen", "finish_reason"), ("ext", "status"),
                          ("tok", "entity"), ("lab", "value")):
        categorical = c[column].categorical[field]
        assert dict(categorical.counts) == dict(raw[column][field]), (column, field)
        assert categorical.other == 0
        assert all(type(n) is int for n in categorical.counts.values())  # JSON-able, not numpy ints
    assert "zzz" not in c["cls"].categorical["label"].counts  # from null rows' children
    assert "ZZZ" not in c["tok"].categorical["entity"].counts


def test_merged_embeddings_equal_numpy(dataset: tuple[pa.RecordBatch, dict[str, Any], Profile]) -> None:
    _, raw, profiled = dataset
    embedding = profiled.columns["emb"].embedding
    assert embedding is not None and embedding.dim == 4
    np.testing.assert_allclose(embedding.centroid, raw["emb"]["vectors"].mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(_expanded(profiled.columns["emb"].numeric["norm"]), np.sort(raw["emb"]["norm"]),
                               rtol=1e-12)
    # the sample (fraction 0.5) holds valid rows only, each once
    sample = embedding.sample.astype(np.float64)
    valid = {tuple(v) for v in raw["emb"]["vectors"]}
    assert 0.3 * len(valid) < len(sample) < 0.7 * len(valid)
    assert all(tuple(v) in valid for v in sample) and len({tuple(v) for v in sample}) == len(sample)


def test_merge_trims_the_sample_and_adds_known_counts() -> None:
    batch, raw = _predictions(1)
    settings = _settings({"emb": "embedding", "cls": "classification", "gen": "generation"}, sample_fraction=1.0)
    profiled = _profile(batch, settings, sample_rows=20,
                        known={"cls": {"errors": 3, "truncated": 2}, "gen": {"truncated": 999}})
    embedding = profiled.columns["emb"].embedding
    assert embedding is not None and embedding.sample.shape == (20, 4)
    assert (profiled.columns["cls"].errors, profiled.columns["cls"].truncated) == (3, 2)
    assert profiled.columns["gen"].truncated == raw["gen"]["truncated"]  # the column's own count wins


NUMERIC = [("cls", "score"), ("wrapped", "score"), ("emb", "norm"), ("gen", "length"), ("gen", "completion_tokens"),
           ("ext", "length"), ("tok", "entities"), ("scores", "value"), ("text", "length")]


def test_merged_exact_distributions_equal_scipy(dataset: tuple[pa.RecordBatch, dict[str, Any], Profile]) -> None:
    _, raw_ref, reference = dataset
    batch, raw_cur = _predictions(2, rows=457, shift=0.2)
    current = _profile(batch, _settings())
    for column, field in NUMERIC:
        ref_d, cur_d = reference.columns[column].numeric[field], current.columns[column].numeric[field]
        if column == "wrapped":  # no raw values kept for it: check only that it is exact and sized right
            assert ref_d.exact and ref_d.count == 600 - raw_ref["wrapped"]["nulls"]
            continue
        a, b = raw_ref[column][field], raw_cur[column][field]
        assert ref_d.exact and cur_d.exact and (ref_d.count, cur_d.count) == (len(a), len(b)), (column, field)
        np.testing.assert_allclose(_expanded(ref_d), np.sort(a), rtol=1e-12)  # norms: einsum vs linalg.norm
        assert ref_d.mean == pytest.approx(np.mean(a), rel=1e-12) and ref_d.std == pytest.approx(np.std(a), rel=1e-12)
        expected_w = sps.wasserstein_distance(a, b)
        assert stats.wasserstein(ref_d, cur_d) == pytest.approx(expected_w, abs=TOL), (column, field)
        assert stats.normed_wasserstein(ref_d, cur_d) == pytest.approx(expected_w / np.std(a), abs=TOL)
        statistic, pvalue = stats.ks(ref_d, cur_d)
        assert statistic == pytest.approx(sps.ks_2samp(a, b).statistic, abs=TOL), (column, field)
        assert pvalue == pytest.approx(sps.ks_2samp(a, b, method="asymp").pvalue, abs=TOL)


def _one_column(kind: str, array: pa.Array, *, unwrap: bool = False) -> Profile:
    settings = Settings(kinds={"c": kind}, unwrap=frozenset({"c"}) if unwrap else frozenset())
    halves = [array.slice(0, 2), array.slice(2)]  # two partitions, the second at an offset
    partials = []
    for p, half in enumerate(halves):
        accumulator = Accumulator(settings, partition=p)
        accumulator.update(pa.RecordBatch.from_arrays([half], names=["c"]))
        partials.append(accumulator.finish())
    return merge(partials, settings, rows=len(array))


def test_a_null_struct_row_whose_children_hold_values_is_one_null() -> None:
    cls = pa.StructArray.from_arrays([pa.array(["a", "zzz", "b", "zzz"]), pa.array([0.1, 9.0, 0.3, 9.0])],
                                     names=["label", "score"], mask=pa.array([False, True, False, True]))
    assert cls.field("label").null_count == 0  # Arrow's trap: the children do not know
    column = _one_column("classification", cls).columns["c"]
    assert (column.rows, column.nulls) == (4, 2)
    assert dict(column.categorical["label"].counts) == {"a": 1, "b": 1}
    assert column.numeric["score"].points == (0.1, 0.3)


def test_a_null_generation_row_is_not_truncated_or_empty() -> None:
    gen = pa.StructArray.from_arrays(
        [pa.array(["fine", "", "  ", "ok"]), pa.array([1, 2, 3, 4], pa.int32()), pa.array([5, 6, 7, 8], pa.int32()),
         pa.array(["stop", "length", "length", "stop"])],
        names=["text", "prompt_tokens", "completion_tokens", "finish_reason"],
        mask=pa.array([False, True, False, False]))
    column = _one_column("generation", gen).columns["c"]
    assert (column.nulls, column.truncated, column.empty) == (1, 1, 1)
    assert dict(column.categorical["finish_reason"].counts) == {"stop": 2, "length": 1}
    assert _expanded(column.numeric["completion_tokens"]).tolist() == [5.0, 7.0, 8.0]


def test_a_null_entity_inside_a_list_is_not_an_entity() -> None:
    entity = pa.StructArray.from_arrays(
        [pa.array(["PER", "ZZZ", "ORG", "LOC"]), pa.array(["w"] * 4), pa.array([0.9] * 4),
         pa.array([0] * 4, pa.int32()), pa.array([1] * 4, pa.int32())],
        names=["entity", "word", "score", "start", "end"], mask=pa.array([False, True, False, False]))
    tok = pa.ListArray.from_arrays(pa.array([0, 2, 3, 3, 4], pa.int32()), entity)
    column = _one_column("token_classification", tok).columns["c"]
    assert dict(column.categorical["entity"].counts) == {"PER": 1, "ORG": 1, "LOC": 1}


def test_an_on_error_column_counts_errors_and_ignores_a_null_wrapper() -> None:
    result = pa.StructArray.from_arrays([pa.array(["a", "x", "zzz", "b"]), pa.array([0.1, 0.2, 0.3, 0.4])],
                                        names=["label", "score"], mask=pa.array([False, True, False, False]))
    error = pa.array([None, "boom", "boom", None])
    wrapped = pa.StructArray.from_arrays([result, error], names=["result", "error"],
                                         mask=pa.array([False, False, True, False]))
    column = _one_column("classification", wrapped, unwrap=True).columns["c"]
    assert (column.rows, column.nulls, column.errors) == (4, 2, 1)
    assert dict(column.categorical["label"].counts) == {"a": 1, "b": 1}


def test_embeddings_of_mixed_lengths_are_refused() -> None:
    settings = Settings(kinds={"e": "embedding"})
    with pytest.raises(ValueError, match=r"one length.*\[2, 3\]"):
        Accumulator(settings).update(pa.RecordBatch.from_arrays([pa.array([[1.0, 2.0], [1.0, 2.0, 3.0]])], names=["e"]))


# ------------------------------------------------------------------------------------ 3. the sketch path


def _sketch(values: np.ndarray, parts: int, settings: Settings) -> Distribution:
    partials = []
    for p, chunk in enumerate(np.array_split(values, parts)):
        accumulator = Accumulator(settings, partition=p)
        accumulator.update(pa.RecordBatch.from_arrays([pa.array(chunk)], names=["s"]))
        partials.append(accumulator.finish())
    return merge(partials, settings, rows=len(values)).columns["s"].numeric["value"]


def _ecdf(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.sort(values), x, side="right") / len(values)


@pytest.mark.parametrize(("bins", "ref_parts", "cur_parts", "meaningful"), [
    (5000, 4, 3, True),  # every partition sketched, then the mixture re-sketched
    (1000, 30, 25, False),  # every partition exact (below exact_max) but the total is not: one sketch
    (1000, 4, 40, False),  # one side sketched per partition, the other exact per partition
], ids=["sketched-partitions", "exact-partitions", "mixed"])
def test_sketch_statistics_are_within_their_bounds(bins: int, ref_parts: int, cur_parts: int, meaningful: bool) -> None:
    rng = np.random.default_rng(5)
    a = np.round(rng.normal(1000.0, 1.0, 24_000), 3)  # an offset mean: pooled variance must be centred
    b = np.round(rng.normal(1000.1, 1.1, 21_000), 3)
    settings = Settings(kinds={"s": "scores"}, bins=bins, exact_max=1000)
    ref, cur = _sketch(a, ref_parts, settings), _sketch(b, cur_parts, settings)
    assert not ref.exact and not cur.exact and ref.bins == cur.bins == bins
    assert (ref.count, cur.count) == (len(a), len(b))

    # exact moments, pooled across the partitions
    for d, values in ((ref, a), (cur, b)):
        assert d.mean == pytest.approx(np.mean(values), rel=1e-9)
        assert d.std == pytest.approx(np.std(values), rel=1e-9)
        assert (d.min, d.max) == (values.min(), values.max())
        # the sketch's CDF is within 1/B + rank_error of the rows' CDF everywhere
        x = np.linspace(values.min() - 1, values.max() + 1, 5001)
        assert np.max(np.abs(d.cdf(x) - _ecdf(values, x))) <= 1 / d.bins + d.rank_error + 1e-12

    bounds = stats.sketch_bounds(ref, cur)
    exact_ks = sps.ks_2samp(a, b).statistic
    exact_w = sps.wasserstein_distance(a, b) / np.std(a)
    assert exact_ks > 0.02 and exact_w > 0.05  # real drift, well above the bounds below
    assert abs(stats.ks(ref, cur)[0] - exact_ks) <= bounds["ks"]
    assert abs(stats.normed_wasserstein(ref, cur) - exact_w) <= bounds["wasserstein"]
    assert bounds["ks"] < 0.01
    if meaningful:
        assert bounds["wasserstein"] < 0.01


def test_sketch_p_value_uses_the_row_counts() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(0, 1, 20_000), rng.normal(0.05, 1, 30_000)
    settings = Settings(kinds={"s": "scores"}, bins=1000, exact_max=1000)
    ref, cur = _sketch(a, 3, settings), _sketch(b, 3, settings)
    statistic, pvalue = stats.ks(ref, cur)
    assert pvalue == pytest.approx(sps.kstwo.sf(statistic, round(20_000 * 30_000 / 50_000)), rel=1e-9)


def test_sketch_round_trips_with_its_weights_stored_once() -> None:
    settings = Settings(kinds={"s": "scores"}, bins=200, exact_max=100)
    d = _sketch(np.random.default_rng(8).normal(size=5000), 3, settings)
    data = json.loads(json.dumps(d.to_dict()))
    assert data["weights"] is None and len(data["points"]) == 200
    assert Distribution.from_dict(data) == d


# ------------------------------------------------------------------------------ 4. profile JSON round trip


def test_profile_json_round_trip_keeps_every_statistic(dataset: tuple[pa.RecordBatch, dict[str, Any], Profile],
                                                       tmp_path: Path) -> None:
    _, _, profiled = dataset
    text = profiled.to_json()
    json.loads(text)  # plain JSON
    again = Profile.from_dict(json.loads(text))
    assert again == profiled
    assert again.to_dict() == profiled.to_dict()
    for name in KINDS:
        before, after = profiled.columns[name].embedding, again.columns[name].embedding
        assert (before is None) == (after is None)
        if before is not None and after is not None:
            np.testing.assert_array_equal(before.sample, after.sample)
            assert after.sample.dtype == np.float32
    other = _profile(_predictions(3, rows=300)[0], _settings(sample_fraction=1.0))
    metrics = {(m.column, m.metric): m.value for m in compare(profiled, other, ()).metrics}
    assert metrics == {(m.column, m.metric): m.value for m in compare(again, other, ()).metrics}
    profiled.save(str(tmp_path / "deep" / "profile.json"))
    assert Profile.load(str(tmp_path / "deep" / "profile.json")) == profiled


def test_a_column_of_nulls_round_trips_as_strict_json() -> None:
    profiled = _one_column("scores", pa.array([None, None, None], pa.float64()))
    text = json.dumps(profiled.to_dict(), allow_nan=False)  # no NaN in the file, strict JSON readers accept it
    d = Profile.from_dict(json.loads(text)).columns["c"].numeric["value"]
    assert d.count == 0 and math.isnan(d.mean) and math.isnan(d.std)
    assert profiled.columns["c"].nulls == 3


@pytest.mark.parametrize("header", [{"format": "other", "version": 1}, {"format": "sparkinfer-profile", "version": 2},
                                    {"version": 1}])
def test_a_profile_of_another_format_or_version_is_refused(header: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match="expected a sparkinfer profile"):
        Profile.from_dict({**header, "rows": 0, "columns": {}})


# ------------------------------------------------------------------------------------------- 5. checks


def _key(check: Check) -> tuple[str, str, str, float, str]:
    return (check.column, check.metric, check.op, check.threshold, check.severity)


def test_default_checks_per_kind() -> None:
    assert {_key(c) for c in default_checks({"p": "classification"})} == {
        ("p", "error_rate", "max", 0.01, "error"), ("p", "null_rate", "max", 0.05, "warn"),
        ("p", "truncation_rate", "max", 0.1, "warn"), ("p", "label.psi", "max", 0.2, "error"),
        ("p", "label.js", "max", 0.1, "warn"), ("p", "score.wasserstein", "max", 0.1, "error"),
        ("p", "score.ks", "max", 0.1, "warn")}
    generation = {c.metric for c in default_checks({"g": "generation"})}
    assert "empty_rate" in generation and "length.wasserstein" in generation
    assert not any(m.startswith("completion_tokens.") for m in generation)
    embedding = {c.metric for c in default_checks({"e": "embedding"})}
    assert {"domain_auc", "centroid_cosine", "norm.wasserstein"} <= embedding
    assert "invalid_rate" in {c.metric for c in default_checks({"x": "extraction"})}
    assert "invalid_rate" not in {c.metric for c in default_checks({"t": "text"})}
    for kind in set(KINDS.values()):  # every default is a metric the kind has
        assert {c.metric for c in default_checks({"c": kind})} <= set(metric_names(kind))


def test_resolve_defaults_and_a_user_check_replacing_one() -> None:
    kinds = {"p": "classification", "e": "embedding"}
    assert resolve(kinds, None) == default_checks(kinds)
    user = Check(column="p", metric="label.psi", max=0.05, severity="warn")
    resolved = resolve(kinds, [user, Check(column="p", metric="label.chi2_pvalue", min=0.01)])
    psi = [c for c in resolved if (c.column, c.metric) == ("p", "label.psi")]
    assert [_key(c) for c in psi] == [("p", "label.psi", "max", 0.05, "warn")]
    assert len(resolved) == len(default_checks(kinds)) + 1
    assert ("p", "label.chi2_pvalue", "min", 0.01, "error") in {_key(c) for c in resolved}
    assert resolve(kinds, [user], defaults=False) == (user,)


def test_resolve_expands_a_star() -> None:
    kinds = {"p": "classification", "e": "embedding", "t": "text"}
    resolved = resolve(kinds, [Check(column="*", metric="error_rate", max=0.0, severity="warn")], defaults=False)
    assert {_key(c) for c in resolved} == {(c, "error_rate", "max", 0.0, "warn") for c in kinds}
    only = resolve(kinds, [Check(column="*", metric="label.psi", max=0.3)], defaults=False)
    assert [c.column for c in only] == ["p"]
    merged = resolve(kinds, [Check(column="*", metric="null_rate", max=0.5)])
    assert {c.threshold for c in merged if c.metric == "null_rate"} == {0.5}
    with pytest.raises(SpecError, match="no profiled column has metric 'label.nope'"):
        resolve(kinds, [Check(column="*", metric="label.nope", max=1.0)])


def test_resolve_refuses_unknown_columns_and_metrics() -> None:
    kinds = {"p": "classification"}
    with pytest.raises(SpecError, match=r"column 'q', which is not profiled \(got \['p'\]\)"):
        resolve(kinds, [Check(column="q", metric="null_rate", max=0.1)])
    with pytest.raises(SpecError, match="'p' has metric 'norm.ks'") as info:
        resolve(kinds, [Check(column="p", metric="norm.ks", max=0.1)])
    for metric in metric_names("classification"):
        assert metric in str(info.value)
    with pytest.raises(SpecError, match="must be sparkinfer Check objects"):
        resolve(kinds, [{"column": "p", "metric": "null_rate", "max": 0.1}])  # type: ignore[list-item]


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "checks.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_load_checks_reads_a_yaml_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "checks:\n  - {column: p, metric: label.psi, max: 0.1}\n"
                            "  - {column: '*', metric: error_rate, max: 0.0, severity: warn}\n")
    checks, defaults = load_checks(path)
    assert defaults is True
    assert [_key(c) for c in checks] == [("p", "label.psi", "max", 0.1, "error"),
                                         ("*", "error_rate", "max", 0.0, "warn")]
    kinds = {"p": "classification"}
    resolved = resolve(kinds, path)
    assert len(resolved) == len(default_checks(kinds))  # both replace defaults
    assert ("p", "error_rate", "max", 0.0, "warn") in {_key(c) for c in resolved}


def test_load_checks_without_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path, "defaults: false\nchecks:\n  - {column: p, metric: score.ks, max: 0.2}\n")
    assert load_checks(path)[1] is False
    assert [_key(c) for c in resolve({"p": "classification"}, path)] == [("p", "score.ks", "max", 0.2, "error")]
    assert load_checks(_write(tmp_path, "")) == ((), True)


@pytest.mark.parametrize(("text", "message"), [
    ("checks:\n  - {column: p, metric: label.psi, threshold: 0.1}\n", "check 1 must be a mapping"),
    ("checks:\n  - {metric: label.psi, max: 0.1}\n", "check 1 must be a mapping"),
    ("checks:\n  - label.psi\n", "check 1 must be a mapping"),
    ("check:\n  - {column: p, metric: label.psi, max: 0.1}\n", "must be a mapping with keys 'checks' and 'defaults'"),
    ("- {column: p, metric: label.psi, max: 0.1}\n", "must be a mapping with keys"),
    ("checks: {column: p}\n", "'checks' must be a list"),
    ("defaults: maybe\n", "'defaults' true or false"),
    ("checks: [ {column: p\n", "not valid YAML"),
    ("checks:\n  - {column: p, metric: label.psi, max: 0.1, severity: fatal}\n", "Check.severity must be one of"),
], ids=["bad-key", "no-column", "not-a-mapping", "bad-top-key", "top-level-list", "checks-not-list", "bad-defaults",
        "bad-yaml", "bad-severity"])
def test_load_checks_refuses_bad_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_checks(_write(tmp_path, text))


def test_load_checks_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the checks file"):
        load_checks(str(tmp_path / "absent.yaml"))


@pytest.mark.parametrize(("options", "message"), [
    ({"max": 0.1, "min": 0.0}, "exactly one of max= and min="),
    ({}, "exactly one of max= and min="),
    ({"max": 0.1, "severity": "fatal"}, r"Check.severity must be one of \('error', 'warn'\) \(got 'fatal'\)"),
    ({"max": "0.1"}, "the threshold must be a number"),
    ({"max": True}, "the threshold must be a number"),
    ({"max": math.nan}, "the threshold must be a number"),
    ({"max": 0.1, "column": ""}, "Check.column must be a non-empty string"),
])
def test_check_validation(options: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        Check(**{"column": "p", "metric": "null_rate", **options})


def test_check_thresholds_are_inclusive() -> None:
    upper, lower = Check(column="p", metric="m", max=0.1), Check(column="p", metric="m", min=0.1)
    assert (upper.passes(0.1), upper.passes(0.1000001), upper.passes(-5.0)) == (True, False, True)
    assert (lower.passes(0.1), lower.passes(0.0999999), lower.passes(5.0)) == (True, False, True)


# ------------------------------------------------------------------------------------------- 6. report


class FakeDomainClassifier:
    """Records the samples it is given and answers a fixed AUC."""

    def __init__(self, auc: float) -> None:
        self.auc = auc
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self, reference: np.ndarray, current: np.ndarray) -> tuple[float | None, str | None]:
        self.calls.append((reference, current))
        return self.auc, None


@pytest.fixture(scope="module")
def clean() -> Profile:
    """A profile with no errors, its embedding sample complete (fraction 1)."""
    return _profile(_predictions(4, error_p=0.0)[0], _settings(sample_fraction=1.0))


DRIFT = {"psi": 0.0, "js": 0.0, "chi2": 0.0, "chi2_pvalue": 1.0, "wasserstein": 0.0, "ks": 0.0, "ks_pvalue": 1.0}


def test_identical_profiles_pass_with_no_drift(clean: Profile) -> None:
    classifier = FakeDomainClassifier(0.5)
    report = compare(clean, clean, resolve(KINDS, None), domain_classifier=classifier)
    assert report.passed and not report.failures
    drift = [m for m in report.metrics if m.metric.rsplit(".", 1)[-1] in DRIFT]
    assert len(drift) == 4 * 6 + 3 * len(NUMERIC)  # 6 categorical fields, every numeric field
    for m in drift:
        assert m.value == pytest.approx(DRIFT[m.metric.rsplit(".", 1)[-1]], abs=1e-12), (m.column, m.metric)
        assert m.bound is None  # exact on both sides
    assert report.metric("emb", "centroid_cosine") == pytest.approx(0.0, abs=1e-12)
    assert report.metric("emb", "domain_auc") == 0.5
    for result in report.results:
        if "." in result.check.metric or result.check.metric in ("domain_auc", "centroid_cosine"):
            assert result.status == "pass", result.message
    errors = [r for r in report.results if r.check.metric == "error_rate"]
    assert {r.check.column: r.status for r in errors} == {c: "skipped" if c != "wrapped" else "pass" for c in KINDS}
    assert report.metric("wrapped", "error_rate") == 0.0
    invalid = clean.columns["ext"].categorical["status"].counts["invalid"]
    assert invalid > 0 and report.metric("ext", "invalid_rate") == pytest.approx(invalid / 600)
    assert len(classifier.calls) == 1
    report.raise_if_failed()  # passes: no exception


def test_the_domain_classifier_gets_the_reference_sample_then_the_current(clean: Profile) -> None:
    current = _profile(_predictions(5, shift=0.5)[0], _settings({"emb": "embedding"}, sample_fraction=1.0))
    classifier = FakeDomainClassifier(0.9)
    report = compare(current, clean, resolve({"emb": "embedding"}, None), domain_classifier=classifier)
    assert len(classifier.calls) == 1
    ref_sample, cur_sample = classifier.calls[0]
    np.testing.assert_array_equal(ref_sample, clean.columns["emb"].embedding.sample)  # type: ignore[union-attr]
    np.testing.assert_array_equal(cur_sample, current.columns["emb"].embedding.sample)  # type: ignore[union-attr]
    assert len(ref_sample) != len(cur_sample) and len(cur_sample) >= MIN_SAMPLE
    assert report.metric("emb", "domain_auc") == 0.9
    assert ("emb", "domain_auc") in {(r.check.column, r.check.metric) for r in report.failures}
    assert not report.passed


def test_small_samples_skip_the_domain_classifier(clean: Profile) -> None:
    settings = _settings({"emb": "embedding"}, sample_fraction=1.0)
    small = _profile(_predictions(6)[0], settings, sample_rows=MIN_SAMPLE - 1)
    classifier = FakeDomainClassifier(0.99)
    report = compare(small, clean, resolve({"emb": "embedding"}, None), domain_classifier=classifier)
    assert classifier.calls == [] and report.metric("emb", "domain_auc") is None
    result = next(r for r in report.results if r.check.metric == "domain_auc")
    assert result.status == "skipped" and "samples too small" in result.message
    assert next(r for r in compare(clean, clean, resolve({"emb": "embedding"}, None)).results
                if r.check.metric == "domain_auc").status == "skipped"  # no classifier given


def test_a_label_prior_shift_fails_label_psi() -> None:
    kinds = {"cls": "classification"}
    ref_batch, ref_raw = _predictions(7, rows=2000)
    cur_batch, cur_raw = _predictions(8, rows=2000, label_p=(0.1, 0.2, 0.7))
    reference, current = _profile(ref_batch, _settings(kinds)), _profile(cur_batch, _settings(kinds))
    report = compare(current, reference, resolve(kinds, None))
    _, p, q = _proportions(ref_raw["cls"]["label"], cur_raw["cls"]["label"])
    assert report.metric("cls", "label.psi") == pytest.approx(float(np.sum((q - p) * np.log(q / p))), abs=TOL)
    assert (report.metric("cls", "label.psi") or 0.0) > 0.2
    assert {(r.check.column, r.check.metric) for r in report.failures} == {("cls", "label.psi")}
    assert report.metric("cls", "score.wasserstein") == pytest.approx(  # the scores did not move
        sps.wasserstein_distance(ref_raw["cls"]["score"], cur_raw["cls"]["score"]) / np.std(ref_raw["cls"]["score"]),
        abs=TOL)
    assert (report.metric("cls", "score.wasserstein") or 1.0) < 0.1
    with pytest.raises(ValidationError, match="cls label.psi"):
        report.raise_if_failed()
    assert "FAILED" in report.summary()


@pytest.mark.parametrize(("error_p", "passes"), [(0.05, False), (0.0, True)])
def test_error_rate_above_one_percent_fails(error_p: float, passes: bool) -> None:
    kinds = {"wrapped": "classification"}
    batch, raw = _predictions(9, rows=1000, error_p=error_p)
    report = compare(_profile(batch, _settings(kinds)), None, resolve(kinds, None))
    assert report.metric("wrapped", "error_rate") == raw["wrapped"]["errors"] / 1000
    result = next(r for r in report.results if r.check.metric == "error_rate")
    assert result.status == ("pass" if passes else "fail") and report.passed is passes
    if not passes:
        assert raw["wrapped"]["errors"] / 1000 > 0.01
        with pytest.raises(ValidationError, match="wrapped error_rate"):
            report.raise_if_failed()


def test_without_a_reference_drift_checks_are_skipped(clean: Profile) -> None:
    report = compare(clean, None, resolve(KINDS, None), domain_classifier=FakeDomainClassifier(0.99))
    drift = [r for r in report.results if "." in r.check.metric or r.check.metric in ("domain_auc", "centroid_cosine")]
    assert drift and all(r.status == "skipped" and r.value is None and "no reference" in r.message for r in drift)
    assert report.passed  # skipped is not a failure, and not a pass either
    assert not any(r.status == "pass" for r in drift)


def test_a_reference_of_another_kind_is_noted_and_skipped(clean: Profile) -> None:
    other = _one_column("scores", pa.array([1.0, 2.0, 3.0]))
    current = _one_column("text", pa.array(["a", "bb", "ccc"]))
    report = compare(current, other, resolve({"c": "text"}, None))
    assert report.metric("c", "kind") is None
    result = next(r for r in report.results if r.check.metric == "length.wasserstein")
    assert result.status == "skipped" and "the reference's column is scores" in result.message


def test_sketched_metrics_carry_their_bound() -> None:
    rng = np.random.default_rng(10)
    settings = Settings(kinds={"s": "scores"}, bins=500, exact_max=1000)

    def profiled(values: np.ndarray) -> Profile:
        return merge(_partials(pa.RecordBatch.from_arrays([pa.array(values)], names=["s"]), settings), settings,
                     rows=len(values))

    reference, current = profiled(rng.normal(0, 1, 5000)), profiled(rng.normal(0, 1, 4000))
    report = compare(current, reference, resolve({"s": "scores"}, None))
    bounds = stats.sketch_bounds(reference.columns["s"].numeric["value"], current.columns["s"].numeric["value"])
    by_name = {m.metric: m for m in report.metrics}
    assert by_name["value.ks"].bound == bounds["ks"] > 0
    assert by_name["value.wasserstein"].bound == bounds["wasserstein"] > 0
    assert by_name["value.ks_pvalue"].note == "from the sketch"


def test_report_to_dict_is_json(clean: Profile) -> None:
    shifted = _profile(_predictions(11, error_p=0.05, shift=0.3)[0], _settings(sample_fraction=1.0))
    report: ValidationReport = compare(shifted, clean, resolve(KINDS, None),
                                       domain_classifier=FakeDomainClassifier(0.7))
    data = report.to_dict()
    assert set(data) == {"passed", "created", "current", "reference", "columns", "metrics", "checks"}
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    assert data["passed"] is False and data["passed"] == report.passed
    assert datetime.fromisoformat(data["created"]).tzinfo is not None
    assert data["current"]["rows"] == 600 and data["reference"]["rows"] == 600
    assert set(data["columns"]) == set(KINDS) and data["columns"]["cls"]["reference"] is not None
    assert len(data["metrics"]) == len(report.metrics) and len(data["checks"]) == len(report.results)
    assert {c["status"] for c in data["checks"]} <= {"pass", "fail", "skipped"}
    assert {"fail", "pass"} <= {c["status"] for c in data["checks"]}
    none = compare(shifted, None, ()).to_dict()
    assert none["reference"] is None and none["columns"]["cls"]["reference"] is None
    json.dumps(none, allow_nan=False)


def test_report_metric_lookup(clean: Profile) -> None:
    report = compare(clean, clean, ())
    assert report.results == () and report.passed
    with pytest.raises(KeyError, match="no metric 'nope'"):
        report.metric("cls", "nope")
