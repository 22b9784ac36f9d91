# Databricks notebook source
# MAGIC %md
# MAGIC # 02 · Delta pipeline: read Delta → predict → write Delta, incrementally
# MAGIC
# MAGIC The prediction job (`sparkinfer.spark.job`, also `sparkinfer run ...` and `spark-submit
# MAGIC scripts/predict_table.py ...`) reads a table, adds a prediction column and writes a table. With a `key`
# MAGIC column it is resumable and incremental: every output row carries the fingerprint of the model that
# MAGIC predicted it, and a run predicts only the keys the output does not hold yet, in chunks committed one by one.
# MAGIC Each run returns a report (rows, tokens, padding, throughput, Delta versions), also written as JSON.
# MAGIC
# MAGIC Delta goes through Spark's Delta source when the session has one (Databricks), else through delta-rs
# MAGIC (`pip install 'sparkinfer[delta]'`).
# MAGIC
# MAGIC | parameter | meaning |
# MAGIC | --- | --- |
# MAGIC | `input`, `output` | Delta table directories (a Volume path on Databricks) |
# MAGIC | `model` | a sentence-transformers model directory |
# MAGIC | `rows` | sample rows written to the input: half before the first run, half before the second |

# COMMAND ----------
import json
import sparkinfer as si
from sparkinfer import notebook
from sparkinfer.spark.job import Job, run, write_report
spark = notebook.get_spark(globals().get("spark"))
params = notebook.Params(globals().get("dbutils"))
input_path = params.text("input", "/tmp/sparkinfer_notebooks/docs", "Input Delta table")
output_path = params.text("output", "/tmp/sparkinfer_notebooks/docs_embeddings", "Output Delta table")
minilm = notebook.bundled_minilm("/Volumes/main/default/models/all-MiniLM-L6-v2")  # bundled locally
model = params.text("model", minilm, "Embedding model")
rows = params.integer("rows", 12, "Rows")

# COMMAND ----------
# MAGIC %md
# MAGIC ## The input table
# MAGIC
# MAGIC A demo input: the first half of the sample docstrings as a Delta table. On your own data, skip this cell and
# MAGIC point `input` at your table (a path or a catalog name).

# COMMAND ----------
first_rows = rows // 2
si.write_table(notebook.sample_docs(spark, first_rows), input_path, "delta", mode="overwrite")
si.read_table(spark, input_path).show(truncate=60)

# COMMAND ----------
# MAGIC %md
# MAGIC ## Predict into the output table
# MAGIC
# MAGIC `key="id"` makes the run resumable: killed halfway, the next run finishes the missing keys exactly once.
# MAGIC The report is printed and written next to the output (`<output>.report.json`).

# COMMAND ----------
job = Job(
    input=input_path,
    output=output_path,
    spec=si.ModelSpec(model, task="embedding"),
    input_cols=("text",),
    output_cols=("embedding",),
    key="id",
    format="delta",
)
first = run(spark, job)
write_report(first, job.report_path)
print(json.dumps(first.to_dict(), indent=2))

# COMMAND ----------
# MAGIC %md
# MAGIC ## New rows arrive: an incremental run
# MAGIC
# MAGIC Append the other half to the input and run the same job again: it skips the keys already predicted with
# MAGIC the same model fingerprint and predicts only the new ones.

# COMMAND ----------
si.write_table(notebook.sample_docs(spark, rows - first_rows, start=first_rows), input_path, "delta", mode="append")
second = run(spark, job)
write_report(second, job.report_path)
print({k: second.to_dict()[k] for k in ("rows_in", "rows_skipped", "rows_out", "chunks", "delta_versions")})

# COMMAND ----------
# MAGIC %md
# MAGIC ## Nothing new: a run that predicts nothing
# MAGIC
# MAGIC A scheduled job can run as often as it likes: with every key done it reads the keys, predicts nothing and
# MAGIC commits nothing.

# COMMAND ----------
third = run(spark, job)
print({k: third.to_dict()[k] for k in ("rows_in", "rows_skipped", "rows_out", "chunks", "delta_versions")})

# COMMAND ----------
# MAGIC %md
# MAGIC ## The output table and its report
# MAGIC
# MAGIC Every row holds its embedding and `sparkinfer_fingerprint`, the hash of what determined the prediction
# MAGIC (model, task, prediction options, input columns).

# COMMAND ----------
output = si.read_table(spark, output_path).orderBy("id").toPandas()
print(output[["id", "module", "sparkinfer_fingerprint"]])
with open(job.report_path) as report_file:
    last_report = json.load(report_file)
print(f"last report: {last_report['rows_out']} rows out, {last_report['rows_skipped']} skipped, "
      f"{last_report['rows_per_second']:.1f} rows/s, padding efficiency {last_report['padding_efficiency']:.2f}")
