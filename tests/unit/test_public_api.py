"""The public surface of `sparkinfer`, pinned (httpx style), and an import that stays light."""

from __future__ import annotations

import __future__
import subprocess
import sys
from types import ModuleType

import sparkinfer


def test_all_is_sorted_and_equals_the_public_names() -> None:
    public = {
        name
        for name, value in vars(sparkinfer).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)  # subpackages bound by importing them
        and not isinstance(value, __future__._Feature)  # `from __future__ import annotations`
    }
    assert sparkinfer.__all__ == sorted(sparkinfer.__all__)
    assert set(sparkinfer.__all__) == public
    assert len(sparkinfer.__all__) == len(set(sparkinfer.__all__))


def test_every_exported_name_resolves() -> None:
    for name in sparkinfer.__all__:
        assert getattr(sparkinfer, name) is not None


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
