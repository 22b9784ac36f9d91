"""Run Python code in a fresh interpreter where pyspark cannot be imported, as on a machine without it.

A meta-path finder placed first refuses ``pyspark`` and its submodules, so every import of them fails with
``ModuleNotFoundError`` (what a missing package gives), even though this venv has pyspark installed.
"""

from __future__ import annotations

import subprocess
import sys

BLOCK_PYSPARK = """\
import importlib.abc, sys
class _NoPyspark(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pyspark" or name.startswith("pyspark."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoPyspark())
"""


def run_without_pyspark(code: str, *, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `code` after `BLOCK_PYSPARK`; the caller checks returncode, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-c", BLOCK_PYSPARK + code], capture_output=True, text=True, timeout=timeout
    )
