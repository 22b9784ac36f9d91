"""Task heads against independent references run one row at a time.

Embedding: each pooling mode against a manual computation over the plain model's last_hidden_state, and
against sentence-transformers itself on models in its legacy (<= v5) and current (v6) layouts.
Classification: label/score against a plain forward + softmax/sigmoid, and against transformers'
text-classification pipeline.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from sparkinfer import ModelLoadError, ModelSpec
from sparkinfer.engine import run
from sparkinfer.engine.tasks import get_task
from sparkinfer.engine.tasks.embedding import SentenceTransformersConfig, read_st_config
from tests.unit.helpers import (
    ClassifierOracle,
    EncoderOracle,
    FloatArray,
    SentenceTransformerOracle,
    assert_classification_matches,
    assert_embeddings_match,
    swap_blind_pairs,
)

POOLINGS = ["mean", "cls", "max", "lasttoken", "mean_sqrt_len_tokens"]
LEGACY_FLAGS = {
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "lasttoken": "pooling_mode_lasttoken",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
}


@pytest.fixture(scope="module")
def mixed_texts(docs: list[str]) -> list[str | None]:
    """Short, long (truncated at 128 and at 512 tokens) and empty rows, with nulls, in no particular order."""
    long = " ".join(docs[:40])
    return [docs[0], None, "", docs[5], long, docs[13][:20], "x", None, " ".join(docs[40:44]), docs[21], long[:900]]


def manual_pool(hidden: FloatArray, pooling: str, normalize: bool) -> FloatArray:
    """Pooling of one unpadded row's token states, written out by hand."""
    if pooling == "mean":
        vector = hidden.mean(axis=0)
    elif pooling == "cls":
        vector = hidden[0]
    elif pooling == "max":
        vector = hidden.max(axis=0)
    elif pooling == "lasttoken":
        vector = hidden[-1]
    else:
        vector = hidden.sum(axis=0) / np.sqrt(hidden.shape[0])
    return vector / np.linalg.norm(vector) if normalize else vector


# ---------------------------------------------------------------------------------------------- embedding


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_pooling_matches_manual_computation(
    tiny_encoder: str, encoder_oracle: EncoderOracle, mixed_texts: list[str | None], pooling: str, normalize: bool
) -> None:
    # One micro-batch for all rows, so short rows are padded up to the longest (512 tokens).
    spec = ModelSpec(tiny_encoder, task="embedding", pooling=pooling, normalize=normalize, batch_tokens=8192)
    out, metrics = run(spec, pa.array(mixed_texts, pa.string()))
    assert metrics.micro_batches == 1
    assert_embeddings_match(out, mixed_texts, lambda t: manual_pool(encoder_oracle.hidden(t), pooling, normalize))


def test_plain_model_defaults_to_mean_pooling_without_normalization(
    tiny_encoder: str, encoder_oracle: EncoderOracle, mixed_texts: list[str | None]
) -> None:
    assert read_st_config(Path(tiny_encoder)) == SentenceTransformersConfig()
    out, _ = run(ModelSpec(tiny_encoder, task="embedding"), pa.array(mixed_texts, pa.string()))
    assert_embeddings_match(out, mixed_texts, lambda t: manual_pool(encoder_oracle.hidden(t), "mean", False))


def test_minilm_sentence_transformers_config_is_read(
    minilm_path: str, minilm_oracle: SentenceTransformerOracle
) -> None:
    config = read_st_config(Path(minilm_path))
    assert config == SentenceTransformersConfig(pooling="mean", normalize=True, max_seq_length=256)
    # The same facts as sentence-transformers itself reads them.
    st_model = minilm_oracle.model
    assert st_model.max_seq_length == config.max_seq_length
    assert [type(m).__name__ for m in st_model] == ["Transformer", "Pooling", "Normalize"]
    pooling = st_model[1]
    mode = pooling.pooling_mode if isinstance(getattr(pooling, "pooling_mode", None), str) else None
    assert (mode or pooling.get_pooling_mode_str()) == config.pooling  # v6 attribute, else the older getter


def test_minilm_embedding_via_engine_equals_sentence_transformers(
    minilm_path: str, minilm_oracle: SentenceTransformerOracle, docs: list[str]
) -> None:
    texts: list[str | None] = list(docs[:100])
    out, metrics = run(ModelSpec(minilm_path, task="embedding", batch_tokens=2048), pa.array(texts, pa.string()))
    assert metrics.micro_batches > 1
    assert_embeddings_match(out, texts, minilm_oracle)
    norms = np.linalg.norm(np.asarray(out.to_pylist(), dtype=np.float64), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def _sentence_transformers_modules() -> Any:
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer import modules
    except ImportError:
        from sentence_transformers import models as modules
    return modules


def _save_current_layout(tiny_encoder: str, path: Path, pooling: str, normalize: bool) -> str:
    """Save a tiny model with the installed sentence-transformers (its current modules.json layout)."""
    from sentence_transformers import SentenceTransformer

    modules = _sentence_transformers_modules()
    transformer = modules.Transformer(tiny_encoder, max_seq_length=128)
    stack = [transformer, modules.Pooling(32, pooling_mode=pooling)]
    model = SentenceTransformer(modules=[*stack, modules.Normalize()] if normalize else stack, device="cpu")
    model.save(str(path))
    return str(path)


def _write_legacy_layout(tiny_encoder: str, path: Path, pooling: str, normalize: bool) -> str:
    """The layout sentence-transformers <= v5 wrote (and most hub models have): boolean pooling flags."""
    shutil.copytree(tiny_encoder, path)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (path / "2_Normalize").mkdir()
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir()
    flags = {flag: flag == LEGACY_FLAGS[pooling] for flag in LEGACY_FLAGS.values()}
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **flags}))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    return str(path)


@pytest.mark.parametrize("layout", ["legacy", "current"])
@pytest.mark.parametrize(("pooling", "normalize"), [(p, p in ("mean", "cls")) for p in POOLINGS])
def test_sentence_transformers_layouts_match_sentence_transformers(
    tiny_encoder: str,
    tmp_path: Path,
    mixed_texts: list[str | None],
    layout: str,
    pooling: str,
    normalize: bool,
) -> None:
    from sentence_transformers import SentenceTransformer

    write = _write_legacy_layout if layout == "legacy" else _save_current_layout
    path = write(tiny_encoder, tmp_path / "model", pooling, normalize)
    reference = SentenceTransformer(path, device="cpu")
    assert reference.max_seq_length == 128
    config = read_st_config(Path(path))
    assert (config.pooling, config.normalize) == (pooling, normalize)

    out, metrics = run(ModelSpec(path, task="embedding", batch_tokens=8192), pa.array(mixed_texts, pa.string()))

    assert metrics.truncated_rows > 0  # the 128-token limit of the layout is applied
    assert_embeddings_match(
        out, mixed_texts, lambda t: reference.encode(t, convert_to_numpy=True).astype(np.float64)
    )


def _minimal_st_dir(tmp_path: Path, modules: list[dict[str, Any]], pooling_config: dict[str, Any]) -> Path:
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    return tmp_path


TRANSFORMER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
POOLING = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
DENSE = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
DENSE_V6 = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.base.modules.dense.Dense"}


@pytest.mark.parametrize("dense", [DENSE, DENSE_V6], ids=["legacy", "current"])
def test_unsupported_module_is_refused(tmp_path: Path, dense: dict[str, Any]) -> None:
    path = _minimal_st_dir(tmp_path, [TRANSFORMER, POOLING, dense], {"pooling_mode_mean_tokens": True})
    with pytest.raises(ModelLoadError, match=r"\['Dense'\]"):
        read_st_config(path)


def test_unsupported_module_fails_the_engine_load(tiny_encoder: str, tmp_path: Path) -> None:
    path = tmp_path / "model"
    shutil.copytree(tiny_encoder, path)
    _minimal_st_dir(path, [TRANSFORMER, POOLING, DENSE], {"pooling_mode_mean_tokens": True})
    with pytest.raises(ModelLoadError, match="Dense"):
        run(ModelSpec(str(path), task="embedding"), pa.array(["hello"]))


@pytest.mark.parametrize(
    "pooling_config",
    [
        {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True},
        {"pooling_mode_weightedmean_tokens": True},
        {},
        {"pooling_mode": "weightedmean"},
        {"pooling_mode": ["mean", "max"]},
    ],
    ids=["two-flags", "weightedmean-flag", "no-mode", "weightedmean", "two-modes"],
)
def test_unsupported_pooling_config_is_refused(tmp_path: Path, pooling_config: dict[str, Any]) -> None:
    path = _minimal_st_dir(tmp_path, [TRANSFORMER, POOLING], pooling_config)
    with pytest.raises(ModelLoadError, match="set ModelSpec.pooling explicitly"):
        read_st_config(path)


def test_explicit_pooling_overrides_the_sentence_transformers_config(
    minilm_path: str, minilm_oracle: SentenceTransformerOracle, docs: list[str]
) -> None:
    texts: list[str | None] = [docs[1], docs[2]]
    out, _ = run(ModelSpec(minilm_path, task="embedding", normalize=False), pa.array(texts, pa.string()))
    vectors = np.asarray(out.to_pylist(), dtype=np.float64)
    assert not np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)  # normalize=False is honored
    # ...and normalizing by hand gives sentence-transformers' (normalized) vectors back.
    for vector, text in zip(vectors, texts):
        np.testing.assert_allclose(vector / np.linalg.norm(vector), minilm_oracle(text), atol=1e-5)


# ---------------------------------------------------------------------------------------------- classification


CLASSIFIERS = [
    # (fixture, the score function transformers' pipeline applies to it)
    ("tiny_classifier", "softmax"),
    ("multilabel_classifier", "sigmoid"),
    ("single_logit_classifier", "sigmoid"),
    ("regression_model", "none"),
]


@pytest.mark.parametrize(("fixture", "function"), CLASSIFIERS, ids=[c[0] for c in CLASSIFIERS])
def test_the_classifiers_tell_rows_apart(
    request: pytest.FixtureRequest,
    classifier_oracle: Callable[[str], ClassifierOracle],
    mixed_texts: list[str | None],
    docs: list[str],
    fixture: str,
    function: str,
) -> None:
    """The checks here would miss rows swapped by the engine if two rows' answers agreed within 1e-5."""
    oracle = classifier_oracle(request.getfixturevalue(fixture))
    texts = [t for t in [*mixed_texts, *docs[100:130]] if t is not None]
    scores = [oracle.scores(t, function=function) for t in texts]
    assert swap_blind_pairs(scores) == 0
    if len(oracle.labels) > 1:  # the label alone must tell rows apart too
        assert len({int(np.argmax(s)) for s in scores}) == len(oracle.labels)


@pytest.mark.parametrize(("fixture", "function"), CLASSIFIERS, ids=[c[0] for c in CLASSIFIERS])
def test_classification_matches_plain_forward(
    request: pytest.FixtureRequest,
    classifier_oracle: Callable[[str], ClassifierOracle],
    mixed_texts: list[str | None],
    docs: list[str],
    fixture: str,
    function: str,
) -> None:
    path = request.getfixturevalue(fixture)
    oracle = classifier_oracle(path)
    texts = [*mixed_texts, *docs[100:130]]
    spec = ModelSpec(path, task="classification", batch_tokens=1024, max_batch_size=16)
    out, _ = run(spec, pa.array(texts, pa.string()))
    assert out.type == pa.struct([("label", pa.string()), ("score", pa.float64())])
    assert_classification_matches(out, texts, oracle, function=function)


@pytest.mark.parametrize("function", ["softmax", "sigmoid", "none"])
def test_function_to_apply_overrides_the_default(
    tiny_classifier: str,
    classifier_oracle: Callable[[str], ClassifierOracle],
    mixed_texts: list[str | None],
    function: str,
) -> None:
    spec = ModelSpec(tiny_classifier, task="classification", function_to_apply=function)
    out, _ = run(spec, pa.array(mixed_texts, pa.string()))
    assert_classification_matches(out, mixed_texts, classifier_oracle(tiny_classifier), function=function)


def test_return_all_scores_gives_every_label_in_id_order(
    tiny_classifier: str, classifier_oracle: Callable[[str], ClassifierOracle], mixed_texts: list[str | None]
) -> None:
    oracle = classifier_oracle(tiny_classifier)
    spec = ModelSpec(tiny_classifier, task="classification", return_all_scores=True)
    out, _ = run(spec, pa.array(mixed_texts, pa.string()))
    assert out.type == get_task("classification").arrow_type(spec)
    assert_classification_matches(out, mixed_texts, oracle)
    for text, row in zip(mixed_texts, out.to_pylist()):
        if text is None:
            assert row is None
            continue
        assert [s["label"] for s in row["scores"]] == ["neg", "neu", "pos"]
        np.testing.assert_allclose([s["score"] for s in row["scores"]], oracle.scores(text), atol=1e-5)
        assert sum(s["score"] for s in row["scores"]) == pytest.approx(1.0)


@pytest.mark.parametrize("top_k", [1, 2, 5])
def test_top_k_gives_the_best_labels_best_first(
    tiny_classifier: str,
    classifier_oracle: Callable[[str], ClassifierOracle],
    mixed_texts: list[str | None],
    top_k: int,
) -> None:
    oracle = classifier_oracle(tiny_classifier)
    spec = ModelSpec(tiny_classifier, task="classification", top_k=top_k)
    out, _ = run(spec, pa.array(mixed_texts, pa.string()))
    assert out.type == get_task("classification").arrow_type(spec)
    for text, row in zip(mixed_texts, out.to_pylist()):
        if text is None:
            assert row is None
            continue
        expected = oracle.scores(text)
        best = np.argsort(-expected)[: min(top_k, 3)]
        got_scores = [s["score"] for s in row["scores"]]
        assert len(row["scores"]) == min(top_k, 3)
        assert got_scores == sorted(got_scores, reverse=True)
        np.testing.assert_allclose(got_scores, expected[best], atol=1e-5)
        assert [s["label"] for s in row["scores"]] == [oracle.labels[i] for i in best]
        assert (row["label"], row["score"]) == (row["scores"][0]["label"], row["scores"][0]["score"])


@pytest.mark.parametrize("fixture", [c[0] for c in CLASSIFIERS])
def test_all_scores_match_the_text_classification_pipeline(
    request: pytest.FixtureRequest, mixed_texts: list[str | None], fixture: str
) -> None:
    import transformers

    path = request.getfixturevalue(fixture)
    pipe = transformers.pipeline("text-classification", model=path, tokenizer=path, top_k=None, device="cpu")
    spec = ModelSpec(path, task="classification", return_all_scores=True)
    out, _ = run(spec, pa.array(mixed_texts, pa.string()))
    for text, row in zip(mixed_texts, out.to_pylist()):
        if text is None:
            assert row is None
            continue
        expected = pipe(text, truncation=True)  # one row at a time: no batching in the reference
        expected = expected[0] if expected and isinstance(expected[0], list) else expected
        got = sorted(row["scores"], key=lambda s: -s["score"])
        assert [s["label"] for s in got] == [e["label"] for e in expected]
        np.testing.assert_allclose([s["score"] for s in got], [e["score"] for e in expected], atol=1e-5)
        assert (row["label"], row["score"]) == pytest.approx((expected[0]["label"], expected[0]["score"]), abs=1e-5)


# ---------------------------------------------------------------------------------------------- nulls


def _specs(tiny_classifier: str, tiny_encoder: str) -> list[ModelSpec]:
    return [
        ModelSpec(tiny_encoder, task="embedding"),
        ModelSpec(tiny_classifier, task="classification"),
        ModelSpec(tiny_classifier, task="classification", return_all_scores=True),
        ModelSpec(tiny_classifier, task="classification", top_k=2),
    ]


SPEC_IDS = ["embedding", "classification", "return_all_scores", "top_k"]


@pytest.mark.parametrize("which", range(4), ids=SPEC_IDS)
def test_null_rows_come_out_as_top_level_nulls(tiny_classifier: str, tiny_encoder: str, which: int) -> None:
    spec = _specs(tiny_classifier, tiny_encoder)[which]
    out, metrics = run(spec, pa.array([None, "a b c", None, "", None], pa.string()))
    assert out.type == get_task(spec.task).arrow_type(spec)
    # A null struct/list, not a struct of null fields: the validity bitmap of the column itself.
    assert out.is_null().to_pylist() == [True, False, True, False, True]
    assert out.null_count == 3
    rows = out.to_pylist()
    assert rows[0] is None and rows[2] is None and rows[4] is None
    assert rows[1] is not None and rows[3] is not None
    assert metrics.null_rows == 3


@pytest.mark.parametrize("which", range(4), ids=SPEC_IDS)
@pytest.mark.parametrize("texts", [[None, None, None], []], ids=["all-null", "empty"])
def test_all_null_and_empty_inputs(tiny_classifier: str, tiny_encoder: str, which: int, texts: list[None]) -> None:
    spec = _specs(tiny_classifier, tiny_encoder)[which]
    out, metrics = run(spec, pa.array(texts, pa.string()))
    assert out.type == get_task(spec.task).arrow_type(spec)
    assert len(out) == len(texts)
    assert out.null_count == len(texts)
    assert out.to_pylist() == [None] * len(texts)
    assert (metrics.rows, metrics.null_rows, metrics.micro_batches, metrics.real_tokens) == (
        len(texts),
        len(texts),
        0,
        0,
    )
