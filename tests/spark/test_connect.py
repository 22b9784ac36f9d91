"""Spark Connect: runs tests/connect in a pytest process of its own and requires every test there to pass.

A Connect client switches PySpark's functions to Connect for its whole process, so those tests cannot share
this process's classic session. The child's output is printed here, test by test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pyspark
import pytest

pytestmark = pytest.mark.spark

pytest.importorskip("grpc", reason="Spark Connect needs pyspark's connect extra (pip install 'pyspark[connect]')")

CONNECT_TESTS = Path(__file__).resolve().parents[1] / "connect"

if not list((Path(pyspark.__file__).parent / "jars").glob("spark-connect_*.jar")):
    pytest.skip(f"pyspark {pyspark.__version__}'s package has no Spark Connect server jar (PySpark 3.5 fetches it "
                "from Maven, unreachable here); the Connect tests run on PySpark 4", allow_module_level=True)


def test_spark_connect_suite() -> None:
    command = [sys.executable, "-m", "pytest", str(CONNECT_TESTS), "-v", "-p", "no:cacheprovider", "-rA"]
    env = {**os.environ, "SPARKINFER_CONNECT_TESTS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env,
                          cwd=CONNECT_TESTS.parents[1])
    print(done.stdout[-20000:], done.stderr[-5000:], sep="\n")
    assert done.returncode == 0, "the Spark Connect tests failed (their output is above)"
    collected = len(re.findall(r"^tests/connect/\S+::\S+ PASSED", done.stdout, re.MULTILINE))
    summary = done.stdout.strip().splitlines()[-1]
    assert collected >= 5 and re.search(rf"\b{collected} passed\b", summary) and "skipped" not in summary, summary
