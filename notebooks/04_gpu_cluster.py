# Databricks notebook source
# MAGIC %md
# MAGIC # 04 · GPU clusters: one model per GPU, and sizing the token budget
# MAGIC
# MAGIC On a GPU executor sparkinfer runs each task's model on the GPU Spark assigned to that task
# MAGIC (`TaskContext.resources()["gpu"]`; `device="auto"`, the default). Two settings decide how well a GPU is
# MAGIC used: how many tasks share it (the cluster's Spark confs) and how many tokens go into one forward pass
# MAGIC (`batch_tokens`). This notebook prints the confs, plans the run (`si.plan`: token lengths, padding, suggested
# MAGIC `batch_tokens` and partitions, projected time), measures budgets on the driver's device, and runs a job with the
# MAGIC chosen one. It runs on a CPU too (no peak memory then): the numbers, not the steps, change on a GPU.
# MAGIC
# MAGIC | parameter | meaning |
# MAGIC | --- | --- |
# MAGIC | `model` | a sentence-transformers model directory |
# MAGIC | `cores_per_executor` | CPU cores of one executor (one GPU each) |
# MAGIC | `budgets` | comma-separated `batch_tokens` to measure |
# MAGIC | `calibrate` | rows the plan runs the model on to project the job's time (0: none) |
# MAGIC | `batch_tokens` | the budget the job runs with (0: the plan's recommendation) |
# MAGIC | `rows`, `work_dir` | sample rows; where the job's input and output go |

# COMMAND ----------
import pandas as pd
import sparkinfer as si
from sparkinfer import notebook
from sparkinfer.engine.placement import TaskResources, shared_gpu_warning
from sparkinfer.spark.job import Job, run
spark = notebook.get_spark(globals().get("spark"))
params = notebook.Params(globals().get("dbutils"))
minilm = notebook.bundled_minilm("/Volumes/main/default/models/all-MiniLM-L6-v2")  # bundled locally
model = params.text("model", minilm, "Embedding model")
cores_per_executor = params.integer("cores_per_executor", 8, "Cores per executor")
budgets = [int(b) for b in params.text("budgets", "1024,4096,16384,65536", "Budgets to measure").split(",")]
batch_tokens = params.integer("batch_tokens", 0, "batch_tokens for the job (0: the plan's)")
rows = params.integer("rows", 100, "Rows (the sample has 100)")
calibrate = params.integer("calibrate", 100, "Rows to calibrate the plan on (0: none)")
work_dir = params.text("work_dir", "/tmp/sparkinfer_notebooks/gpu", "Work directory")

# COMMAND ----------
# MAGIC %md
# MAGIC ## Cluster confs: one task, one model, per GPU
# MAGIC
# MAGIC - `spark.executor.resource.gpu.amount=1`: **one GPU per executor** is the layout to prefer. The model is
# MAGIC   cached per Python worker and per device; on a multi-GPU executor a reused worker handed a task on another
# MAGIC   GPU loads the model again there (and frees the old copy).
# MAGIC - `spark.task.resource.gpu.amount=1`: one task, so one model, per GPU. Below 1 (e.g. `0.25`) several tasks
# MAGIC   share a GPU, each in its own Python worker with **its own copy** of the model; sparkinfer logs a warning
# MAGIC   with the copies and the memory they cost.
# MAGIC - `spark.task.cpus` = the executor's cores: torch and the tokenizer use that many threads per task, so
# MAGIC   tokenization (overlapped with the forward pass) keeps up with the GPU.
# MAGIC - `spark.executor.resource.gpu.discoveryScript` prints the executor's GPU addresses; Spark's
# MAGIC   `getGpusResources.sh` prints `nvidia-smi` indices, which sparkinfer maps to `cuda:N` (through
# MAGIC   `CUDA_VISIBLE_DEVICES` when the cluster manager sets it). Standalone workers also need
# MAGIC   `spark.worker.resource.gpu.amount` and `spark.worker.resource.gpu.discoveryScript`.
# MAGIC
# MAGIC On Databricks choose a GPU node type: it sets the GPU resources and the discovery script. Cluster-level confs
# MAGIC go in the cluster's *Spark config*; they cannot be changed from a running notebook.

# COMMAND ----------
confs = notebook.gpu_cluster_confs(cores_per_executor)
print("spark-submit \\\n" + "".join(f"  --conf {key}={value} \\\n" for key, value in confs.items()) + "  ...")
print("this session: spark.task.resource.gpu.amount =", spark.conf.get("spark.task.resource.gpu.amount", None))

# COMMAND ----------
# MAGIC %md
# MAGIC ## Plan the run
# MAGIC
# MAGIC `si.plan` (the `sparkinfer plan` command, with `run`'s options) samples the texts and tokenizes them on the
# MAGIC driver with the model's own tokenizer, no GPU needed: the token-length distribution, the share truncated at
# MAGIC `max_length`, and the padding of each candidate `batch_tokens`, replaying the engine's length-sorted
# MAGIC micro-batches. It suggests `batch_tokens`, `partitions` (every task slot busy, a few waves, full buffers) and
# MAGIC `chunk_rows`. With `calibrate=N` it runs the model on N sampled rows in one Spark task, on an executor's GPU,
# MAGIC and projects the job's time with a 90% interval, for this cluster or another shape (`executors=8,
# MAGIC gpus_per_executor=1`); `save_plot` draws the histogram and the time against executors.

# COMMAND ----------
docs = notebook.sample_docs(spark, rows)
plan = si.plan(spark, docs, si.ModelSpec(model, task="embedding"), sample=rows, calibrate=calibrate or None)
print(plan.summary())
plan.save_plot(f"{work_dir}/plan.png")
chosen_tokens = batch_tokens or plan.recommended["batch_tokens"]

# COMMAND ----------
# MAGIC %md
# MAGIC ## Sizing the token budget
# MAGIC
# MAGIC A micro-batch holds rows × padded length ≤ `batch_tokens` tokens (rows are length-sorted, so padding stays
# MAGIC small). Activation memory grows with the budget; throughput grows with it until the GPU is busy, then stops,
# MAGIC and fewer, wider micro-batches pad more (`padded_tokens`). Measure on one GPU like the executors' (the driver
# MAGIC of a single-node GPU cluster), on real rows: take the smallest budget that reaches the best rows/s, and check
# MAGIC that its peak memory leaves headroom (say 20%) for longer rows than the sample's. For generation the budget counts prompt + `max_new_tokens`. If a budget is too large anyway, a CUDA
# MAGIC out-of-memory halves the micro-batch and keeps the smaller budget for the rest of the task (`oom_splits` in
# MAGIC the report), so a wrong guess costs speed, not the job. The plan's padding says which budgets waste little;
# MAGIC this measures what they cost on the device.

# COMMAND ----------
texts = [row.text for row in docs.select("text").collect()]
probes = notebook.probe_token_budgets(si.ModelSpec(model, task="embedding"), texts, budgets)
measured = pd.DataFrame([{**vars(p), "rows_per_second": p.rows_per_second} for p in probes])
columns = ["batch_tokens", "micro_batches", "padded_tokens", "rows_per_second", "peak_memory_bytes"]
print(measured[columns].to_string(index=False))
print(shared_gpu_warning(TaskResources(("0",), 0.25), device="cuda:0", model=model,
                         model_bytes=probes[0].model_bytes))

# COMMAND ----------
# MAGIC %md
# MAGIC ## Run the job with the chosen budget
# MAGIC
# MAGIC `batch_tokens` changes speed and memory, never predictions: it is left out of the model fingerprint, so
# MAGIC changing it does not make a keyed job predict its rows again. The job runs in the plan's partitions. The report
# MAGIC shows the micro-batches the budget gave and whether any ran out of memory; compare its `seconds` with the
# MAGIC plan's projection.

# COMMAND ----------
si.write_table(docs, f"{work_dir}/docs", "parquet", mode="overwrite")
job = Job(
    input=f"{work_dir}/docs",
    output=f"{work_dir}/docs_embeddings",
    spec=si.ModelSpec(model, task="embedding", batch_tokens=chosen_tokens),
    output_cols=("embedding",),
    partitions=plan.recommended["partitions"],
    format="parquet",
    mode="overwrite",
)
report = run(spark, job)
engine = report.to_dict()["engine"]
print({key: engine[key] for key in ("rows", "micro_batches", "real_tokens", "padded_tokens", "oom_splits")})
print(f"{engine['padded_tokens'] / engine['micro_batches']:.0f} padded tokens per micro-batch "
      f"(budget {chosen_tokens}), padding efficiency {report.metrics.padding_efficiency:.2f}")
print(f"{report.seconds:.1f}s; the plan projected",
      f"{plan.projected_seconds:.1f}s" if plan.projected_seconds is not None else "nothing (calibrate=0)")
