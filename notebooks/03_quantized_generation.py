# Databricks notebook source
# MAGIC %md
# MAGIC # 03 · Generation with a 4-bit LLM
# MAGIC
# MAGIC `si.generate` runs a decoder-only LM over a column and returns only the continuation. Here the prompt is
# MAGIC built from several columns with `si.prompt`, the model is loaded in 4-bit NF4 (`quantization="4bit"`,
# MAGIC bitsandbytes: `pip install 'sparkinfer[quant]'`), and `return_details=True` returns
# MAGIC `struct<text, prompt_tokens, completion_tokens, finish_reason>`.
# MAGIC
# MAGIC Greedy decoding (the default) gives the same text as `model.generate` on each row alone; the micro-batch
# MAGIC token budget counts prompt + `max_new_tokens`. 4-bit is what makes billion-parameter models fit a GPU;
# MAGIC on a CPU it saves memory, not time.
# MAGIC
# MAGIC | parameter | meaning |
# MAGIC | --- | --- |
# MAGIC | `model` | a causal LM directory (e.g. a Volume holding a small instruct model) |
# MAGIC | `quantization` | `4bit` (NF4), `8bit`, or empty for the model's own dtype |
# MAGIC | `template` | the prompt, with `{column}` placeholders |
# MAGIC | `max_new_tokens`, `rows` | tokens generated per row, sample rows |

# COMMAND ----------
import sparkinfer as si
from sparkinfer import notebook
spark = notebook.get_spark(globals().get("spark"))
params = notebook.Params(globals().get("dbutils"))
model = params.text("model", "/Volumes/main/default/models/llm", "Causal LM")
quantization = params.text("quantization", "4bit", "Quantization (4bit, 8bit or empty)")
template = params.text("template", "Module {module}. Docstring: {text}\nOne-line summary:", "Prompt template")
max_new_tokens = params.integer("max_new_tokens", 32, "Max new tokens")
rows = params.integer("rows", 8, "Rows")

# COMMAND ----------
# MAGIC %md
# MAGIC ## The prompt template
# MAGIC
# MAGIC `si.prompt(template)` fills each `{column}` with the column cast to string (`{{`/`}}` for literal braces);
# MAGIC a null column gives a null prompt and a null output. A malformed template fails here, on the driver.

# COMMAND ----------
docs = notebook.sample_docs(spark, rows)
docs.select("id", si.prompt(template).alias("prompt")).show(3, truncate=100)

# COMMAND ----------
# MAGIC %md
# MAGIC ## Generate, 4-bit, with details
# MAGIC
# MAGIC `finish_reason` is `"stop"` when the model ended the text (an end-of-sequence token or a `stop` string) and
# MAGIC `"length"` when `max_new_tokens` cut it.

# COMMAND ----------
answers = docs.withColumn(
    "answer",
    si.generate(si.prompt(template), model, quantization=quantization or None, max_new_tokens=max_new_tokens,
                return_details=True),
)
details = answers.select(
    "id", "answer.text", "answer.prompt_tokens", "answer.completion_tokens", "answer.finish_reason"
).toPandas()
print(details)

# COMMAND ----------
# MAGIC %md
# MAGIC ## How the rows ended
# MAGIC
# MAGIC The details make the cost visible: prompt and completion tokens per row, and how many rows hit the limit
# MAGIC (raise `max_new_tokens`, or add `stop=[...]`, if too many did).

# COMMAND ----------
finished = details.groupby("finish_reason").agg(
    rows=("id", "count"), completion_tokens=("completion_tokens", "sum"), prompt_tokens=("prompt_tokens", "sum")
)
print(finished)
