"""Spark-tier fixtures: the docstring table as a DataFrame, and the single-process oracles.

The oracles run plain sentence-transformers / transformers in the test process, without Spark: ST's own
``encode`` for embeddings, one row per forward pass for classification. They share no code with
sparkinfer's batching, Arrow plumbing or Spark layer, so a bug there cannot cancel out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import numpy as np
import pytest

from tests.spark.helpers import DOCS_PARQUET, LABELS, NULL_IDS, Doc, Probs, Vector, single_torch_thread
from tests.unit.helpers import swap_blind_pairs


@pytest.fixture(scope="session")
def doc_rows() -> dict[int, Doc]:
    """id → Doc for the 600 docstrings, plus the null-text rows that `docs_df` adds."""
    import pyarrow.parquet as pq

    table = pq.read_table(DOCS_PARQUET).to_pydict()
    rows = {i: Doc(m, t) for i, m, t in zip(table["id"], table["module"], table["text"], strict=True)}
    assert len(rows) == 600 and all(doc.text for doc in rows.values())
    rows.update({i: Doc("null-text", None) for i in NULL_IDS})
    return rows


@pytest.fixture(scope="session")
def docs_df(spark: Any, st_vectors: dict[int, Vector], classifier_probs: dict[int, Probs]) -> Any:
    """The docstrings plus three null texts and two extra columns, hash-partitioned by module.

    Columns: id, module, text, tag (string), weights (array<double>), see `helpers.expected_extras`.
    The shuffle leaves three partitions of uneven size whose rows are no longer in file order.

    The oracles are computed first, before any Spark job: computed between two jobs, they would leave
    the Python workers idle past Spark's one-minute timeout, and the next job would start new ones
    (importing torch and loading the model again).
    """
    from pyspark.sql import functions as F

    schema = "id long, module string, text string"
    nulls = spark.createDataFrame([(i, "null-text", None) for i in NULL_IDS], schema)
    return (
        spark.read.parquet(str(DOCS_PARQUET))
        .unionByName(nulls)
        .repartition(3, "module")
        .withColumn("tag", F.concat(F.lit("row-"), F.col("id").cast("string")))
        .withColumn("weights", F.array(F.col("id") / 4, F.lit(1.5)))
    )


@pytest.fixture(scope="session")
def st_vectors(minilm_path: str, doc_rows: dict[int, Doc]) -> dict[int, Vector]:
    """id → sentence-transformers' normalized embedding, for every docstring: the embedding oracle."""
    from sentence_transformers import SentenceTransformer

    ids = sorted(i for i, doc in doc_rows.items() if doc.text is not None)
    with single_torch_thread():
        model = SentenceTransformer(minilm_path, device="cpu")
        # The Spark runs ask for max_length=256: the oracle must truncate at the same place.
        assert model.max_seq_length == 256
        texts = [doc_rows[i].text for i in ids]
        vectors = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    return dict(zip(ids, vectors, strict=True))


@pytest.fixture(scope="session")
def classifier_probs(tiny_classifier: str, doc_rows: dict[int, Doc]) -> dict[int, Probs]:
    """id → softmax probabilities in label-id order, from transformers run on each docstring alone."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_classifier)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tiny_classifier).eval()
    assert [model.config.id2label[i] for i in range(model.config.num_labels)] == LABELS
    probs = {}
    with single_torch_thread(), torch.inference_mode():
        for i, doc in doc_rows.items():
            if doc.text is not None:
                encoded = tokenizer(doc.text, truncation=True, return_tensors="pt")
                probs[i] = torch.softmax(model(**encoded).logits[0].double(), dim=-1).numpy()
    # The oracle only proves something if it tells rows apart: every label must win somewhere, and a row's
    # label and best score must not pass for another row's (0.004 % of the pairs of docstrings do).
    best = np.array([p.argmax() for p in probs.values()])
    assert set(best) == {0, 1, 2}, np.bincount(best)
    assert swap_blind_pairs(list(probs.values())) < 1e-4
    return probs


@pytest.fixture(scope="session")
def sql_conf(spark: Any) -> Callable[[str, str], AbstractContextManager[None]]:
    """``with sql_conf(key, value):`` sets a runtime SQL conf for the block, then restores it."""

    @contextmanager
    def setting(key: str, value: str) -> Iterator[None]:
        before = spark.conf.get(key, None)
        spark.conf.set(key, value)
        try:
            yield
        finally:
            if before is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, before)

    return setting
