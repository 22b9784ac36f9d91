"""spark-submit entry of the prediction job: ``spark-submit scripts/predict_table.py --help``.

A thin wrapper: the job lives in ``sparkinfer.spark.job`` (also installed as ``sparkinfer run``).
"""

from __future__ import annotations

from sparkinfer.spark.job import main

if __name__ == "__main__":
    raise SystemExit(main(prog="predict_table.py"))
