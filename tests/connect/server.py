"""A local Spark Connect server for tests/connect: ``python tests/connect/server.py PORT``.

A classic local[2] session with Spark's Connect plugin, configured like the suite's classic session. It
prints ``ready`` once it listens and stops when its stdin closes, so it cannot outlive the test run.
"""

from __future__ import annotations

import os
import sys


def main(port: str) -> None:
    os.environ["PYSPARK_PYTHON"] = sys.executable  # the Python workers need this interpreter's packages
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("sparkinfer-connect-tests")
        .config("spark.plugins", "org.apache.spark.sql.connect.SparkConnectPlugin")
        .config("spark.connect.grpc.binding.port", port)
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "16")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    print("ready", flush=True)
    sys.stdin.read()
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1])
