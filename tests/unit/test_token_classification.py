"""Token classification against transformers' token-classification pipeline run on each row alone.

The oracle is ``pipeline("token-classification")`` called once per text: its own tokenization (truncated
at the same max length), one unpadded forward pass per row, its own post-processing. The engine instead
tokenizes a whole chunk, sorts it by length, pads micro-batches under a token budget, restores the order
and merges tokens with its own copy of the pipeline's rules; none of that may change an entity, a word,
an offset or (beyond float noise) a score. Two tokenizers cover both of the pipeline's ways of finding
words: WordPiece's "##" sub-word prefix (MiniLM) and, for a byte-level BPE without one, its heuristic.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest

from sparkinfer import ModelLoadError, ModelSpec, SpecError
from sparkinfer.engine import run
from sparkinfer.engine.tasks import get_task
from sparkinfer.engine.tasks.token_classification import build_head
from sparkinfer.spark.types import spark_ddl
from tests.conftest import NER_LABELS

STRATEGIES = ["none", "simple", "first", "average", "max"]
MAX_LENGTH = 64
LONG = " ".join(["Johannesburg Wolfeschlegelsteinhausen met Ólafur Arnalds in Saint-Étienne."] * 12)
TEXTS: list[str | None] = [
    "Angela Merkel visited Zürich and São Paulo in 2019.",
    None,
    "Hello, world!!",
    "",
    "The Eiffelturm (Tour Eiffel) is über-famous; naïve café-goers love it.",
    LONG,  # about 250 tokens: truncated at MAX_LENGTH
    " ",
    "x",
    "Dr. O'Neill-Smith flew from Reykjavík to Kraków via Málaga\tand\nback.",
    "東京 and 北京 are capitals; I ❤ NY 🙂",  # CJK characters, and symbols the vocabulary lacks ([UNK])
    None,
    "  leading and trailing spaces  ",
    "antidisestablishmentarianism pneumonoultramicroscopic",
]

Entity = tuple[str, str, int, int]


class PipelineOracle:
    """transformers' token-classification pipeline on one text at a time, memoized per call."""

    def __init__(self, path: str, max_length: int) -> None:
        import transformers

        # The engine truncates at ModelSpec.max_length; the pipeline truncates at model_max_length.
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, model_max_length=max_length)
        self.pipe = transformers.pipeline("token-classification", model=path, tokenizer=tokenizer, device="cpu")
        self._results: dict[tuple[str, str, tuple[str, ...]], list[dict[str, Any]]] = {}

    def __call__(self, text: str, strategy: str, ignore_labels: tuple[str, ...] = ("O",)) -> list[dict[str, Any]]:
        key = (text, strategy, ignore_labels)
        if key not in self._results:
            with warnings.catch_warnings():  # once per token for tokenizers without a sub-word prefix
                warnings.filterwarnings("ignore", "Tokenizer does not support real words", UserWarning)
                result = self.pipe(text, aggregation_strategy=strategy, ignore_labels=list(ignore_labels))
            self._results[key] = result
        return self._results[key]


@pytest.fixture(scope="module")
def oracle(tiny_ner: str) -> PipelineOracle:
    return PipelineOracle(tiny_ner, MAX_LENGTH)


@pytest.fixture(scope="module")
def bpe_ner(tmp_path_factory: pytest.TempPathFactory, docs: list[str]) -> str:
    """A random token classifier over a byte-level BPE tokenizer trained here: no "##" sub-word prefix."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    special = ["<s>", "</s>", "<pad>", "<unk>"]
    backend.train_from_iterator(docs, trainers.BpeTrainer(vocab_size=400, special_tokens=special, show_progress=False))
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)]
    )
    assert backend.model.continuing_subword_prefix is None
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=512,
        initializer_range=0.7,
        num_labels=len(NER_LABELS),
        id2label=dict(enumerate(NER_LABELS)),
        label2id={label: i for i, label in enumerate(NER_LABELS)},
    )
    path = tmp_path_factory.mktemp("bpe_ner")
    torch.manual_seed(3)
    transformers.AutoModelForTokenClassification.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def bpe_oracle(bpe_ner: str) -> PipelineOracle:
    return PipelineOracle(bpe_ner, MAX_LENGTH)


def spec(path: str, **options: Any) -> ModelSpec:
    return ModelSpec(path, task="token-classification", device="cpu", max_length=MAX_LENGTH, **options)


def expected_rows(
    oracle: PipelineOracle, texts: list[str | None], strategy: str, ignore_labels: tuple[str, ...] = ("O",)
) -> list[list[dict[str, Any]] | None]:
    """The oracle's entities per row in the engine's field names ("entity_group" → "entity")."""
    key = "entity" if strategy == "none" else "entity_group"
    return [
        None if text is None else [
            {"entity": e[key], "word": e["word"], "score": float(e["score"]), "start": e["start"], "end": e["end"]}
            for e in oracle(text, strategy, ignore_labels)
        ]
        for text in texts
    ]


def assert_rows_match(got: list[Any], expected: list[Any], texts: list[str | None]) -> None:
    """Entities, words and offsets exactly; scores within float noise of padded batches (1e-5)."""
    assert len(got) == len(expected) == len(texts)
    for i, (text, row, want) in enumerate(zip(texts, got, expected)):
        if want is None:
            assert row is None, f"row {i}: null input must give a null list, got {row!r}"
            continue
        assert row is not None, f"row {i}: {text!r} gave null"
        spans = [(e["entity"], e["word"], e["start"], e["end"]) for e in row]
        assert spans == [(e["entity"], e["word"], e["start"], e["end"]) for e in want], f"row {i}: {text!r}"
        for entity, reference in zip(row, want):
            assert entity["score"] == pytest.approx(reference["score"], abs=1e-5), f"row {i}: {entity}"


@pytest.mark.parametrize("batch_tokens", [MAX_LENGTH, 200, 4096])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_entities_equal_the_pipeline_on_each_row(
    tiny_ner: str, oracle: PipelineOracle, strategy: str, batch_tokens: int
) -> None:
    out, metrics = run(spec(tiny_ner, aggregation_strategy=strategy, batch_tokens=batch_tokens), pa.array(TEXTS))
    assert out.type == get_task("token-classification").arrow_type(spec(tiny_ner))
    assert_rows_match(out.to_pylist(), expected_rows(oracle, TEXTS, strategy), TEXTS)
    assert metrics.truncated_rows == 1  # LONG
    if batch_tokens == MAX_LENGTH:  # a budget of one full row: the long row runs alone, short rows share
        assert metrics.micro_batches < len([t for t in TEXTS if t is not None])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_byte_level_bpe_entities_equal_the_pipeline(bpe_ner: str, bpe_oracle: PipelineOracle, strategy: str) -> None:
    """The pipeline's heuristic for tokenizers without a sub-word prefix, and byte-level words and offsets."""
    out, _ = run(spec(bpe_ner, aggregation_strategy=strategy, batch_tokens=200), pa.array(TEXTS))
    expected = expected_rows(bpe_oracle, TEXTS, strategy)
    assert sum(len(row) for row in expected if row) > len(TEXTS)
    assert_rows_match(out.to_pylist(), expected, TEXTS)


def test_the_fixture_gives_the_strategies_something_to_do(oracle: PipelineOracle) -> None:
    """Guard against a degenerate random model: O is predicted and dropped, entities span several tokens."""
    texts = [t for t in TEXTS if t]
    tokens = [e for t in texts for e in oracle(t, "none", ())]
    labels = {e["entity"] for e in tokens}
    assert "O" in labels and len(labels - {"O"}) >= 3, labels
    assert sum(len(oracle(t, "none")) for t in texts) < len(tokens)  # ignore_labels drops the O tokens
    simple = [e for t in texts for e in oracle(t, "simple")]
    assert any(" " in e["word"] for e in simple), "no entity spans several words"
    first = [e for t in texts for e in oracle(t, "first")]
    assert any("##" in e["word"] for e in simple) and not any("##" in e["word"] for e in first)
    # The word-level strategies really differ from each other on these texts.
    assert len({repr(oracle(t, s)) for t in texts for s in ("first", "average", "max")}) > len(texts)


def test_offsets_point_into_the_text_and_stop_at_the_truncation(tiny_ner: str) -> None:
    out, _ = run(spec(tiny_ner, aggregation_strategy="none", ignore_labels=()), pa.array([LONG, TEXTS[0]]))
    long_row, short_row = out.to_pylist()
    # Without aggregation and with nothing ignored, every real token of the truncated row is listed.
    assert len(long_row) == MAX_LENGTH - 2  # [CLS] and [SEP] are special tokens, never entities
    assert long_row[-1]["end"] < len(LONG) // 2
    for text, row in ((LONG, long_row), (TEXTS[0], short_row)):
        for entity in row:
            piece = text[entity["start"] : entity["end"]]
            assert piece and piece == piece.strip(), (text, entity)


@pytest.mark.parametrize(("strategy", "ignore_labels"), [("none", ()), ("simple", ("PER",)), ("max", ("O", "LOC"))])
def test_ignore_labels_as_the_pipeline(
    tiny_ner: str, oracle: PipelineOracle, strategy: str, ignore_labels: tuple[str, ...]
) -> None:
    out, _ = run(spec(tiny_ner, aggregation_strategy=strategy, ignore_labels=ignore_labels), pa.array(TEXTS))
    assert_rows_match(out.to_pylist(), expected_rows(oracle, TEXTS, strategy, ignore_labels), TEXTS)
    labels = {e["entity"] for row in out.to_pylist() if row for e in row}
    assert labels and not labels & set(ignore_labels)


@pytest.mark.parametrize("texts", [[None, None], [], ["", None, " "]])
def test_null_and_empty_rows(tiny_ner: str, texts: list[str | None]) -> None:
    out, _ = run(spec(tiny_ner), pa.array(texts, pa.string()))
    assert out.to_pylist() == [None if t is None else [] for t in texts]
    assert out.null_count == texts.count(None)


def test_spark_type() -> None:
    arrow_type = get_task("token-classification").arrow_type(spec("unused"))
    assert spark_ddl(arrow_type) == "array<struct<entity:string,word:string,score:double,start:int,end:int>>"


def test_bad_options_fail_on_the_spec() -> None:
    with pytest.raises(SpecError, match=r"aggregation_strategy must be one of .*\(got 'longest'\)"):
        spec("unused", aggregation_strategy="longest")
    with pytest.raises(SpecError, match=r"aggregation_strategy applies to task 'token-classification'"):
        ModelSpec("unused", task="classification", aggregation_strategy="first")


def test_a_tokenizer_without_offsets_is_refused(tiny_ner: str, tmp_path: Path) -> None:
    encoding = SimpleNamespace(offsets=[(0, 0), (0, 0), (0, 0)])
    tokenizer = SimpleNamespace(backend_tokenizer=SimpleNamespace(encode=lambda text: encoding))
    with pytest.raises(ModelLoadError, match=r"needs a tokenizer that gives character offsets"):
        build_head(spec(tiny_ner), model=None, tokenizer=tokenizer, model_dir=tmp_path)


def test_scores_are_probabilities(tiny_ner: str) -> None:
    """With "none" and nothing ignored, each token's score is its best label's softmax probability."""
    out, _ = run(spec(tiny_ner, aggregation_strategy="none", ignore_labels=()), pa.array([TEXTS[0]]))
    scores = [e["score"] for e in out.to_pylist()[0]]
    assert all(1 / 5 <= s <= 1 for s in scores)

