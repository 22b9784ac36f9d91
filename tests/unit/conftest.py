"""Unit-tier fixtures: tiny models built once per session, and per-row oracles (see helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from sparkinfer.engine import cache
from tests.conftest import build_tiny_model
from tests.unit.helpers import ClassifierOracle, EncoderOracle, SentenceTransformerOracle


# ---------------------------------------------------------------------------------------------- models


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A random tiny BERT (AutoModel, no sentence-transformers files): pooling defaults to mean."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_encoder"), minilm_path, "AutoModel", seed=1)


@pytest.fixture(scope="session")
def multilabel_classifier(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A random 3-label multi-label classifier: the pipeline scores it with a sigmoid."""
    return build_tiny_model(
        tmp_path_factory.mktemp("multilabel"),
        minilm_path,
        "AutoModelForSequenceClassification",
        seed=2,
        num_labels=3,
        problem_type="multi_label_classification",
        id2label={0: "red", 1: "green", 2: "blue"},
        label2id={"red": 0, "green": 1, "blue": 2},
    )


@pytest.fixture(scope="session")
def single_logit_classifier(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A random single-logit classifier (num_labels=1): the pipeline scores it with a sigmoid."""
    return build_tiny_model(
        tmp_path_factory.mktemp("single_logit"), minilm_path, "AutoModelForSequenceClassification", seed=3, num_labels=1
    )


@pytest.fixture(scope="session")
def regression_model(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A random regression head (problem_type='regression'): the pipeline returns raw logits."""
    return build_tiny_model(
        tmp_path_factory.mktemp("regression"),
        minilm_path,
        "AutoModelForSequenceClassification",
        seed=4,
        num_labels=1,
        problem_type="regression",
    )


# ---------------------------------------------------------------------------------------------- oracles


@pytest.fixture(scope="session")
def classifier_oracle() -> Callable[[str], ClassifierOracle]:
    """``classifier_oracle(path)``: one memoizing oracle per model directory for the whole session."""
    oracles: dict[str, ClassifierOracle] = {}

    def get(path: str) -> ClassifierOracle:
        if path not in oracles:
            oracles[path] = ClassifierOracle(path)
        return oracles[path]

    return get


@pytest.fixture(scope="session")
def encoder_oracle(tiny_encoder: str) -> EncoderOracle:
    return EncoderOracle(tiny_encoder)


@pytest.fixture(scope="session")
def minilm_oracle(minilm_path: str) -> SentenceTransformerOracle:
    return SentenceTransformerOracle(minilm_path)


@pytest.fixture(scope="session")
def words(docs: list[str]) -> list[str]:
    """Every whitespace-separated word of the docs fixture, in order: material for texts of any length."""
    return [w for doc in docs for w in doc.split()]


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Run torch on one thread, as a Spark task with spark.task.cpus=1 does (run_stream's num_threads).

    On a 2-core machine shared with other processes, torch's default of one spinning OpenMP thread per
    core made the tiny models here 10-50x slower; one thread keeps the suite within its time budget.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def empty_cache() -> Iterator[None]:
    """An empty per-process model cache before and after the test (``pytest.mark.usefixtures``)."""
    cache.clear()
    yield
    cache.clear()
