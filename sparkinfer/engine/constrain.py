"""Constrained decoding: a grammar decides, at every step, which tokens each row may take next.

The grammar comes from the spec: ``schema`` (extraction: compact JSON under a JSON Schema, no free
whitespace, so that a model cannot spend its tokens on spaces), ``choices`` or ``regex`` (generation).
llguidance compiles it once per bound head (`Constraint`); each ``generate`` call gets a `Masker`, a
transformers logits processor holding one matcher per row (copies of the compiled one), that

* feeds each row's last token to its matcher (from the second step on: the first step's last token is
  the prompt's), and stops feeding a row once it has ended (its end-of-sequence token), so the pad tokens
  ``generate`` appends to finished rows never reach a matcher;
* computes every row's allowed-token bitmask in one call (llguidance's thread pool) and sets the other
  logits to -inf, before any sampling warper or noise (so a sampled row stays inside the grammar).

It reads only the last token of each row, so left padding and rows of mixed prompt lengths are safe. When
a grammar is complete, its matcher allows only the end-of-sequence token. `Masker.complete` tells which
rows finished the grammar; a row that ran out of ``max_new_tokens`` first is incomplete (truncated).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkinfer._optional import require
from sparkinfer.errors import SpecError

if TYPE_CHECKING:
    import torch

    from sparkinfer.spec import ModelSpec


def constrained(spec: ModelSpec) -> bool:
    """Whether `spec` decodes under a grammar."""
    return spec.schema is not None or bool(spec.choices) or spec.regex is not None


def grammar(spec: ModelSpec) -> str:
    """The llguidance grammar of `spec`'s ``schema``, ``choices`` or ``regex``, checked.

    Raises:
        SpecError: When the grammar does not compile (naming llguidance's reason, e.g. an unimplemented
            schema keyword).
        MissingDependencyError: Without llguidance.
    """
    llguidance = require("llguidance", extra="extract", purpose="constrained decoding (schema, choices, regex)")
    if spec.schema is not None:
        source, what = spec.schema, "schema"
        text = llguidance.LLMatcher.grammar_from_json_schema(spec.schema, defaults={"whitespace_flexible": False})
    elif spec.choices:
        source, what = json.dumps(list(spec.choices)), "choices"
        text = llguidance.grammar_from("choice", source)
    elif spec.regex is not None:
        source, what = spec.regex, "regex"
        text = llguidance.LLMatcher.grammar_from_regex(spec.regex)
    else:
        raise SpecError("constrained decoding needs ModelSpec.schema, choices or regex (got none of them)")
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(text)
    if failed:
        raise SpecError(
            f"ModelSpec.{what} does not compile into a grammar: {'; '.join(messages)} (got {source[:300]!r}); "
            "remove or rewrite what it names"
        )
    return str(text)


class Constraint:
    """A grammar compiled for one tokenizer: hands out a `Masker` per ``generate`` call.

    Args:
        spec: The spec holding the grammar.
        tokenizer: The transformers fast tokenizer of the model.
        vocab_size: The width of the model's logits (it can exceed the tokenizer's size).
        eos_ids: The end-of-sequence tokens: the only ones allowed once the grammar is complete.
    """

    def __init__(self, spec: ModelSpec, tokenizer: Any, vocab_size: int, eos_ids: tuple[int, ...]) -> None:
        import llguidance
        import llguidance.hf

        text = grammar(spec)
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=list(eos_ids) or None)
        self.matcher = llguidance.LLMatcher(self.tokenizer, text)
        if self.matcher.is_error():
            raise SpecError(f"the grammar of {spec.model!r} does not compile for its tokenizer: {self.matcher.get_error()}")
        self.vocab_size = vocab_size
        self.eos_ids = eos_ids
        self._executor: Any = None

    def masker(self, rows: int) -> Masker:
        """A logits processor for one ``generate`` call of `rows` rows, each starting the grammar afresh."""
        import llguidance

        if self._executor is None:
            import torch

            self._executor = llguidance.LLExecutor(max(1, torch.get_num_threads()))
        return Masker([self.matcher.deep_copy() for _ in range(rows)], self._executor, self.vocab_size, self.eos_ids)


class Masker:
    """The logits processor of one ``generate`` call: one matcher per row (see the module docstring).

    Attributes:
        seconds: Time spent feeding matchers and computing and applying masks.
        steps: Decoding steps seen.
    """

    def __init__(self, matchers: list[Any], executor: Any, vocab_size: int, eos_ids: tuple[int, ...]) -> None:
        import llguidance.numpy

        self.matchers = matchers
        self.executor = executor
        self.eos_ids = frozenset(eos_ids)
        self.ended = [False] * len(matchers)
        self.bitmask = llguidance.numpy.allocate_token_bitmask(len(matchers), vocab_size)
        self.seconds = 0.0
        self.steps = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import llguidance.numpy
        import torch

        started = time.perf_counter()
        if self.steps:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                if self.ended[row]:
                    continue
                if token in self.eos_ids or not self.matchers[row].consume_token(token):
                    self.ended[row] = True  # a refused token leaves the matcher in error: the row is incomplete
        self.steps += 1
        live = [(matcher, row) for row, matcher in enumerate(self.matchers) if not self.ended[row]]
        self.bitmask.fill(-1)  # ended rows: any token (generate pads them anyway)
        if live:
            llguidance.numpy.fill_next_token_bitmask_par(self.executor, live, self.bitmask)
        bits = np.unpackbits(self.bitmask.view(np.uint8), axis=1, bitorder="little")[:, : scores.shape[-1]]
        allowed = torch.from_numpy(bits.astype(bool)).to(scores.device)
        if allowed.shape[-1] < scores.shape[-1]:  # logits past the mask's width are never allowed
            allowed = torch.nn.functional.pad(allowed, (0, scores.shape[-1] - allowed.shape[-1]), value=False)
        masked = scores.masked_fill(~allowed, float("-inf"))
        self.seconds += time.perf_counter() - started
        return masked

    def complete(self, generated: list[list[int]]) -> list[bool]:
        """Per row, whether its output completed the grammar, given every row's generated tokens.

        A row's last token has not been fed to its matcher when ``generate`` stopped right after it (the
        processor runs before each step, not after the last): feed it here.
        """
        done = []
        for row, (matcher, tokens) in enumerate(zip(self.matchers, generated)):
            if not self.ended[row] and tokens and tokens[-1] not in self.eos_ids:
                matcher.consume_token(tokens[-1])
            done.append(not matcher.is_error() and matcher.is_accepting())
        return done
