"""sparkinfer: offline batch inference with Hugging Face models on Apache Spark.

Example:
    >>> import sparkinfer as si
    >>> df = df.withColumn("emb", si.embed("text", "/models/all-MiniLM-L6-v2"))

The Spark-facing names (the column builders, ``register``, ``read_table``/``write_table``) need pyspark,
which is the ``spark`` extra: platforms such as Databricks bring their own. They are imported on first use,
so ``sparkinfer.engine`` and the specs work where pyspark is absent, and using one of them there raises a
`MissingDependencyError` that names the extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sparkinfer.errors import (
    InferenceError,
    MissingDependencyError,
    ModelLoadError,
    SparkInferError,
    SpecError,
    TableError,
)
from sparkinfer.spec import ModelSpec, QuantizationSpec
from sparkinfer.validation.checks import Check
from sparkinfer.validation.profile import Profile
from sparkinfer.validation.report import ValidationError, ValidationReport

if TYPE_CHECKING:
    from sparkinfer.spark.partitioning import repartition_for_inference
    from sparkinfer.spark.plan import plan
    from sparkinfer.spark.tables import read_table, repair_delta_statistics, write_table
    from sparkinfer.spark.udf import classify, classify_tokens, embed, extract, generate, predict, prompt, register
    from sparkinfer.spark.validate import review_sample, validate

__version__ = "0.1.0"

# name → the module that defines it; importing one imports pyspark (see sparkinfer.spark).
_SPARK_NAMES = {
    **dict.fromkeys(("classify", "classify_tokens", "embed", "extract", "generate", "predict", "prompt", "register"),
                    "sparkinfer.spark.udf"),
    **dict.fromkeys(("read_table", "repair_delta_statistics", "write_table"), "sparkinfer.spark.tables"),
    **dict.fromkeys(("review_sample", "validate"), "sparkinfer.spark.validate"),
    "plan": "sparkinfer.spark.plan",
    "repartition_for_inference": "sparkinfer.spark.partitioning",
}

__all__ = [
    "Check",
    "InferenceError",
    "MissingDependencyError",
    "ModelLoadError",
    "ModelSpec",
    "Profile",
    "QuantizationSpec",
    "SparkInferError",
    "SpecError",
    "TableError",
    "ValidationError",
    "ValidationReport",
    "classify",
    "classify_tokens",
    "embed",
    "extract",
    "generate",
    "plan",
    "predict",
    "prompt",
    "read_table",
    "register",
    "repair_delta_statistics",
    "repartition_for_inference",
    "review_sample",
    "validate",
    "write_table",
]


def __getattr__(name: str) -> Any:
    """Import a Spark-facing name on first use (PEP 562), then keep it as a plain module attribute."""
    module = _SPARK_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'sparkinfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SPARK_NAMES})
