"""Text generation: decoder-only causal LMs (task "generation") and encoder-decoders (task "text2text").

One head serves both, with a ``causal`` flag:

* causal LMs are padded on the left, so that every row's next token follows its last real one; the prompt
  is truncated from the left (its end is kept) to leave room for ``max_new_tokens`` within the model's
  positions, and only the tokens after the padded prompt are returned;
* encoder-decoders are padded on the right and return the decoder's tokens after its start token.

Sampling never uses ``generate``'s own random draws, which are shared by the whole batch. Decoding stays
greedy, and `_GumbelSampler` adds Gumbel noise from a generator owned by each row (seeded from
``ModelSpec.seed`` and the row's prompt tokens) to the temperature/top-k/top-p-warped logits: the argmax of
logits plus Gumbel noise is an exact sample from their softmax, and a row's draws do not depend on which
rows share its batch or how the stream was cut.

`_Finish` stops each row at its first end-of-sequence token or stop string, and records when and why, for
``return_details`` (``finish_reason`` "stop" or "length", ``completion_tokens``).

With ``choices`` or ``regex`` the head decodes under a grammar (`constrain.Constraint`, applied before the
sampler): a row that runs out of ``max_new_tokens`` before completing it gives a null text and finish
reason "length".
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from sparkinfer.engine import constrain
from sparkinfer.engine.tasks.base import Inputs, PaddingSide
from sparkinfer.errors import SpecError

if TYPE_CHECKING:
    import torch

    from sparkinfer.spec import ModelSpec

auto_class = "AutoModelForCausalLM"

DETAILS = pa.struct(
    [
        ("text", pa.string()),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("finish_reason", pa.string()),
    ]
)


def arrow_type(spec: ModelSpec) -> pa.DataType:
    """string, or struct<text, prompt_tokens, completion_tokens, finish_reason> with ``return_details``."""
    return DETAILS if spec.return_details else pa.string()


def build_head(
    spec: ModelSpec, model: Any, tokenizer: Any, model_dir: Path, *, head_class: type[GenerationHead] | None = None
) -> GenerationHead:
    """The head of a causal LM (task "generation") or an encoder-decoder (task "text2text").

    `head_class` is a subclass of `GenerationHead` to build instead (extraction's).

    For a causal LM, the backing tokenizer is set to keep the END of long prompts, at most the model's
    positions minus ``max_new_tokens`` tokens (and no more than the loader's max length).

    Raises:
        SpecError: When ``chat=True`` but the tokenizer has no chat template, or when ``max_new_tokens``
            leaves no room for a prompt within the model's positions.
    """
    causal = spec.task != "text2text"
    if spec.chat and not getattr(tokenizer, "chat_template", None):
        raise SpecError(
            f"ModelSpec.chat=True needs a tokenizer with a chat template, but the tokenizer of {spec.model!r} has "
            "none (tokenizer.chat_template is unset); pass chat=False and format the prompt yourself, or save "
            "the model with a tokenizer that has a chat_template"
        )
    if causal:
        backend = tokenizer.backend_tokenizer
        current = (backend.truncation or {}).get("max_length")
        positions = _positions(model.config)
        limits = [n for n in (current, positions - spec.max_new_tokens if positions else None) if n is not None]
        prompt_max = min(limits) if limits else None
        if prompt_max is not None and prompt_max < 1:
            raise SpecError(
                f"ModelSpec.max_new_tokens must be below the model's {positions} positions so that a prompt "
                f"still fits (got max_new_tokens={spec.max_new_tokens}); lower max_new_tokens"
            )
        if prompt_max is not None:
            # Keep the end of a long prompt: the text right before the continuation matters most.
            backend.enable_truncation(max_length=prompt_max, direction="left")
    config = model.generation_config
    eos = config.eos_token_id
    eos_ids = tuple(int(i) for i in ([eos] if isinstance(eos, int) else eos or []))
    pad = next((int(p) for p in (config.pad_token_id, tokenizer.pad_token_id, *eos_ids) if p is not None), 0)
    return (head_class or GenerationHead)(spec, model, tokenizer, causal=causal, eos_ids=eos_ids, pad_id=pad)


def constraint(spec: ModelSpec, model: Any, tokenizer: Any, eos_ids: tuple[int, ...]) -> constrain.Constraint | None:
    """The compiled grammar of a constrained spec (``schema``, ``choices``, ``regex``), else None."""
    if not constrain.constrained(spec):
        return None
    vocab = getattr(model.config.get_text_config(decoder=True), "vocab_size", None) or len(tokenizer)
    return constrain.Constraint(spec, tokenizer, int(vocab), eos_ids)


def _positions(config: Any) -> int | None:
    """The model's position limit (``max_position_embeddings``; GPT-2 maps ``n_positions`` to it)."""
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


class GenerationHead:
    """``model.generate`` on padded micro-batches.

    `forward` gives one ``(text, prompt_tokens, completion_tokens, finish_reason)`` tuple per row; `to_arrow`
    keeps the text, or all four with ``return_details``.
    """

    def __init__(
        self, spec: ModelSpec, model: Any, tokenizer: Any, *, causal: bool, eos_ids: tuple[int, ...], pad_id: int
    ) -> None:
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.causal = causal
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.padding_side: PaddingSide = "left" if causal else "right"
        self.new_tokens = spec.max_new_tokens
        self.constraint = constraint(spec, model, tokenizer, eos_ids)

    def prepare(self, texts: list[str]) -> list[Any]:
        """Encode the prompts; with ``chat=True`` render them with the chat template first.

        The rendered chat already holds the template's special tokens, so it is encoded without adding them
        again.
        """
        backend = self.tokenizer.backend_tokenizer
        if not self.spec.chat:
            plain: list[Any] = backend.encode_batch(texts)
            return plain
        rendered = [
            self.tokenizer.apply_chat_template(self._messages(text), tokenize=False, add_generation_prompt=True)
            for text in texts
        ]
        encodings: list[Any] = backend.encode_batch(rendered, add_special_tokens=False)
        return encodings

    def _messages(self, text: str) -> list[dict[str, str]]:
        system = [] if self.spec.system_prompt is None else [{"role": "system", "content": self.spec.system_prompt}]
        return [*system, {"role": "user", "content": text}]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> npt.NDArray[Any]:
        """Generate for one micro-batch; return one ``(text, prompt_tokens, completion_tokens, reason)`` per row.

        A row without a single prompt token (an empty prompt, for a tokenizer that adds no special tokens)
        has nothing to continue: it gets ``("", 0, 0, "length")`` and is left out of ``generate``.
        """
        counts = attention_mask.sum(dim=1).cpu().tolist()
        live = [row for row, count in enumerate(counts) if count > 0]
        out = np.empty(len(counts), dtype=object)
        for row in range(len(counts)):
            out[row] = ("", 0, 0, "length")
        if live:
            if len(live) < len(counts):
                input_ids, attention_mask = input_ids[live], attention_mask[live]
            results, complete, _ = self._generate(input_ids, attention_mask)
            for row, result, done in zip(live, results, complete or [True] * len(live)):
                out[row] = result if done else (None, *result[1:3], "length")
        return out

    def _generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[list[tuple[str, int, int, str]], list[bool] | None, float]:
        """``generate`` on live rows: their ``(text, prompt_tokens, completion_tokens, reason)``; under a grammar,
        whether each row completed it (else None), and the seconds spent masking."""
        import transformers

        spec = self.spec
        start = input_ids.shape[1] if self.causal else 1  # causal: after the padded prompt; else after <start>
        finish = _Finish(len(input_ids), start, self.eos_ids, spec.stop, self._decode)
        processors = transformers.LogitsProcessorList()
        masker = self.constraint.masker(len(input_ids)) if self.constraint is not None else None
        if masker is not None:  # before the sampler: a sampled row stays inside the grammar
            processors.append(masker)
        if spec.do_sample:
            prompts = [ids[mask.bool()].tolist() for ids, mask in zip(input_ids.cpu(), attention_mask.cpu())]
            processors.append(_GumbelSampler(spec, [row_seed(spec.seed, p) for p in prompts]))
        sequences = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=spec.max_new_tokens,
            do_sample=False,  # sampling is _GumbelSampler's, with per-row generators
            num_beams=1,
            pad_token_id=self.pad_id,
            eos_token_id=list(self.eos_ids) or None,
            logits_processor=processors,
            stopping_criteria=transformers.StoppingCriteriaList([finish]),
        )
        generated = sequences[:, start:].cpu().tolist()
        prompt_tokens = attention_mask.sum(dim=1).cpu().tolist()
        counts = [length if length >= 0 else len(tokens) for length, tokens in zip(finish.lengths, generated)]
        # The end-of-sequence token ends the row but is not part of its text.
        kept = [tokens[: n - int(eos)] for tokens, n, eos in zip(generated, counts, finish.by_eos)]
        results = [
            finished_row(text, int(prompt_tokens[row]), int(counts[row]), finish.lengths[row] >= 0, spec.stop)
            for row, text in enumerate(self._decode(kept))
        ]
        if masker is None:
            return results, None, 0.0
        complete = masker.complete([tokens[:n] for tokens, n in zip(generated, counts)])
        return results, complete, masker.seconds

    def tally(self, outputs: npt.NDArray[Any]) -> dict[str, float]:
        """Metrics counters of a constrained head's outputs: its rows, and those cut off (null text)."""
        if self.constraint is None:
            return {}
        return {"constrained_rows": len(outputs), "truncated_outputs": sum(1 for v in outputs if v[0] is None)}

    def _decode(self, sequences: list[list[int]]) -> list[str]:
        texts: list[str] = self.tokenizer.batch_decode(sequences, skip_special_tokens=True)
        return texts

    def to_arrow(self, outputs: npt.NDArray[Any], valid: npt.NDArray[np.bool_], inputs: Inputs) -> pa.Array:
        full: list[tuple[str, int, int, str] | None] = [None] * len(valid)
        for position, value in zip(np.flatnonzero(valid), outputs):
            full[position] = value
        if not self.spec.return_details:
            return pa.array([None if v is None else v[0] for v in full], pa.string())
        names = [f.name for f in DETAILS]
        return pa.array([None if v is None else dict(zip(names, v)) for v in full], DETAILS)


def row_seed(seed: int, prompt: list[int]) -> int:
    """A row's sampling seed: a stable hash (not Python's salted ``hash``) of the spec seed and its prompt."""
    digest = hashlib.blake2b(np.asarray([seed, *prompt], dtype=np.int64).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def finished_row(
    text: str, prompt_tokens: int, completion_tokens: int, stopped: bool, stops: tuple[str, ...]
) -> tuple[str, int, int, str]:
    """A finished row's ``(text, prompt_tokens, completion_tokens, finish_reason)``, in the static head and the
    continuous decoder alike: the text cut before its first stop string, and "stop" when an end-of-sequence
    token or a stop string ended the row (`stopped`, or a stop string found in the text), else "length"."""
    cut = _cut(text, stops)
    return cut, prompt_tokens, completion_tokens, "stop" if stopped or cut != text else "length"


def _cut(text: str, stops: tuple[str, ...]) -> str:
    """`text` up to the first occurrence of any stop string."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(found)] if found else text


class _Finish:
    """A stopping criterion that ends each row at its first EOS token or stop string, and records the step.

    Attributes:
        lengths: Per row, the generated tokens when it stopped (the EOS or the token completing a stop
            string included), or -1 while it runs (and when it ran to ``max_new_tokens``).
        by_eos: Per row, whether an end-of-sequence token stopped it.
    """

    def __init__(self, rows: int, start: int, eos_ids: tuple[int, ...], stops: tuple[str, ...], decode: Any):
        self.start = start
        self.eos_ids = eos_ids
        self.stops = stops
        self.decode = decode
        self.lengths = [-1] * rows
        self.by_eos = [False] * rows

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        new = input_ids[:, self.start :]
        step = new.shape[1]
        running = [row for row, length in enumerate(self.lengths) if length < 0]
        if self.eos_ids and running:
            last = new[:, -1].cpu().tolist()
            for row in running:
                if last[row] in self.eos_ids:
                    self.lengths[row], self.by_eos[row] = step, True
        running = [row for row in running if self.lengths[row] < 0]
        if self.stops and running:
            texts = self.decode(new[running].cpu().tolist())
            for row, text in zip(running, texts):
                if any(stop in text for stop in self.stops):
                    self.lengths[row] = step
        done = torch.tensor([length >= 0 for length in self.lengths], dtype=torch.bool)
        return done.to(input_ids.device)


class _GumbelSampler:
    """Sampling as greedy decoding: warp the logits, then add per-row Gumbel noise.

    ``argmax(logits + G)`` with ``G = -log(-log(U))``, ``U ~ Uniform(0, 1)`` per token, is a sample from
    ``softmax(logits)``. Each row draws its noise (one value per vocabulary entry per step) from its own
    generator, so what it samples depends on its prompt and the seed only.
    """

    def __init__(self, spec: ModelSpec, seeds: list[int]) -> None:
        import transformers

        warpers = transformers.LogitsProcessorList()
        if spec.temperature != 1.0:
            warpers.append(transformers.TemperatureLogitsWarper(spec.temperature))
        if spec.top_k is not None:
            warpers.append(transformers.TopKLogitsWarper(spec.top_k))
        if spec.top_p < 1.0:
            warpers.append(transformers.TopPLogitsWarper(spec.top_p))
        self.warpers = warpers
        self.seeds = seeds
        self.generators: list[torch.Generator] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        if not self.generators:  # made on the first step, on the device of the logits
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        warped = self.warpers(input_ids, scores.float())
        vocab = warped.shape[-1]
        uniform = torch.stack(
            [torch.rand(vocab, generator=g, device=scores.device, dtype=torch.float64) for g in self.generators]
        )
        tiny = torch.finfo(torch.float64).tiny
        gumbel = -torch.log(-torch.log(uniform.clamp(min=tiny)))
        noisy: torch.Tensor = (warped.double() + gumbel).to(warped.dtype)
        return noisy
