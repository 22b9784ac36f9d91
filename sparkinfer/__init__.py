"""sparkinfer: offline batch inference with Hugging Face models on Apache Spark.

Example:
    >>> import sparkinfer as si
    >>> df = df.withColumn("emb", si.embed("text", "/models/all-MiniLM-L6-v2"))
"""

from __future__ import annotations

from sparkinfer.errors import (
    InferenceError,
    MissingDependencyError,
    ModelLoadError,
    SparkInferError,
    SpecError,
    TableError,
)
from sparkinfer.spark.tables import read_table, write_table
from sparkinfer.spark.udf import classify, classify_tokens, embed, generate, predict, prompt, register
from sparkinfer.spec import ModelSpec, QuantizationSpec

__version__ = "0.1.0"

__all__ = [
    "InferenceError",
    "MissingDependencyError",
    "ModelLoadError",
    "ModelSpec",
    "QuantizationSpec",
    "SparkInferError",
    "SpecError",
    "TableError",
    "classify",
    "classify_tokens",
    "embed",
    "generate",
    "predict",
    "prompt",
    "read_table",
    "register",
    "write_table",
]
