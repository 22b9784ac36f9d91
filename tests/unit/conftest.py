"""Unit-tier fixtures: tiny models built once per session, and per-row oracles (see helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from sparkinfer.engine import cache
from tests.conftest import VARIED_INIT, build_tiny_model
from tests.unit.helpers import ClassifierOracle, EncoderOracle, SentenceTransformerOracle


# ---------------------------------------------------------------------------------------------- models


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A random tiny BERT (AutoModel, no sentence-transformers files): pooling defaults to mean."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_encoder"), minilm_path, "AutoModel", seed=1)


@pytest.fixture(scope="session")
def multilabel_classifier(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A random 3-label multi-label classifier: the pipeline scores it with a sigmoid.

    Drawn at VARIED_INIT, like `tiny_classifier`: at BERT's default (0.02) it labelled all of the first 60
    docstrings 'blue', best scores within 5e-5, and a swap of two rows passed the 1e-5 checks for 59 % of
    the pairs; now all three labels win (7/26/27) and no pair passes.
    """
    return build_tiny_model(
        tmp_path_factory.mktemp("multilabel"),
        minilm_path,
        "AutoModelForSequenceClassification",
        seed=2,
        initializer_range=VARIED_INIT,
        num_labels=3,
        problem_type="multi_label_classification",
        id2label={0: "red", 1: "green", 2: "blue"},
        label2id={"red": 0, "green": 1, "blue": 2},
    )


@pytest.fixture(scope="session")
def single_logit_classifier(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A random single-logit classifier (num_labels=1): the pipeline scores it with a sigmoid.

    One label, so only the score tells rows apart: at VARIED_INIT the first 60 docstrings' scores spread over
    0.22 and one pair of the 1,770 lies within 1e-5 (at BERT's default 0.02 they spread over 3e-5, and a
    swap of two rows passed the 1e-5 checks for 84 % of the pairs).
    """
    return build_tiny_model(
        tmp_path_factory.mktemp("single_logit"),
        minilm_path,
        "AutoModelForSequenceClassification",
        seed=3,
        num_labels=1,
        initializer_range=VARIED_INIT,
    )


@pytest.fixture(scope="session")
def regression_model(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A random regression head (problem_type='regression'): the pipeline returns raw logits.

    At BERT's default initializer_range (0.02) its values on the first 60 docstrings spread over 3e-4, and a
    swap of two rows passed the 1e-5 checks for 9 % of the pairs. Raw logits are not squashed into [0, 1],
    so their float32 noise grows with them: at VARIED_INIT (values up to 9) padded batches moved them by
    2.5e-5, beyond the checks' 1e-5. At 0.2 the values spread over 1.4 (-1.1 to 0.6), no two within 1.4e-4,
    and batching moves them by less than 1e-6.
    """
    return build_tiny_model(
        tmp_path_factory.mktemp("regression"),
        minilm_path,
        "AutoModelForSequenceClassification",
        seed=4,
        num_labels=1,
        problem_type="regression",
        initializer_range=0.2,
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
