"""``python -m sparkinfer``: the ``sparkinfer`` console script (``run``, ``plan``, ``publish``)."""

from __future__ import annotations

from sparkinfer.spark.job import cli

if __name__ == "__main__":
    raise SystemExit(cli())
