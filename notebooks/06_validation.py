# Databricks notebook source
# MAGIC %md
# MAGIC # 06 · Validate predictions before publishing them
# MAGIC
# MAGIC `si.validate(table, "previous")` profiles the prediction columns of a Delta table's current version in one
# MAGIC pass (counts, value distributions, an embedding sample; never the rows themselves on the driver), compares
# MAGIC them with the version before, and runs checks: error and null rates, drift of each field (PSI, normalised
# MAGIC Wasserstein distance, KS), and for embeddings a classifier asked to tell the two versions apart (a held-out
# MAGIC ROC AUC near 0.5 means it cannot). The report says whether the new version may be published, and why not.
# MAGIC
# MAGIC The notebook writes three runs of embeddings into one Delta table: v0 and v1 embed different docstrings of
# MAGIC the same kind, v2 embeds v1's docstrings as a changed upstream now sends them, wrapped in HTML markup.
# MAGIC
# MAGIC | parameter | meaning |
# MAGIC | --- | --- |
# MAGIC | `model` | a sentence-transformers model directory |
# MAGIC | `table` | the Delta table the runs are written to (a Volume path on Databricks) |
# MAGIC | `report_dir` | where the HTML and JSON reports go |
# MAGIC | `rows` | sample docstrings per run, at most 50 (the domain classifier needs 50 rows a side) |
# MAGIC | `per_stratum` | rows per stratum in the review sample |

# COMMAND ----------
import pandas as pd
from pyspark.sql import functions as F
import sparkinfer as si
from sparkinfer import notebook
spark = notebook.get_spark(globals().get("spark"))
params = notebook.Params(globals().get("dbutils"))
minilm = notebook.bundled_minilm("/Volumes/main/default/models/all-MiniLM-L6-v2")  # bundled locally
model = params.text("model", minilm, "Embedding model")
table = params.text("table", "/tmp/sparkinfer_notebooks/validation/doc_embeddings", "Predictions (Delta table)")
report_dir = params.text("report_dir", "/tmp/sparkinfer_notebooks/validation/reports", "Report directory")
rows = params.integer("rows", 50, "Rows per run")
per_stratum = params.integer("per_stratum", 5, "Review rows per stratum")

# COMMAND ----------
# MAGIC %md
# MAGIC ## Run 0: the published predictions
# MAGIC
# MAGIC A prediction job's output: the first docstrings and their embeddings, written as a new version of the table.

# COMMAND ----------
run_0 = notebook.sample_docs(spark, rows).withColumn("embedding", si.embed("text", model))
si.write_table(run_0, table, "delta", mode="overwrite")

# COMMAND ----------
# MAGIC %md
# MAGIC ## Run 1: new rows of the same kind pass
# MAGIC
# MAGIC The next run embeds other docstrings. With no configuration, `si.validate` finds the prediction columns by
# MAGIC their types (here `embedding`) and runs the default checks against the previous version. Two samples of
# MAGIC the same kind of text give embeddings a classifier cannot tell apart.

# COMMAND ----------
run_1 = notebook.sample_docs(spark, rows, start=rows).withColumn("embedding", si.embed("text", model))
si.write_table(run_1, table, "delta", mode="overwrite")
report_1 = si.validate(table, "previous")
print(report_1.summary())
print(f"{report_1.current.source} against {report_1.reference.source}: "
      f"domain AUC {report_1.metric('embedding', 'domain_auc'):.3f}")

# COMMAND ----------
# MAGIC %md
# MAGIC ## Run 2: a changed upstream fails
# MAGIC
# MAGIC The same docstrings as run 1, except that the service they come from now sends them in their HTML markup.
# MAGIC Nothing errors and no value is null, yet the embeddings moved: the classifier tells this version from the
# MAGIC previous one, and the check on it fails. A drift check fails only when the shift is also statistically
# MAGIC significant (`alpha=0.01`), so small runs are not blocked by sampling noise alone.

# COMMAND ----------
markup = '<div class="docstring"><p>%s</p></div>'
changed = notebook.sample_docs(spark, rows, start=rows).withColumn("text", F.format_string(markup, "text"))
run_2 = changed.withColumn("embedding", si.embed("text", model))
si.write_table(run_2, table, "delta", mode="overwrite")
report_2 = si.validate(table, "previous")
print(report_2.summary())
metrics = pd.DataFrame([m.to_dict() for m in report_2.metrics])
print(metrics[["column", "metric", "value"]])

# COMMAND ----------
# MAGIC %md
# MAGIC ## Your own checks
# MAGIC
# MAGIC `columns=` also profiles columns that are not predictions, given a kind: here the input `text`, whose
# MAGIC length distribution then gets the default drift checks. A `si.Check` replaces the default check on the same
# MAGIC column and metric, or adds one: the embeddings' centroid may move by at most 0.02 in cosine distance, as an
# MAGIC error instead of the default warning, and no profiled column (`"*"`) may hold a null. The same checks can
# MAGIC live in a YAML file (`checks="checks.yml"`).

# COMMAND ----------
checks = [
    si.Check(column="embedding", metric="centroid_cosine", max=0.02, severity="error"),
    si.Check(column="*", metric="null_rate", max=0.0),
]
columns = {"embedding": "embedding", "text": "text"}
report = si.validate(table, "previous", checks, columns=columns)
print(report.summary())

# COMMAND ----------
# MAGIC %md
# MAGIC ## The report
# MAGIC
# MAGIC One self-contained HTML page (inline SVG plots of each field, current against reference) and the same data
# MAGIC as JSON, for a job's artifacts or a dashboard. On Databricks the page is also shown here.

# COMMAND ----------
html_path = f"{report_dir}/v2.html"
json_path = f"{report_dir}/v2.json"
report.save_html(html_path)
report.save_json(json_path)
print(f"wrote {html_path} and {json_path}")
if "displayHTML" in globals():
    displayHTML(report.to_html())  # noqa: F821 (a Databricks global)

# COMMAND ----------
# MAGIC %md
# MAGIC ## Rows to read
# MAGIC
# MAGIC Statistics say that something moved; a person reading rows says what. `si.review_sample` takes a few random
# MAGIC rows from each stratum of each profiled column (text-length quintiles here, a uniform sample of the
# MAGIC embeddings), using the report's profile of the table: every stratum shows the markup.

# COMMAND ----------
current = si.read_table(spark, table)
review = si.review_sample(current, report.current, per_stratum=per_stratum)
review_rows = review.select("review_column", "review_stratum", "id", "text").orderBy(
    "review_column", "review_stratum", "id").toPandas()
print(review_rows.assign(text=review_rows.text.str.slice(0, 60)))
print(review_rows.groupby(["review_column", "review_stratum"]).size())

# COMMAND ----------
# MAGIC %md
# MAGIC ## Block the publish
# MAGIC
# MAGIC In a job, `raise_if_failed` stops the pipeline before anything downstream reads the new version; warnings
# MAGIC are reported but do not block.

# COMMAND ----------
try:
    report.raise_if_failed()
    blocked = None
except si.ValidationError as error:
    blocked = str(error)
print(blocked or "published")
