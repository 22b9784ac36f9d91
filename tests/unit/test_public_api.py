"""The public surface of `sparkinfer`, pinned (httpx style), and an import that stays light."""

from __future__ import annotations

import __future__
import importlib
import json
import subprocess
import sys
from types import ModuleType

import pytest

import sparkinfer
from tests.no_pyspark import run_without_pyspark


# Where each public name is defined: the Spark-facing ones load lazily, on first use (sparkinfer.__getattr__).
HOMES = {
    **dict.fromkeys(("InferenceError", "MissingDependencyError", "ModelLoadError", "SparkInferError", "SpecError",
                     "TableError"), "sparkinfer.errors"),
    **dict.fromkeys(("ModelSpec", "QuantizationSpec"), "sparkinfer.spec"),
    "Check": "sparkinfer.validation.checks",
    "Profile": "sparkinfer.validation.profile",
    **dict.fromkeys(("ValidationError", "ValidationReport"), "sparkinfer.validation.report"),
    **dict.fromkeys(("review_sample", "validate"), "sparkinfer.spark.validate"),
    "plan": "sparkinfer.spark.plan",
    "repartition_for_inference": "sparkinfer.spark.partitioning",
    **dict.fromkeys(("classify", "classify_tokens", "embed", "extract", "generate", "predict", "prompt", "register"),
                    "sparkinfer.spark.udf"),
    **dict.fromkeys(("read_table", "repair_delta_statistics", "write_table"), "sparkinfer.spark.tables"),
}


def test_all_is_sorted_and_equals_the_public_names() -> None:
    public = {
        name
        for name in dir(sparkinfer)  # the lazy names too, loaded or not
        if not name.startswith("_")
        and not isinstance(getattr(sparkinfer, name), ModuleType)  # subpackages bound by importing them
        and not isinstance(getattr(sparkinfer, name), __future__._Feature)  # `from __future__ import annotations`
        and name not in ("TYPE_CHECKING", "Any")  # typing helpers of __init__ itself
    }
    assert sparkinfer.__all__ == sorted(sparkinfer.__all__)
    assert set(sparkinfer.__all__) == public == set(HOMES)
    assert len(sparkinfer.__all__) == len(set(sparkinfer.__all__))


@pytest.mark.parametrize("name", sorted(HOMES))
def test_every_exported_name_is_its_home_modules_object_and_documented(name: str) -> None:
    value = getattr(sparkinfer, name)
    assert value is getattr(importlib.import_module(HOMES[name]), name)
    assert value.__module__ == HOMES[name]
    summary = (value.__doc__ or "").strip().splitlines()
    assert summary and summary[0].endswith("."), f"{name} needs a docstring with a one-line summary"


def test_error_hierarchy() -> None:
    assert issubclass(sparkinfer.SpecError, sparkinfer.SparkInferError)
    assert issubclass(sparkinfer.SpecError, ValueError)
    assert issubclass(sparkinfer.MissingDependencyError, ImportError)
    for name in ("ModelLoadError", "InferenceError", "MissingDependencyError"):
        assert issubclass(getattr(sparkinfer, name), sparkinfer.SparkInferError)


def _fresh_interpreter(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_importing_sparkinfer_does_not_import_torch_or_transformers() -> None:
    result = _fresh_interpreter(
        "import sys, sparkinfer, sparkinfer.engine\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    assert result.returncode == 0, result.stderr


def test_importing_sparkinfer_has_no_side_effects_on_the_environment() -> None:
    result = _fresh_interpreter(
        "import os, warnings\n"
        # Dependencies first: numpy installs warning filters of its own on import.
        "import numpy, pandas, pyarrow, pyspark.sql.functions\n"
        "env, filters = dict(os.environ), list(warnings.filters)\n"
        "import sparkinfer\n"
        "assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items())\n"
        "assert list(warnings.filters) == filters\n"
    )
    assert result.returncode == 0, result.stderr


def test_the_engine_imports_and_runs_without_pyspark(tiny_classifier: str) -> None:
    """pyspark is the `spark` extra: the engine and the specs need none, the Spark names say which extra."""
    code = f"""
import json, sys
import pyarrow as pa
import sparkinfer, sparkinfer.engine
from sparkinfer import ModelSpec
out, metrics = sparkinfer.engine.run(ModelSpec({tiny_classifier!r}, task="classification"),
                                     pa.array(["a first row", None, "and a second, longer row"]))
errors = {{}}
for name in ("embed", "register", "read_table"):
    try:
        getattr(sparkinfer, name)
    except sparkinfer.MissingDependencyError as exc:
        errors[name] = str(exc)
try:
    import sparkinfer.spark.job
except ImportError as exc:
    errors["sparkinfer.spark.job"] = f"{{type(exc).__name__}}: {{exc}}"
print(json.dumps({{"rows": out.to_pylist(), "errors": errors, "pyspark": "pyspark" in sys.modules}}))
"""
    result = run_without_pyspark(code)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.splitlines()[-1])
    assert got["pyspark"] is False
    assert set(got["errors"]) == {"embed", "register", "read_table", "sparkinfer.spark.job"}
    for message in got["errors"].values():
        assert "needs pyspark, which is not installed; install it with: pip install 'sparkinfer[spark]'" in message
    assert got["errors"]["sparkinfer.spark.job"].startswith("MissingDependencyError")

    # The same rows with pyspark importable, in this process: the block changed nothing else.
    import pyarrow as pa

    from sparkinfer import ModelSpec
    from sparkinfer.engine import run

    out, _ = run(ModelSpec(tiny_classifier, task="classification"),
                 pa.array(["a first row", None, "and a second, longer row"]))
    assert got["rows"] == out.to_pylist() and got["rows"][1] is None
    assert got["rows"][0] != got["rows"][2]
