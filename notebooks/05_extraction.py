# Databricks notebook source
# MAGIC %md
# MAGIC # 05 · Typed extraction into columns
# MAGIC
# MAGIC `si.extract` pulls fields out of free text into a typed struct column. A causal LM writes JSON, and at
# MAGIC every decoding step the tokens the schema does not allow are masked (llguidance: install
# MAGIC `sparkinfer[extract]`), so every row that completes is JSON of the schema's shape. It is then validated
# MAGIC and converted: `struct<value, status, raw>`, with `status` `"ok"`, `"truncated"` (out of
# MAGIC `max_new_tokens`) or `"invalid"` (complete, but not valid).
# MAGIC
# MAGIC | parameter | meaning |
# MAGIC | --- | --- |
# MAGIC | `model` | a causal LM directory (e.g. a Volume holding a small instruct model) |
# MAGIC | `schema` | the fields to extract: Spark DDL (a JSON Schema or a pydantic model work too); `varchar(n)` bounds a string |
# MAGIC | `template` | the prompt, with `{column}` placeholders |
# MAGIC | `max_new_tokens`, `rows` | the JSON's token budget, sample rows |

# COMMAND ----------
import sparkinfer as si
from sparkinfer import notebook
spark = notebook.get_spark(globals().get("spark"))
params = notebook.Params(globals().get("dbutils"))
model = params.text("model", "/Volumes/main/default/models/llm", "Causal LM")
schema = params.text("schema", "summary varchar(60), kind varchar(12), arguments array<varchar(16)>, "
                     "returns_none boolean", "Schema (DDL)")
template = params.text("template", "Module {module}. Docstring: {text}\nAs JSON:", "Prompt template")
max_new_tokens = params.integer("max_new_tokens", 96, "Max new tokens")
rows = params.integer("rows", 8, "Rows")

# COMMAND ----------
# MAGIC %md
# MAGIC ## Extract
# MAGIC
# MAGIC The schema is checked on the driver: a type or keyword that cannot be decoded (say `decimal`, or
# MAGIC `uniqueItems`) fails here, naming it. The column's type is the schema's struct.

# COMMAND ----------
docs = notebook.sample_docs(spark, rows)
extracted = docs.withColumn(
    "fields", si.extract("text", model, schema, prompt=template, max_new_tokens=max_new_tokens)
)
extracted.printSchema()

# COMMAND ----------
# MAGIC %md
# MAGIC ## Fields as columns
# MAGIC
# MAGIC `fields.value.*` turns the struct into columns; rows that are not `"ok"` have a null value and keep
# MAGIC what the model wrote in `raw`, for review.

# COMMAND ----------
columns = extracted.select("id", "fields.status", "fields.value.*", "fields.raw").toPandas()
print(columns)

# COMMAND ----------
# MAGIC %md
# MAGIC ## How the rows ended
# MAGIC
# MAGIC Many `"truncated"` rows mean `max_new_tokens` is too small for the schema; `"invalid"` rows broke a rule
# MAGIC the grammar cannot enforce while decoding (a calendar date, say).

# COMMAND ----------
statuses = columns.groupby("status").size()
print(statuses)
