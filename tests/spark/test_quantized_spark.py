"""Quantized and bfloat16 MiniLM through Spark, against plain transformers + bitsandbytes run on each row alone.

NF4 is batch-invariant: the Spark run (length-sorted, padded micro-batches) must match the per-row oracle
to cosine 0.9999. LLM.int8 multiplies the features above its outlier threshold in float16 for the whole
micro-batch, so a row's 8-bit vector depends a little on its batch-mates: 0.995. Drift to float32 is printed
(``pytest -s``) and recorded in README/BENCHMARKS; its bounds here only catch a broken quantization.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import numpy as np
import pytest

import sparkinfer as si
from sparkinfer import MissingDependencyError, QuantizationSpec
from sparkinfer.engine.loading import load_model
from tests.quantized import CPU_4BIT_PATHS, EmbeddingOracle, cosines, linear_weight_bytes, spark_cpu_4bit_path

pytestmark = pytest.mark.spark

ROWS = 48
MAX_LENGTH = 128
MIN_COSINE = {8: 0.995, 4: 0.9999}
# Drift to float32 a broken quantization would not reach (measured: 8-bit 0.9993, 4-bit 0.973; README).
MIN_MEAN_DRIFT = {8: 0.99, 4: 0.9}
BNB_LINEAR = {8: "Linear8bitLt", 4: "Linear4bit"}
# 8-bit as the preset string, 4-bit as a QuantizationSpec: both reach the executors.
QUANTIZATION: dict[int, Any] = {8: "8bit", 4: QuantizationSpec(bits=4)}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """The driver-side oracles on one torch thread, as the Spark tasks run (spark.task.cpus=1): on two cores
    shared with the JVM and two workers, torch's default of a spinning thread per core made them 3-4x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def texts(docs: list[str]) -> list[str]:
    return docs[:ROWS]


@pytest.fixture(scope="module")
def fp32_oracle(minilm_path: str) -> EmbeddingOracle:
    return EmbeddingOracle(minilm_path, bits=None, normalize=True, max_length=MAX_LENGTH)


def embed_through_spark(spark: Any, texts: list[str], minilm_path: str, **options: Any) -> tuple[list[Any], str]:
    """Vectors in row order, and the Spark type of the column."""
    # One partition: each Python worker that runs a task imports bitsandbytes and loads the model, which is
    # most of this test's time on CPU; several workers are the core tests' business.
    frame = spark.createDataFrame(list(enumerate(texts)), "id long, text string").repartition(1)
    # A small budget: many micro-batches of different widths in every task.
    column = si.embed("text", minilm_path, max_length=MAX_LENGTH, batch_tokens=1024, **options)
    embedded = frame.withColumn("emb", column)
    rows = embedded.orderBy("id").collect()
    return [r["emb"] for r in rows], embedded.schema["emb"].dataType.simpleString()


@pytest.mark.parametrize(("bits", "path"), [(8, None), *((4, path) for path in CPU_4BIT_PATHS)])
def test_quantized_minilm_through_spark_equals_per_row_bitsandbytes(
    spark: Any, monkeypatch: pytest.MonkeyPatch, minilm_path: str, texts: list[str], fp32_oracle: EmbeddingOracle,
    bits: int, path: str | None,
) -> None:
    with spark_cpu_4bit_path(spark, monkeypatch, path) if path else nullcontext():
        vectors, spark_type = embed_through_spark(spark, texts, minilm_path, quantization=QUANTIZATION[bits])
    assert spark_type == "array<float>"

    oracle = EmbeddingOracle(minilm_path, bits=bits, normalize=True, max_length=MAX_LENGTH, cpu_4bit_path=path)
    same = cosines(vectors, texts, oracle)
    drift = cosines(vectors, texts, fp32_oracle)
    loaded = load_model(si.ModelSpec(minilm_path, task="embedding", quantization=QUANTIZATION[bits]), "cpu")
    full = load_model(si.ModelSpec(minilm_path, task="embedding"), "cpu")
    packed, fp32, kinds = linear_weight_bytes(loaded.model)
    report = {
        "bits": bits,
        "cpu_4bit_path": path,
        "rows": len(texts),
        "vs_per_row_bitsandbytes": {"min": round(same.min(), 6), "mean": round(same.mean(), 6)},
        "drift_to_float32": {"min": round(drift.min(), 4), "mean": round(drift.mean(), 4)},
        "linear_weights_vs_float32": round(packed / fp32, 3),
        "model_bytes_vs_float32": round(loaded.memory_bytes / full.memory_bytes, 3),
    }
    print(f"\nquantized MiniLM through Spark: {json.dumps(report)}")

    assert same.min() >= MIN_COSINE[bits], f"row {same.argmin()}: cosine {same.min()} to the per-row oracle"
    assert drift.mean() >= MIN_MEAN_DRIFT[bits], report
    assert kinds == {BNB_LINEAR[bits]}
    assert packed < (0.5 if bits == 4 else 0.3) * fp32, report  # 4-bit: < 0.5x asked for, measured ~0.14x


def test_bfloat16_on_cpu_through_spark_returns_float32(
    spark: Any, minilm_path: str, texts: list[str], fp32_oracle: EmbeddingOracle
) -> None:
    rows = texts[:16]
    vectors, spark_type = embed_through_spark(spark, rows, minilm_path, dtype="bfloat16", device="cpu")
    assert spark_type == "array<float>"
    bf16_oracle = EmbeddingOracle(minilm_path, bits=None, dtype="bfloat16", normalize=True, max_length=MAX_LENGTH)
    bf16 = cosines(vectors, rows, bf16_oracle)
    fp32 = cosines(vectors, rows, fp32_oracle)
    print(f"\nbfloat16 MiniLM through Spark: vs per-row bf16 min {bf16.min():.5f}, vs float32 min {fp32.min():.5f} "
          f"mean {fp32.mean():.5f}")
    assert bf16.min() >= 0.999
    assert fp32.min() >= 0.99
    assert all(np.isfinite(v).all() for v in vectors)


def test_missing_bitsandbytes_fails_on_the_driver_when_the_column_is_built(
    spark: Any, monkeypatch: pytest.MonkeyPatch, minilm_path: str
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name))
    with pytest.raises(MissingDependencyError, match=r"pip install 'sparkinfer\[quant\]'"):
        si.embed("text", minilm_path, quantization="4bit")
    si.embed("text", minilm_path)  # no quantization, no bitsandbytes needed
