"""Column builders: predict / embed / classify, and register for SQL.

Everything that does not depend on the data is validated here, on the driver, when the Column is
built. The UDF itself is an iterator-of-batches Arrow UDF (``arrow_udf`` on PySpark >= 4.1, a pandas
UDF before), so the spec is unpickled and the model looked up once per task, not once per batch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeAlias, get_args

import pandas as pd
import pyarrow as pa
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.udf import UserDefinedFunction

from sparkinfer._optional import check_installed
from sparkinfer.engine import constrain, sources
from sparkinfer.engine.metrics import Metrics
from sparkinfer.engine.placement import TaskResources
from sparkinfer.engine.runner import output_type
from sparkinfer.errors import SpecError
from sparkinfer.spark.types import spark_ddl
from sparkinfer.spark.progress import Watch, notify
from sparkinfer.spec import ModelSpec, Task

log = logging.getLogger("sparkinfer")

ColumnOrName: TypeAlias = "Column | str"
GenerationTask: TypeAlias = Literal["generation", "text2text"]

# PySpark >= 4.1 hands Arrow arrays straight to the UDF; older releases go through pandas.
_HAS_ARROW_UDF = hasattr(F, "arrow_udf")


def predict(col: ColumnOrName, model: str | ModelSpec, *, task: Task | None = None, **options: Any) -> Column:
    """A Column holding the model's prediction for each row of the string column `col`.

    Args:
        col: The input text column (name or Column).
        model: A model directory or hub id (then `task` is required), or a ready ModelSpec.
        task: ``"embedding"`` or ``"classification"``.
        **options: Any other ModelSpec field, e.g. ``batch_tokens=8192`` or ``normalize=False``.

    Returns:
        A Column of the task's type: array<float> for embedding, struct<label, score> for
        classification. Null input gives null output.

    Raises:
        SpecError: On the driver, for any invalid argument.

    Example:
        >>> df.withColumn("pred", predict("text", "/models/clf", task="classification"))
    """
    spec = to_spec(model, task=task, **options)
    column = _as_column(col)
    predicted = _make_udf(spec)(_string_input(column))
    if not _HAS_ARROW_UDF and pa.types.is_struct(output_type(spec)):
        # PySpark builds a pandas UDF's struct without a validity mask: put back the null that a null input
        # must give. (`_mask_null_structs` does it inside the UDF where it can, the only way for `register`.)
        return F.when(column.isNotNull(), predicted)
    return predicted


def embed(col: ColumnOrName, model: str | ModelSpec, **options: Any) -> Column:
    """A Column of sentence embeddings (array<float>); see `predict` for the arguments."""
    return predict(col, model, task="embedding", **options)


def classify(col: ColumnOrName, model: str | ModelSpec, **options: Any) -> Column:
    """A Column of struct<label: string, score: double>; see `predict` for the arguments."""
    return predict(col, model, task="classification", **options)


def classify_tokens(col: ColumnOrName, model: str | ModelSpec, **options: Any) -> Column:
    """A Column of entities per row: transformers' "token-classification" (alias "ner") pipeline.

    Each row gives ``array<struct<entity: string, word: string, score: double, start: int, end: int>>``,
    equal to ``pipeline("token-classification", aggregation_strategy=...)`` on that row alone: ``start`` and
    ``end`` are character offsets into the input text. Null input gives null; a text without entities gives
    an empty array.

    Args:
        col: The input text column (name or Column).
        model: A model directory or hub id of an ``AutoModelForTokenClassification``, or a ready ModelSpec.
        **options: ModelSpec fields, e.g. ``aggregation_strategy="first"`` (``"none"``, ``"simple"`` (the
            default), ``"first"``, ``"average"``, ``"max"``) or ``ignore_labels=("O",)``.

    Example:
        >>> df.withColumn("entities", classify_tokens("text", "/models/ner", aggregation_strategy="first"))
    """
    return predict(col, model, task="token-classification", **options)


def generate(
    col: ColumnOrName, model: str | ModelSpec, *, task: GenerationTask | None = None, **options: Any
) -> Column:
    """A Column of generated text: only the continuation of each prompt, special tokens stripped.

    Rows are length-sorted and left-padded into micro-batches whose token budget counts the prompt plus
    ``max_new_tokens``; greedy output equals ``model.generate`` on each row alone. With ``do_sample=True``
    each row samples from its own generator, seeded from ``seed`` and its prompt, so a row's output does
    not depend on its batch, the Arrow batch size or the row order.

    Args:
        col: The prompt column (name or Column); `prompt` builds one from a template over several columns.
        model: A model directory or hub id, or a ready ModelSpec.
        task: ``"generation"`` (decoder-only, ``AutoModelForCausalLM``; the default with a model path) or
            ``"text2text"`` (encoder-decoder, ``AutoModelForSeq2SeqLM``); a ModelSpec brings its own.
        **options: ModelSpec fields: ``max_new_tokens``, ``do_sample``, ``temperature``, ``top_p``,
            ``top_k``, ``seed``, ``stop=[...]``, ``return_details``, ``chat``, ``system_prompt``, and the
            batching options.

    Returns:
        A string Column, or with ``return_details=True`` struct<text: string, prompt_tokens: int,
        completion_tokens: int, finish_reason: string> (``"stop"`` for an end-of-sequence token or a stop
        string, ``"length"`` when ``max_new_tokens`` was reached). Null prompts give null.

    Raises:
        SpecError: On the driver, for a task other than generation/text2text or an invalid option.

    Example:
        >>> df.withColumn("summary", generate(prompt("Summarize {title}: {body}"), "/models/llm", chat=True))
    """
    chosen = task if task is not None else (model.task if isinstance(model, ModelSpec) else "generation")
    if chosen not in get_args(GenerationTask):
        raise SpecError(
            f"generate's task must be one of {get_args(GenerationTask)} (got {chosen!r}); use predict() for "
            "other tasks"
        )
    return predict(col, model, task=chosen, **options)


def extract(
    col: ColumnOrName, model: str | ModelSpec, schema: object, *, prompt: str | None = None, **options: Any
) -> Column:
    """A Column of typed values extracted from text: JSON decoded under `schema` by a causal LM, parsed.

    At every decoding step the tokens the schema's grammar does not allow are masked (llguidance), so the
    model can only write compact JSON of the schema's shape; the result is then validated against the
    schema (the keywords a grammar cannot enforce, such as date formats, are checked here) and converted.

    Args:
        col: The input text column (name or Column).
        model: A causal LM's directory or hub id, or a ready ModelSpec of task "extraction".
        schema: The value's schema: a DDL string (``"name string, age int, tags array<string>"``), a
            JSON Schema dict, a pyspark ``StructType`` or a pydantic model class. The mapping between them is
            `sparkinfer.schema`'s; the struct's fields come in the schema's order.
        prompt: A template as in `prompt` (``"Extract the person from: {text}"``) that builds the model's
            input from columns instead of `col`.
        **options: ModelSpec fields: ``max_new_tokens`` (the JSON's token budget), ``do_sample`` and the
            sampling options, ``chat``, ``system_prompt``, the batching options and ``on_error``.

    Returns:
        A Column of struct<value: the schema's struct, status: string, raw: string>: ``status`` is
        ``"ok"`` (``value`` parsed and validated), ``"truncated"`` (``max_new_tokens`` ran out before the
        value closed; ``value`` null) or ``"invalid"`` (complete but not valid; ``value`` null), ``raw`` the
        generated text. A null input gives null.

    Raises:
        SpecError: On the driver, for a schema that does not map or compile (naming the keyword), or any
            other invalid option.
        MissingDependencyError: Without llguidance and jsonschema (``pip install 'sparkinfer[extract]'``).

    Example:
        >>> df.withColumn("person", extract("bio", "/models/llm", "name string, age int", max_new_tokens=64))
    """
    if schema is not None:  # a ModelSpec brings its own schema; one given here replaces it
        options["schema"] = schema
    return predict(col if prompt is None else _render(prompt), model, task="extraction", **options)


def prompt(template: str) -> Column:
    """A string Column filling a template's ``{column}`` placeholders with those columns, cast to string.

    ``prompt("Summarize {title}: {body}")`` is ``F.concat(F.lit("Summarize "), title, F.lit(": "), body)``;
    write ``{{`` and ``}}`` for literal braces. A null in any named column makes the prompt null (so its
    generation is null too). A column missing from the DataFrame fails when the Column is used, as
    ``F.col`` does.

    Args:
        template: The text, with placeholders naming columns (``{title}``; backticks are not needed).

    Raises:
        SpecError: When the template is malformed (an unmatched brace), has an empty or positional
            placeholder (``{}``, ``{0}``), a format spec or a conversion (``{x:>10}``, ``{x!r}``), or no
            placeholder at all.
    """
    return _render(template)


def _render(template: str) -> Column:
    """`prompt`'s Column (a function of its own: `extract` has a parameter named prompt)."""
    pieces = [
        F.lit(text) if name is None else F.col(f"`{name.replace('`', '``')}`").cast("string")
        for text, name in _template_parts(template)
    ]
    return F.concat(*pieces)


def template_columns(template: str) -> list[str]:
    """The column names a `prompt` template refers to, in order (validated as `prompt` does)."""
    return [name for _, name in _template_parts(template) if name is not None]


def _template_parts(template: str) -> list[tuple[str, str | None]]:
    """``(literal text, None)`` and ``("", column name)`` pieces of a `prompt` template, validated."""
    import string

    if not isinstance(template, str):
        raise SpecError(f"prompt's template must be a string (got {type(template).__name__}: {template!r})")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise SpecError(
            f"prompt's template is malformed: {exc} (got {template!r}); write {{{{ and }}}} for literal braces"
        ) from exc
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if literal:
            parts.append((literal, None))
        if name is None:
            continue
        if not name or name.isdigit() or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise SpecError(
                f"prompt's placeholders must name a column, like {{title}} (got {shown} in {template!r}); "
                "write {{ and }} for literal braces"
            )
        parts.append(("", name))
    if not any(name is not None for _, name in parts):
        raise SpecError(
            f"prompt's template must name at least one column, like 'Summarize {{body}}' (got {template!r}); "
            "use F.lit for a constant"
        )
    return parts


def register(spark: SparkSession, name: str, model: str | ModelSpec, **options: Any) -> UserDefinedFunction:
    """Register the model as a SQL function: ``SELECT name(text) FROM t``.

    Args:
        spark: The session to register in.
        name: The SQL function name.
        model: A ModelSpec, or a model path/id plus ``task=...`` in `options`.
        **options: ModelSpec fields, as in `predict`.

    Returns:
        The registered UDF (usable from Python as well).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise SpecError(f"register's name must be a SQL identifier such as 'embed_text' (got {name!r})")
    task = options.pop("task", None)
    registered: UserDefinedFunction = spark.udf.register(name, _make_udf(to_spec(model, task=task, **options)))
    return registered


def to_spec(model: str | ModelSpec, *, task: Task | None = None, **options: Any) -> ModelSpec:
    """Build (or adjust) the ModelSpec for a column builder, with driver-side errors."""
    if isinstance(model, ModelSpec):
        if task is not None and task != model.task:
            raise SpecError(
                f"task={task!r} contradicts the ModelSpec's task {model.task!r}; "
                "drop the task argument or build a spec for that task"
            )
        return model.with_options(**options) if options else model
    if task is None:
        raise SpecError(
            f"predict needs task=... with a model path (got model={model!r} and no task); "
            "pass e.g. task='embedding', or use embed()/classify()"
        )
    names = {f.name for f in dataclasses.fields(ModelSpec)} - {"model", "task"}
    unknown = sorted(set(options) - names)
    if unknown:
        raise SpecError(f"unknown option(s) {unknown}; expected some of {sorted(names)}")
    return ModelSpec(model, task=task, **options)


def _as_column(col: ColumnOrName) -> Column:
    if isinstance(col, str):
        return F.col(col)
    if isinstance(col, Column):
        return col
    raise SpecError(f"the input column must be a column name or a Column (got {type(col).__name__}: {col!r})")


def _string_input(column: Column) -> Column:
    """`column` as the UDF's input, which Spark's analyzer refuses unless it is a string column.

    ``collate(c, 'UTF8_BINARY')`` is the identity on strings and accepts no other type without a cast, so a
    numeric, binary or array column fails on the driver when the plan is analysed (``withColumn``), with
    Spark naming the column and its type, instead of in every task. PySpark < 4.0 has no ``collate``: there
    the engine's check fails the task.
    """
    return F.collate(column, "UTF8_BINARY") if hasattr(F, "collate") else column


def _make_udf(unpinned: ModelSpec) -> UserDefinedFunction:
    spec = sources.pin(unpinned)  # a remote model's revision, fixed for every task (it fails here if unreachable)
    _check_dependencies(spec)
    return_type = spark_ddl(output_type(spec))
    gpu_amount = _task_gpu_amount()
    watch = Watch.address_for(SparkSession.getActiveSession())  # warns when the column runs on too few tasks

    if _HAS_ARROW_UDF:

        def predict_arrow(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
            yield from _run_task(spec, batches, gpu_amount=gpu_amount, watch=watch)

        arrow_udf: UserDefinedFunction = F.arrow_udf(predict_arrow, return_type)
        return arrow_udf

    # PySpark infers the UDF type from these hints and accepts Iterator[pd.Series] or Iterator[pd.DataFrame]
    # as the return, not their union; either gives the same iterator UDF, and the DataFrames yielded for
    # struct types are accepted at run time.
    def predict_pandas(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        _mask_null_structs()
        texts = (_pandas_texts(b) for b in batches)
        for out in _run_task(spec, texts, gpu_amount=gpu_amount, watch=watch):
            yield _to_pandas(out)

    pandas_udf: UserDefinedFunction = F.pandas_udf(predict_pandas, return_type)
    return pandas_udf


def _pandas_texts(batch: pd.Series) -> pa.Array:
    """A pandas UDF's input as Arrow, typed from its values: the engine refuses a non-string type with a
    SpecError, as on the Arrow path. An all-null batch has no values to type, so it becomes strings."""
    texts = pa.array(batch, from_pandas=True)
    return texts.cast(pa.string()) if pa.types.is_null(texts.type) else texts


def _check_dependencies(spec: ModelSpec) -> None:
    """Driver side: fail now, not in every task, when the spec needs a package that is not installed.

    Looked up with ``find_spec``: importing bitsandbytes would import torch on the driver.
    """
    if spec.quantization is not None:
        check_installed(
            "bitsandbytes", "accelerate", extra="quant", purpose=f"ModelSpec.quantization={spec.quantization!r}"
        )
    if constrain.constrained(spec):
        check_installed("llguidance", "jsonschema", extra="extract", purpose="constrained decoding")
        constrain.grammar(spec)  # a schema, choice or regex that does not compile fails here, not in every task


def _task_gpu_amount() -> float | None:
    """Driver side: ``spark.task.resource.gpu.amount``, which executors cannot read (None when unset)."""
    session = SparkSession.getActiveSession()
    value = session.conf.get("spark.task.resource.gpu.amount", None) if session is not None else None
    return float(value) if value else None


def _task_resources(context: Any, gpu_amount: float | None) -> TaskResources | None:
    """The task's GPU assignment as plain data, from a ``TaskContext`` (``None`` outside a task)."""
    if context is None:
        return None
    gpu = context.resources().get("gpu")
    return TaskResources(tuple(gpu.addresses) if gpu is not None else (), gpu_amount)


def _run_task(
    spec: ModelSpec,
    batches: Iterator[pa.Array],
    on_metrics: Callable[[Metrics], None] | None = None,
    *,
    gpu_amount: float | None = None,
    on_progress: Callable[[int, int, int, int], None] | None = None,
    watch: str | None = None,
) -> Iterator[pa.Array]:
    """The executor side of every sparkinfer UDF: one Spark task's stream of Arrow batches.

    `on_metrics` also receives the metrics of every engine call (the job carries them in its rows);
    `gpu_amount` is the driver's ``spark.task.resource.gpu.amount``, for the shared-GPU warning;
    `on_progress` receives the rows and tokens done and tokenized (the job's progress, see ``progress.py``);
    `watch` is the driver's `progress.Watch` address, told when the task starts and ends.
    """
    from pyspark import TaskContext

    from sparkinfer.engine import run_stream

    context = TaskContext.get()
    cpus = context.cpus() if context is not None else None
    # Tokenizers' Rust pool would start one thread per core of the machine in every Python worker. Give it the
    # task's CPUs: a 1-CPU task tokenizes in one thread (the background one, with overlap), beside torch's.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true" if (cpus or 1) > 1 else "false")
    os.environ.setdefault("RAYON_NUM_THREADS", str(cpus or 1))
    collected: list[Metrics] = []

    def record(metrics: Metrics) -> None:
        collected.append(metrics)
        if on_metrics is not None:
            on_metrics(metrics)

    resources = _task_resources(context, gpu_amount)
    notify(watch, "start")
    try:
        yield from run_stream(
            _with_shipped_model(spec), batches, num_threads=cpus, resources=resources, on_metrics=record,
            on_progress=on_progress,
        )
    finally:
        notify(watch, "end")
    task_id = context.taskAttemptId() if context is not None else "-"
    log.info("sparkinfer task %s: %s", task_id, sum(collected, Metrics()).to_dict())


def _with_shipped_model(spec: ModelSpec) -> ModelSpec:
    """Resolve a model shipped with ``spark-submit --archives model.tar.gz#model`` (``model="model"``).

    YARN and standalone executors unpack archives into the working directory, where the relative name is a
    directory already; local mode unpacks them under SparkFiles' root instead. Anything else (absolute
    paths, hub ids) is left to the loader.
    """
    if os.path.isabs(spec.model) or os.path.isdir(os.path.expanduser(spec.model)):
        return spec
    from pyspark import SparkFiles

    try:
        shipped = SparkFiles.get(spec.model)
    except Exception:  # no SparkFiles root outside a Spark worker
        return spec
    return dataclasses.replace(spec, model=shipped) if os.path.isdir(shipped) else spec


# The DataFrame attribute holding a struct's null rows, for `_mask_null_structs`.
_NULL_ROWS = "sparkinfer.null_rows"


def _to_pandas(out: pa.Array) -> pd.Series | pd.DataFrame:
    """pandas UDFs return structs as DataFrames (null rows in attrs) and arrays as Series of lists."""
    if pa.types.is_struct(out.type):
        frame = pd.DataFrame({f.name: out.field(i).to_pandas() for i, f in enumerate(out.type)})
        if out.null_count:
            frame.attrs[_NULL_ROWS] = out.is_null()
        return frame
    return out.to_pandas()


def _mask_null_structs() -> None:
    """Executor side, PySpark < 4.1: let the pandas UDF return null structs, as the Arrow UDF does.

    PySpark 3.5 builds a struct result from the DataFrame's columns with no validity mask (a null input
    would give a struct of nulls), and a SQL function from `register` has no Column around the UDF to put
    the null back. This wraps that step of the Python worker's serializer, once per worker, to apply the
    null rows that `_to_pandas` leaves in the DataFrame's attrs; other DataFrames pass through unchanged.
    A PySpark without that serializer method is left alone (there `predict` still puts the nulls back).
    """
    from pyspark.sql.pandas import serializers

    serializer: Any = getattr(serializers, "ArrowStreamPandasUDFSerializer", None)
    build = getattr(serializer, "_create_struct_array", None)
    if build is None or getattr(serializer, "_sparkinfer_null_rows", False):
        return

    def build_with_nulls(self: Any, frame: pd.DataFrame, *args: Any, **kwargs: Any) -> pa.Array:
        array = build(self, frame, *args, **kwargs)
        nulls = frame.attrs.get(_NULL_ROWS)
        if nulls is None or not isinstance(array, pa.StructArray) or len(nulls) != len(array):
            return array
        return pa.StructArray.from_arrays(array.flatten(), fields=list(array.type), mask=nulls)

    serializer._create_struct_array = build_with_nulls
    serializer._sparkinfer_null_rows = True
