"""The Spark layer: the only package that imports pyspark, which is the ``spark`` extra."""

from __future__ import annotations

from sparkinfer._optional import require

# Fails with the extra's name, not a bare ModuleNotFoundError, wherever pyspark is absent.
require("pyspark", extra="spark", purpose="sparkinfer's Spark layer (the column builders, register, tables, the job)")
