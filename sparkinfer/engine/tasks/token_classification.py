"""Token classification (NER, POS tagging): entities with character offsets into the input text.

The output equals transformers' ``pipeline("token-classification", aggregation_strategy=...)`` run on each
row alone. The head runs the model on padded micro-batches and takes the softmax over labels step for
step as the pipeline does; `to_arrow` then follows the pipeline's post-processing
(``TokenClassificationPipeline.gather_pre_entities`` → ``aggregate`` → ``group_entities`` → the
``ignore_labels`` filter) on each row's scores, token ids, offsets and special-token mask. It is written out
here, not called, because importing ``transformers.pipelines`` costs seconds in every Python worker, and
building a pipeline moves the model to ``cuda:0`` unless told otherwise; the unit tests hold it to the
pipeline itself, strategy by strategy.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from sparkinfer.engine.tasks.base import EncoderHead, Inputs
from sparkinfer.errors import InferenceError, ModelLoadError

if TYPE_CHECKING:
    import torch

    from sparkinfer.spec import ModelSpec

log = logging.getLogger("sparkinfer")

auto_class = "AutoModelForTokenClassification"

_ENTITY = pa.struct(
    [
        ("entity", pa.string()),
        ("word", pa.string()),
        ("score", pa.float64()),
        ("start", pa.int32()),
        ("end", pa.int32()),
    ]
)
# Strategies that merge sub-word tokens into words before grouping.
_WORD_STRATEGIES = ("first", "average", "max")


def arrow_type(spec: ModelSpec) -> pa.DataType:
    """list<struct<entity, word, score, start, end>>: one entry per entity (per token with "none")."""
    return pa.list_(_ENTITY)


class TokenClassificationHead(EncoderHead):
    """Per-token label scores per row; `to_arrow` turns them into entities as the pipeline does.

    Args:
        model: The loaded ``AutoModelForTokenClassification``.
        tokenizer: Its transformers fast tokenizer.
        labels: Label names in id order.
        strategy: ``ModelSpec.aggregation_strategy``.
        ignore_labels: Labels ("none") or entity groups (other strategies) left out of the output.
    """

    def __init__(
        self, model: Any, tokenizer: Any, labels: list[str], strategy: str, ignore_labels: tuple[str, ...]
    ) -> None:
        super().__init__(model, tokenizer)
        self.labels = labels
        self.strategy = strategy
        self.ignore_labels = ignore_labels
        # The pipeline trusts a tokenizer's sub-word prefix ("##") to find word pieces; without one it guesses
        # from the surrounding characters.
        self.word_aware = bool(getattr(tokenizer.backend_tokenizer.model, "continuing_subword_prefix", None))
        self.unk_id = tokenizer.unk_token_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> npt.NDArray[Any]:
        """One 2-D (tokens x labels) score array per row, its padding cut off (rows are right-padded)."""
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        # The pipeline's softmax: numpy on float32 logits (half precision is widened first).
        values = logits.float().cpu().numpy()
        shifted = np.exp(values - values.max(axis=-1, keepdims=True))
        scores = shifted / shifted.sum(axis=-1, keepdims=True)
        lengths = attention_mask.sum(dim=1).cpu().tolist()
        rows = np.empty(len(lengths), dtype=object)
        for i, length in enumerate(lengths):
            rows[i] = scores[i, :length]
        return rows

    def to_arrow(self, outputs: npt.NDArray[Any], valid: npt.NDArray[np.bool_], inputs: Inputs) -> pa.Array:
        rows: list[list[dict[str, Any]] | None] = [None] * len(valid)
        for slot, scores, text, encoding in zip(np.flatnonzero(valid), outputs, inputs.texts, inputs.encodings):
            rows[slot] = self.entities(text, encoding, scores)
        return pa.array(rows, type=pa.list_(_ENTITY))

    def entities(self, text: str, encoding: Any, scores: npt.NDArray[Any]) -> list[dict[str, Any]]:
        """One row's entities: its tokens, merged into words and groups by the strategy, minus ignored labels.

        Raises:
            InferenceError: When `scores` does not hold one row per token of `encoding`.
        """
        if len(scores) != len(encoding.ids):
            raise InferenceError(
                f"token classification got scores for {len(scores)} tokens but the row has {len(encoding.ids)} "
                f"tokens; the micro-batch must be right-padded (text {text[:40]!r})"
            )
        tokens = self._tokens(text, encoding, scores)
        if self.strategy in _WORD_STRATEGIES:
            tokens = [self._word(group) for group in _words(tokens)]
        else:
            for token in tokens:
                best = int(token["scores"].argmax())
                token.update(entity=self.labels[best], score=token["scores"][best])
        entities = tokens if self.strategy == "none" else self._groups(tokens)
        return [
            {
                "entity": e["entity"],
                "word": e["word"],
                "score": float(e["score"]),
                "start": e["start"],
                "end": e["end"],
            }
            for e in entities
            if e["entity"] not in self.ignore_labels
        ]

    def _tokens(self, text: str, encoding: Any, scores: npt.NDArray[Any]) -> list[dict[str, Any]]:
        """The non-special tokens with their scores and offsets, and whether each continues a word."""
        words = self.tokenizer.convert_ids_to_tokens(encoding.ids)
        tokens = []
        for i, (token_id, word, (start, end), special) in enumerate(
            zip(encoding.ids, words, encoding.offsets, encoding.special_tokens_mask)
        ):
            if special:
                continue
            piece = text[start:end]
            if self.word_aware:
                is_subword = len(word) != len(piece)
            else:
                is_subword = start > 0 and " " not in text[start - 1 : start + 1]
            if token_id == self.unk_id:  # [UNK] says nothing: show the text it stands for, as its own word
                word, is_subword = piece, False
            tokens.append({"word": word, "scores": scores[i], "start": start, "end": end, "is_subword": is_subword})
        return tokens

    def _word(self, tokens: list[dict[str, Any]]) -> dict[str, Any]:
        """One word from its tokens: the label of its first token, of its surest token, or of the mean scores."""
        if self.strategy == "first":
            scores = tokens[0]["scores"]
        elif self.strategy == "max":
            scores = max(tokens, key=lambda token: token["scores"].max())["scores"]
        else:
            scores = np.nanmean(np.stack([token["scores"] for token in tokens]), axis=0)
        best = int(scores.argmax())
        return {
            "entity": self.labels[best],
            "score": scores[best],
            "word": self.tokenizer.convert_tokens_to_string([token["word"] for token in tokens]),
            "start": tokens[0]["start"],
            "end": tokens[-1]["end"],
        }

    def _groups(self, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Adjacent tokens (or words) of one tag merged into an entity group; a B- tag starts a new group."""
        groups: list[list[dict[str, Any]]] = []
        for entity in entities:
            bi, tag = _tag(entity["entity"])
            if groups and bi != "B" and tag == _tag(groups[-1][-1]["entity"])[1]:
                groups[-1].append(entity)
            else:
                groups.append([entity])
        return [
            {
                "entity": group[0]["entity"].split("-", 1)[-1],
                "score": np.mean(np.nanmean([e["score"] for e in group])),
                "word": self.tokenizer.convert_tokens_to_string([e["word"] for e in group]),
                "start": group[0]["start"],
                "end": group[-1]["end"],
            }
            for group in groups
        ]


def _words(tokens: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Tokens cut into words: a token that is not a sub-word starts a new one."""
    words: list[list[dict[str, Any]]] = []
    for token in tokens:
        if words and token["is_subword"]:
            words[-1].append(token)
        else:
            words.append([token])
    return words


def _tag(label: str) -> tuple[str, str]:
    """("B", "PER") for "B-PER", ("I", "PER") for "I-PER"; a label without the prefix counts as "I"."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def build_head(spec: ModelSpec, model: Any, tokenizer: Any, model_dir: Path) -> TokenClassificationHead:
    """Labels from ``config.id2label`` in id order; the strategy and ignored labels from the spec.

    Raises:
        ModelLoadError: When the tokenizer gives no character offsets (entities need them).
    """
    probe = tokenizer.backend_tokenizer.encode("offset probe")
    if not any(end > start for start, end in probe.offsets):
        raise ModelLoadError(
            f"token classification needs a tokenizer that gives character offsets, but {type(tokenizer).__name__} "
            f"from {str(model_dir)!r} gave {probe.offsets} for 'offset probe'; save the model with a fast "
            "tokenizer (tokenizer.json) that tracks offsets"
        )
    config = model.config
    labels = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]
    head = TokenClassificationHead(model, tokenizer, labels, spec.aggregation_strategy, spec.ignore_labels)
    if spec.aggregation_strategy in _WORD_STRATEGIES and not head.word_aware:
        log.warning(
            "sparkinfer: the tokenizer of %s marks no sub-words, so aggregation_strategy=%r finds words by a "
            "heuristic (as transformers' pipeline does): tokens not preceded by a space continue a word",
            spec.model, spec.aggregation_strategy,
        )
    return head
