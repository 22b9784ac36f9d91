"""The Spark-free inference engine: Arrow in, Arrow out. Imports torch only inside functions."""

from __future__ import annotations

from sparkinfer.engine.metrics import Metrics
from sparkinfer.engine.runner import output_type, run, run_stream

__all__ = ["Metrics", "output_type", "run", "run_stream"]
