"""Notebook-tier fixtures: the Spark tier's varied classifier (its predictions differ from row to row)."""

from __future__ import annotations

from tests.spark.conftest import varied_classifier

__all__ = ["varied_classifier"]
