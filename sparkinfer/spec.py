"""ModelSpec: the frozen, validated description of one model run.

A spec is built on the driver, validated once there, shipped to executors by pickling, and used as the
key of the per-process model cache. Allowed values live in one place each: a ``Literal`` read with
``get_args``, so the documentation and the checks cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from dataclasses import KW_ONLY, dataclass
from typing import Any, Literal, get_args

from sparkinfer.errors import SpecError

Task = Literal["embedding", "classification", "generation", "text2text", "token-classification", "extraction"]
Dtype = Literal["auto", "float32", "float16", "bfloat16"]
QuantBits = Literal[4, 8]
QuantType = Literal["nf4", "fp4"]
QuantizationPreset = Literal["8bit", "4bit"]
Pooling = Literal["auto", "mean", "cls", "max", "lasttoken", "mean_sqrt_len_tokens"]
FunctionToApply = Literal["auto", "softmax", "sigmoid", "none"]
OnError = Literal["raise", "null", "column"]
AggregationStrategy = Literal["none", "simple", "first", "average", "max"]
HostMode = Literal["auto", "worker", "executor"]

_DECODE = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "seed")
_GENERATE = (*_DECODE, "stop", "return_details", "choices", "regex")
# Options that only make sense for some tasks; a non-default value for another task is an error.
TASK_OPTIONS: dict[str, tuple[str, ...]] = {
    "embedding": ("pooling", "normalize"),
    "classification": ("return_all_scores", "top_k", "function_to_apply"),
    "generation": (*_GENERATE, "chat", "system_prompt"),
    "text2text": _GENERATE,
    "token-classification": ("aggregation_strategy", "ignore_labels"),
    "extraction": (*_DECODE, "chat", "system_prompt", "schema"),
}
# Tasks whose model loads as another task's (same transformers class, so the same weights).
_LOADS_AS = {"extraction": "generation"}
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


@dataclass(frozen=True, kw_only=True)
class QuantizationSpec:
    """bitsandbytes settings: LLM.int8 (``bits=8``) or 4-bit NF4/FP4 (``bits=4``).

    Translated to a transformers ``BitsAndBytesConfig`` on the executor (``engine/loading.py``). The
    presets ``quantization="8bit"`` and ``"4bit"`` of ModelSpec are ``QuantizationSpec(bits=8)`` and
    ``QuantizationSpec(bits=4)``.

    Args:
        bits: 8 for LLM.int8 (int8 weights, outlier features in float16), 4 for 4-bit weights.
        quant_type: 4-bit only: ``"nf4"`` (normal-float, the better choice for trained weights) or ``"fp4"``.
        double_quant: 4-bit only: also quantize the per-block scales (saves about 0.4 bits per weight).
        compute_dtype: 4-bit only: the dtype 4-bit matmuls compute in; ``"auto"`` takes the model's dtype
            (ModelSpec.dtype: float32 on CPU, bfloat16/float16 on CUDA).
        skip_modules: Names of modules kept in full precision (e.g. ``("classifier",)``); empty keeps
            transformers' default, which leaves the output head unquantized.
        outlier_threshold: 8-bit only: LLM.int8's outlier threshold; hidden features above it are
            multiplied in float16.

    Raises:
        SpecError: When a value is out of range or an option belongs to the other bit width.
    """

    bits: QuantBits = 4
    quant_type: QuantType = "nf4"
    double_quant: bool = False
    compute_dtype: Dtype = "auto"
    skip_modules: tuple[str, ...] = ()
    outlier_threshold: float = 6.0

    def __post_init__(self) -> None:
        owner = "QuantizationSpec"
        _check_choice("bits", self.bits, get_args(QuantBits), owner=owner)
        _check_choice("quant_type", self.quant_type, get_args(QuantType), owner=owner)
        _check_bool("double_quant", self.double_quant, owner=owner)
        _check_choice("compute_dtype", self.compute_dtype, get_args(Dtype), owner=owner)
        if not isinstance(self.skip_modules, tuple) or not all(
            isinstance(m, str) and m for m in self.skip_modules
        ):
            raise SpecError(
                f"QuantizationSpec.skip_modules must be a tuple of module names (got {self.skip_modules!r}); "
                "pass e.g. skip_modules=('classifier',)"
            )
        threshold = self.outlier_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
            raise SpecError(f"QuantizationSpec.outlier_threshold must be a positive number (got {threshold!r})")
        only = {4: ("quant_type", "double_quant", "compute_dtype"), 8: ("outlier_threshold",)}
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for bits, names in only.items():
            for name in names:
                if bits != self.bits and getattr(self, name) != defaults[name]:
                    raise SpecError(
                        f"QuantizationSpec.{name} applies to {bits}-bit quantization, not {self.bits}-bit "
                        f"(got bits={self.bits}, {name}={getattr(self, name)!r}); drop it, or use bits={bits}"
                    )


@dataclass(frozen=True)
class LoadKey:
    """What decides the weights a spec loads: the model cache keys loaded weights by it (and the device).

    Specs with equal keys share one copy of the weights; what else differs between them (the head options
    such as ``pooling``, ``top_k`` or ``max_new_tokens``, ``max_length``, batching, error handling) is
    applied per spec on top of the shared weights. The task is part of the key because it decides the
    transformers class, and so the modules, that load (a causal LM head, a classifier, the bare encoder).
    """

    model: str
    task: str
    revision: str | None
    dtype: str
    quantization: QuantizationSpec | None
    trust_remote_code: bool
    allow_pickle: bool


@dataclass(frozen=True)
class ModelSpec:
    """What to run: a model, the task head over it, and how to batch it.

    Args:
        model: A local directory (``/dbfs/models/x`` or ``./model``), a hub id resolved from the local
            Hugging Face cache (nothing is downloaded when ``HF_HUB_OFFLINE=1``), a directory in object storage
            (any fsspec URL whose package is installed: ``s3://bucket/models/x`` with s3fs, ``gs://`` with gcsfs,
            ``abfss://`` with adlfs, ``hdfs://``), or an MLflow registry model (``models:/name/3``,
            ``models:/name@champion``, with mlflow). A remote model is downloaded once per node into
            ``SPARKINFER_CACHE_DIR`` (``engine/sources``), with the store's or MLflow's own credentials; a URI
            holding credentials is refused.
        task: ``"embedding"`` (array<float>), ``"classification"`` (struct<label, score>), ``"generation"``
            (decoder-only LM) or ``"text2text"`` (encoder-decoder) (string, or a struct with
            ``return_details``), ``"token-classification"``
            (array<struct<entity, word, score, start, end>>), or ``"extraction"`` (a causal LM decoding JSON
            constrained by `schema`: struct<value, status, raw>).
        revision: Hub revision (branch, tag or commit) to pin; ``None`` takes the cached default. For a remote
            model, its revision as the Column or job pins it (a digest of the store's ETags or version ids, or
            the registry's model version); ``None`` takes the current one.
        max_length: Tokens per row after truncation. ``None`` takes the sentence-transformers
            ``max_seq_length`` when the model has one, else the model's maximum positions.
        batch_tokens: Token budget of one micro-batch: rows x padded length never exceeds it
            (a single row longer than the budget runs alone).
        max_batch_size: Most rows in one micro-batch, whatever their length.
        buffer_rows: Rows gathered across Arrow batches and length-sorted together. Larger values pad
            less but hold more rows in memory; Arrow batches larger than this are cut.
        dtype: Weights' dtype: ``"auto"`` is float32 on CPU and the best half precision on CUDA.
        device: ``"auto"``: in a Spark task the GPU Spark assigned to it, else CUDA when present, else CPU
            (see ``engine/placement.py``); ``"cuda"``: the assigned GPU, else the first visible one;
            ``"cuda:N"``, ``"cpu"`` or ``"mps"``: exactly that device.
        quantization: ``None`` (full weights in `dtype`), ``"8bit"`` (LLM.int8), ``"4bit"`` (NF4), or a
            `QuantizationSpec`. Needs bitsandbytes (``pip install 'sparkinfer[quant]'``); the model is
            loaded straight onto its device and never moved.
        trust_remote_code: Allow code shipped inside the model repository to run. Off by default: such a
            model is refused with the list of its code files.
        allow_pickle: Allow weights in pickle-based checkpoints (``pytorch_model.bin``, ``.pt``, ``.pth``,
            ``.ckpt``): unpickling runs whatever code the file holds. Off by default: only safetensors
            weights are loaded.
        pooling: Embedding only: ``"auto"`` follows the sentence-transformers pooling config, else mean.
        normalize: Embedding only: L2-normalize; ``None`` follows the sentence-transformers config.
        return_all_scores: Classification only: add ``scores``, every label's score in label-id order.
        top_k: Classification only: add ``scores`` holding the k best labels, best first.
        function_to_apply: Classification only: ``"auto"`` picks sigmoid for multi-label or single-logit
            models and softmax otherwise, as transformers' text-classification pipeline does.
        max_new_tokens: Generation/text2text: most tokens generated per row (counted in `batch_tokens`).
        do_sample: Generation/text2text: sample instead of greedy decoding.
        temperature: Generation/text2text, with ``do_sample``: logits are divided by it.
        top_p: Generation/text2text, with ``do_sample``: nucleus sampling mass (1.0 keeps every token).
        top_k: Classification: the k best labels in ``scores``. Generation/text2text, with ``do_sample``:
            sample among the k most likely tokens.
        seed: Generation/text2text, with ``do_sample``: each row samples from its own generator seeded
            from `seed` and the row's prompt tokens, so its output does not depend on its batch, and rows
            with identical prompts draw the same sample (the engine computes them once).
        stop: Generation/text2text: strings that end the output; it is cut before the first one.
        return_details: Generation/text2text: return struct<text, prompt_tokens, completion_tokens,
            finish_reason> instead of the text ("stop" for an end-of-sequence token or stop string,
            "length" for max_new_tokens).
        choices: Generation/text2text: the output is exactly one of these strings (constrained decoding);
            a row that runs out of ``max_new_tokens`` first gives null (finish_reason "length").
        regex: Generation/text2text: the output matches this regular expression (constrained decoding, Rust
            ``regex`` syntax, anchored at both ends); a row cut off before it matches gives null.
        chat: Generation/extraction: render each prompt with the tokenizer's chat template as a user message.
        system_prompt: Generation/extraction with ``chat=True``: a system message put before each prompt.
        schema: Extraction: the JSON Schema every output is decoded under, as canonical JSON text. Any form
            `sparkinfer.schema.to_json_schema` takes is accepted (a DDL string, a JSON Schema dict, a
            pyspark StructType, a pydantic model class) and stored as that text.
        aggregation_strategy: Token classification: how tokens merge into entities, as in transformers'
            token-classification pipeline (``"none"`` returns one entry per token).
        ignore_labels: Token classification: labels left out of the output.
        on_error: What a row whose prediction fails gets. ``"raise"`` fails the Spark task with the row's
            position in the task's input and the cause; ``"null"`` gives that row null; ``"column"`` returns
            struct<result, error: string> for every row, the error message where the row failed (as
            Databricks' ``ai_query`` with ``failOnError=false``). A failing micro-batch is bisected, so only
            the guilty rows fail; failures are counted in ``Metrics.error_rows``.
        max_error_rate: With ``on_error`` "null" or "column": fail the task once more than this share of
            its non-null rows failed (checked after every ``buffer_rows`` chunk from 100 rows on, and at its
            end), so that a job over garbage stops early; ``None`` never stops.
        overlap: Tokenize the next chunk of ``buffer_rows`` rows, and build the next micro-batch's
            tensors, in a background thread while the model computes the current one.
        host: Where the weights live in a Spark executor. ``"worker"``: every Python worker (task slot)
            loads its own copy. ``"executor"``: one model host process per (executor, device, weights) holds
            them; every task of the executor tokenizes in its own worker and sends token ids to the host,
            which batches the rows of all its tasks together (and decodes generation continuously). The
            host starts with the first task that needs it and exits with its executor or when idle
            (``engine/host.py``). ``"auto"``: in a Spark task, ``"executor"`` when several task slots share
            one GPU (a ``spark.task.resource.gpu.amount`` below 1) or for generation that the host decodes
            continuously (a causal LM of plain full attention), which measured faster even on CPU; else
            ``"worker"``, which measured faster for the other tasks on CPU (BENCHMARKS.md). Outside Spark,
            ``"worker"``.

    Raises:
        SpecError: When a value is out of range or an option does not belong to the task.
    """

    model: str
    _: KW_ONLY
    task: Task
    revision: str | None = None
    max_length: int | None = None
    batch_tokens: int = 4096
    max_batch_size: int = 256
    buffer_rows: int = 4096
    dtype: Dtype = "auto"
    device: str = "auto"
    quantization: QuantizationPreset | QuantizationSpec | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    pooling: Pooling = "auto"
    normalize: bool | None = None
    return_all_scores: bool = False
    top_k: int | None = None
    function_to_apply: FunctionToApply = "auto"
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    return_details: bool = False
    choices: tuple[str, ...] = ()
    regex: str | None = None
    chat: bool = False
    system_prompt: str | None = None
    schema: Any = None  # any form `to_json_schema` takes; stored as its canonical JSON text (str | None)
    aggregation_strategy: AggregationStrategy = "simple"
    ignore_labels: tuple[str, ...] = ("O",)
    on_error: OnError = "raise"
    max_error_rate: float | None = None
    overlap: bool = True
    host: HostMode = "auto"

    def __post_init__(self) -> None:
        for name in ("stop", "ignore_labels", "choices"):  # lists are welcome; the frozen spec keeps a tuple
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if not isinstance(self.model, str) or not self.model.strip():
            raise SpecError(
                f"ModelSpec.model must be a non-empty path or hub id (got {self.model!r}); "
                "pass e.g. '/dbfs/models/my-model' or 'sentence-transformers/all-MiniLM-L6-v2'"
            )
        _check_no_credentials(self.model)
        _check_choice("task", self.task, get_args(Task))
        _check_optional_str("revision", self.revision)
        _check_positive("max_length", self.max_length, optional=True)
        _check_positive("batch_tokens", self.batch_tokens)
        _check_positive("max_batch_size", self.max_batch_size)
        _check_positive("buffer_rows", self.buffer_rows)
        _check_choice("dtype", self.dtype, get_args(Dtype))
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise SpecError(
                "ModelSpec.device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' "
                f"(got {self.device!r})"
            )
        if self.quantization is not None and not isinstance(self.quantization, QuantizationSpec):
            if self.quantization not in get_args(QuantizationPreset):
                raise SpecError(
                    f"ModelSpec.quantization must be None, one of {get_args(QuantizationPreset)} or a "
                    f"QuantizationSpec (got {self.quantization!r}); e.g. quantization='4bit' or "
                    "QuantizationSpec(bits=4, quant_type='fp4')"
                )
        if self.quantization is not None and self.device == "mps":
            raise SpecError(
                f"ModelSpec.quantization needs a CUDA or CPU device; bitsandbytes has no MPS kernels "
                f"(got device='mps', quantization={self.quantization!r}); use device='cpu' or quantization=None"
            )
        _check_bool("trust_remote_code", self.trust_remote_code)
        _check_bool("allow_pickle", self.allow_pickle)
        _check_choice("pooling", self.pooling, get_args(Pooling))
        if self.normalize is not None:
            _check_bool("normalize", self.normalize)
        _check_bool("return_all_scores", self.return_all_scores)
        _check_positive("top_k", self.top_k, optional=True)
        _check_choice("function_to_apply", self.function_to_apply, get_args(FunctionToApply))
        _check_bool("overlap", self.overlap)
        _check_choice("host", self.host, get_args(HostMode))
        _check_choice("on_error", self.on_error, get_args(OnError))
        rate = self.max_error_rate
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1):
            raise SpecError(f"ModelSpec.max_error_rate must be None or a number in [0, 1) (got {rate!r})")
        if rate is not None and self.on_error == "raise":
            raise SpecError(
                f"ModelSpec.max_error_rate needs on_error='null' or 'column': with 'raise' the first failing row "
                f"already stops the task (got max_error_rate={rate!r}); set on_error, or drop max_error_rate"
            )
        self._check_generation_options()
        _check_choice("aggregation_strategy", self.aggregation_strategy, get_args(AggregationStrategy))
        _check_strings("ignore_labels", self.ignore_labels, example="('O',)")
        if self.return_all_scores and self.top_k is not None:
            raise SpecError(
                f"ModelSpec.return_all_scores and top_k exclude each other (got return_all_scores=True, "
                f"top_k={self.top_k!r}); use top_k=None for every label, or return_all_scores=False"
            )
        if self.max_length is not None and self.batch_tokens < self.max_length:
            raise SpecError(
                f"ModelSpec.batch_tokens must be at least max_length={self.max_length} so that one full-length "
                f"row fits a micro-batch (got batch_tokens={self.batch_tokens}); raise batch_tokens or lower "
                "max_length"
            )
        self._check_task_options()

    def _check_generation_options(self) -> None:
        _check_positive("max_new_tokens", self.max_new_tokens)
        _check_bool("do_sample", self.do_sample)
        for name, low, high in (("temperature", 0.0, float("inf")), ("top_p", 0.0, 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
                raise SpecError(f"ModelSpec.{name} must be a number in ({low}, {high}] (got {value!r})")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SpecError(f"ModelSpec.seed must be a non-negative int (got {self.seed!r})")
        _check_strings("stop", self.stop, example="('\\n\\n', '###')")
        _check_bool("return_details", self.return_details)
        _check_bool("chat", self.chat)
        _check_optional_str("system_prompt", self.system_prompt)
        self._check_constraint()
        sampling = {"temperature": 1.0, "top_p": 1.0, "top_k": None, "seed": 0}
        if self.task in ("generation", "text2text", "extraction") and not self.do_sample:
            for name, default in sampling.items():
                if getattr(self, name) != default:
                    raise SpecError(
                        f"ModelSpec.{name} applies to sampling, which needs do_sample=True (got do_sample=False, "
                        f"{name}={getattr(self, name)!r}); pass do_sample=True, or drop {name} for greedy decoding"
                    )
        if self.system_prompt is not None and not self.chat:
            raise SpecError(
                "ModelSpec.system_prompt is sent through the tokenizer's chat template, so it needs chat=True "
                f"(got chat=False, system_prompt={self.system_prompt!r}); pass chat=True, or put the "
                "instructions into the prompt itself"
            )

    def _check_constraint(self) -> None:
        """The grammar options: `schema` normalized to canonical JSON text, `choices`/`regex` well formed.

        Whether the grammar compiles is checked where llguidance is installed: `engine.constrain.check`.
        """
        if self.choices != ():
            _check_strings("choices", self.choices, example="('positive', 'negative')")
        _check_optional_str("regex", self.regex)
        if self.choices and self.regex is not None:
            raise SpecError(
                f"ModelSpec.choices and regex exclude each other (got choices={self.choices!r}, "
                f"regex={self.regex!r}); a choice is a regex too: regex='(?:a|b)'"
            )
        if (self.choices or self.regex is not None) and self.stop:
            raise SpecError(
                f"ModelSpec.stop would cut a constrained output short (got stop={self.stop!r} with "
                f"{'choices' if self.choices else 'regex'}); drop stop: the grammar ends the output"
            )
        if self.schema is not None:
            from sparkinfer.schema import to_json_schema

            object.__setattr__(self, "schema", to_json_schema(self.schema))
        elif self.task == "extraction":
            raise SpecError(
                "ModelSpec.schema is required for task 'extraction' (got None); pass e.g. "
                "schema='name string, age int' or a JSON Schema dict"
            )

    def _check_task_options(self) -> None:
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        own = TASK_OPTIONS[self.task]
        for name in sorted({n for names in TASK_OPTIONS.values() for n in names} - set(own)):
            if getattr(self, name) != defaults[name]:
                tasks = [task for task, names in TASK_OPTIONS.items() if name in names]
                raise SpecError(
                    f"ModelSpec.{name} applies to task {' or '.join(map(repr, tasks))}, not {self.task!r} "
                    f"(got {name}={getattr(self, name)!r}); drop it, or use task={tasks[0]!r}"
                )

    @property
    def quantization_spec(self) -> QuantizationSpec | None:
        """`quantization` with the presets spelled out: ``"4bit"`` is ``QuantizationSpec(bits=4)``."""
        if self.quantization is None or isinstance(self.quantization, QuantizationSpec):
            return self.quantization
        return QuantizationSpec(bits=8 if self.quantization == "8bit" else 4)

    @property
    def cache_key(self) -> ModelSpec:
        """This spec with the batching and error-handling fields reset: specs that run alike share a key.

        The model cache binds one head per cache key, on weights shared by every spec of the same
        `load_key`. A quantization preset and the QuantizationSpec it stands for share a key too.
        """
        # The key is validated like any spec: a max_length above the default budget needs a budget to match.
        return dataclasses.replace(
            self,
            batch_tokens=max(ModelSpec.batch_tokens, self.max_length or 0),
            max_batch_size=ModelSpec.max_batch_size,
            buffer_rows=ModelSpec.buffer_rows,
            overlap=ModelSpec.overlap,
            host=ModelSpec.host,
            on_error=ModelSpec.on_error,
            max_error_rate=ModelSpec.max_error_rate,
            quantization=self.quantization_spec,
        )

    @property
    def load_key(self) -> LoadKey:
        """The fields that decide the loaded weights (see `LoadKey`); presets spelled out as in `cache_key`."""
        return LoadKey(self.model, _LOADS_AS.get(self.task, self.task), self.revision, self.dtype,
                       self.quantization_spec, self.trust_remote_code, self.allow_pickle)

    def with_options(self, **options: Any) -> ModelSpec:
        """Return a copy with some fields replaced (and validated again).

        Raises:
            SpecError: If a name is not a ModelSpec field or a value is invalid.
        """
        names = {f.name for f in dataclasses.fields(self)} - {"_"}
        unknown = sorted(set(options) - names)
        if unknown:
            raise SpecError(
                f"ModelSpec has no option {', '.join(map(repr, unknown))}; "
                f"expected some of {sorted(names)}"
            )
        return dataclasses.replace(self, **options)


def _check_choice(name: str, value: object, allowed: tuple[object, ...], *, owner: str = "ModelSpec") -> None:
    if value not in allowed:
        raise SpecError(f"{owner}.{name} must be one of {allowed} (got {value!r})")


def _check_positive(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        none = " or None" if optional else ""
        raise SpecError(f"ModelSpec.{name} must be a positive int{none} (got {value!r})")


def _check_bool(name: str, value: object, *, owner: str = "ModelSpec") -> None:
    if not isinstance(value, bool):
        raise SpecError(f"{owner}.{name} must be True or False (got {value!r})")


def _check_strings(name: str, value: object, *, example: str) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(
            f"ModelSpec.{name} must be a tuple of non-empty strings (got {value!r}); pass e.g. {name}={example}"
        )


def _check_no_credentials(model: str) -> None:
    """Refuse a URI holding a password or a query string (a SAS token, a presigned signature): the model name
    goes into logs, the run report and the fingerprint. Credentials belong in the store's provider chain."""
    parsed = urllib.parse.urlsplit(model) if "://" in model else None
    if parsed is None or not (parsed.query or (parsed.password is not None)):
        return
    shown = f"{parsed.scheme}://{parsed.hostname or ''}{parsed.path}"
    raise SpecError(
        f"ModelSpec.model must not hold credentials (got a URI with "
        f"{'a password' if parsed.password is not None else 'a query string'}: {shown!r} plus what was cut); "
        "give the store its credentials through its standard provider chain (environment variables such as "
        "AWS_ACCESS_KEY_ID, a profile, an instance or pod role) and pass the plain URI"
    )


def _check_optional_str(name: str, value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise SpecError(f"ModelSpec.{name} must be a non-empty string or None (got {value!r})")
