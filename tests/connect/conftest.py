"""Spark Connect fixtures: a Connect server in a child process and a client session in this one.

This directory runs only in its own pytest process (see tests/spark/test_connect.py): a Connect client
switches PySpark's functions to Connect for the whole process, which would break the classic session the
rest of the suite shares. The client process starts no JVM, as on Databricks serverless and shared clusters.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SERVER = Path(__file__).with_name("server.py")


@pytest.fixture(scope="session")
def connect_url() -> Iterator[str]:
    """``sc://localhost:PORT`` of a local[2] Spark Connect server that lives as long as the session."""
    with socket.socket() as probe:  # a free port; the server binds it a moment later
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, str(SERVER), str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    try:
        line = server.stdout.readline()  # "ready", or "" when the server died first (its stderr is shown)
        assert line.strip() == "ready", f"the Connect server did not start (exit code {server.poll()})"
        yield f"sc://localhost:{port}"
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="session")
def spark(connect_url: str) -> Iterator[Any]:
    """A Spark Connect client session (overrides the suite's classic `spark` for this directory)."""
    from pyspark.sql import SparkSession

    session = SparkSession.builder.remote(connect_url).getOrCreate()
    assert type(session).__module__ == "pyspark.sql.connect.session", type(session)
    yield session
    session.stop()


@pytest.fixture(scope="session", autouse=True)
def no_jvm_in_client() -> Iterator[None]:
    """After the last test: nothing sparkinfer did on the client started a SparkContext (Connect has none)."""
    yield
    from pyspark import SparkContext

    assert SparkContext._active_spark_context is None, "a SparkContext was started in the Connect client"
