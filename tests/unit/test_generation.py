"""Generation and text2text through the engine, against plain ``model.generate`` on each row ALONE.

The oracle tokenizes one prompt with the transformers tokenizer, keeps the last 128 - max_new_tokens tokens
of a causal prompt (the position limit), calls ``model.generate`` on it alone (no padding, no batch) and cuts
its output at the first end-of-sequence token and stop string itself. It shares no code with sparkinfer's
batching, padding, stopping or decoding. The tiny models (tests/conftest.py) are random GPT-2 / T5 with a
512-token byte-level BPE tokenizer trained on the docstring fixture, so prompts of 1 to ~600 tokens are easy to
make, and greedy decoding ends about a third of the rows early with </s>.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from sparkinfer import ModelSpec, SpecError
from sparkinfer.engine import cache, run, run_stream
from sparkinfer.engine.tasks.generation import _GumbelSampler, row_seed
from tests.conftest import build_tiny_causal_lm
from tests.quantized import CPU_4BIT_PATHS, use_cpu_4bit_path

POSITIONS = 128  # the tiny GPT-2's n_positions
EOS = 1


@pytest.fixture(autouse=True, scope="module")
def empty_cache() -> Iterator[None]:
    """No model from other modules in the cache, and none left behind (each spec here loads its own)."""
    cache.clear()
    yield
    cache.clear()


class GenerateOracle:
    """Plain transformers ``generate``, one row at a time, memoized: (generated ids, prompt length)."""

    def __init__(
        self, path: str, *, causal: bool, quantized: bool = False, cpu_4bit_path: str | None = None,
        skip: list[str] | None = None,
    ) -> None:
        """`quantized`: NF4 as sparkinfer's "4bit" preset stands for on CPU, on bitsandbytes' `cpu_4bit_path`
        (None: the CPU's own), keeping the `skip` modules (None: transformers' default) in full precision."""
        import torch
        import transformers

        from sparkinfer.engine.faults import set_cpu_4bit_path

        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        kwargs: dict[str, Any] = {}
        if quantized:
            kwargs = {
                "quantization_config": transformers.BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
                    llm_int8_skip_modules=skip,
                ),
                "device_map": {"": "cpu"},
            }
        auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModelForSeq2SeqLM
        self.model = auto.from_pretrained(path, **kwargs).eval()
        if cpu_4bit_path is not None:
            set_cpu_4bit_path(self.model, cpu_4bit_path)
        self.causal = causal
        self._memo: dict[tuple[str, int, bool, str | None], tuple[list[int], int]] = {}

    def ids(self, text: str, new_tokens: int, *, chat: bool = False, system: str | None = None) -> list[int]:
        if chat:
            messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
            rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids: list[int] = self.tokenizer(rendered, add_special_tokens=False).input_ids
        else:
            ids = self.tokenizer(text).input_ids
        return ids[-(POSITIONS - new_tokens):] if self.causal else ids[:1024]

    def generate(
        self, text: str, new_tokens: int, *, chat: bool = False, system: str | None = None
    ) -> tuple[list[int], int]:
        """The generated ids (EOS included, nothing after it) and the prompt's token count."""
        key = (text, new_tokens, chat, system)
        if key not in self._memo:
            import torch

            ids = self.ids(text, new_tokens, chat=chat, system=system)
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                    max_new_tokens=new_tokens, do_sample=False,
                )[0].tolist()
            generated = out[len(ids):] if self.causal else out[1:]  # causal: after the prompt; T5: after <pad>
            if EOS in generated:
                generated = generated[: generated.index(EOS) + 1]
            self._memo[key] = (generated, len(ids))
        return self._memo[key]

    def text(self, text: str, new_tokens: int, **chat: Any) -> str:
        generated, _ = self.generate(text, new_tokens, **chat)
        return self.decode(generated)

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode([i for i in ids if i != EOS], skip_special_tokens=True))

    def details(self, text: str, new_tokens: int, stops: tuple[str, ...] = ()) -> dict[str, Any]:
        """What return_details must give: the first stop ends the output, found by decoding every prefix."""
        generated, prompt_tokens = self.generate(text, new_tokens)
        for n in range(1, len(generated) + 1):
            decoded = self.decode(generated[:n])
            hits = [decoded.find(s) for s in stops if s in decoded]
            if hits:
                return {"text": decoded[: min(hits)], "prompt_tokens": prompt_tokens, "completion_tokens": n,
                        "finish_reason": "stop"}
        ended = bool(generated) and generated[-1] == EOS
        return {"text": self.decode(generated), "prompt_tokens": prompt_tokens, "completion_tokens": len(generated),
                "finish_reason": "stop" if ended else "length"}


@pytest.fixture(scope="module")
def causal_oracle(tiny_causal_lm: str) -> GenerateOracle:
    return GenerateOracle(tiny_causal_lm, causal=True)


@pytest.fixture(scope="module")
def seq2seq_oracle(tiny_seq2seq: str) -> GenerateOracle:
    return GenerateOracle(tiny_seq2seq, causal=False)


@pytest.fixture(scope="module")
def prompts(words: list[str]) -> list[str]:
    """60 prompts of 1 to 300 words (about 1 to 700 tokens: several beyond the 112-token prompt limit)."""
    rng = random.Random(3)
    sizes = [1, 2, 3, 300, 150, 90, *(rng.choice([1, 2, 4, 8, 16, 32, 64, 128]) + rng.randrange(8) for _ in range(54))]
    return [" ".join(words[(i * 211) % 5000 :][:n]) for i, n in enumerate(sizes)]


# ---------------------------------------------------------------------------------------------- greedy


@pytest.mark.parametrize("batch_tokens", [150, 900, 100_000])
def test_greedy_generation_equals_per_row_generate(
    tiny_causal_lm: str, causal_oracle: GenerateOracle, prompts: list[str], batch_tokens: int
) -> None:
    spec = ModelSpec(tiny_causal_lm, task="generation", max_new_tokens=16, batch_tokens=batch_tokens, device="cpu")
    out, metrics = run(spec, pa.array([*prompts, None], pa.string()))
    expected = [causal_oracle.text(p, 16) for p in prompts]
    assert out.type == pa.string()
    assert out.to_pylist() == [*expected, None]
    # The oracle's prompts over the limit, and no more, count as truncated (their end is what was kept).
    over = sum(len(causal_oracle.tokenizer(p).input_ids) > POSITIONS - 16 for p in prompts)
    assert 3 <= over == metrics.truncated_rows
    ended = sum(causal_oracle.generate(p, 16)[0][-1:] == [EOS] for p in prompts)
    assert 5 <= ended <= len(prompts) - 5  # rows that stop early and rows that run to the limit
    assert metrics.micro_batches >= (10 if batch_tokens == 150 else 1)


@pytest.mark.parametrize("batch_tokens", [200, 100_000])
def test_text2text_greedy_equals_per_row_generate(
    tiny_seq2seq: str, seq2seq_oracle: GenerateOracle, prompts: list[str], batch_tokens: int
) -> None:
    texts = [p for p in prompts if len(p.split()) < 150]  # the encoder has no position limit: keep it short
    spec = ModelSpec(tiny_seq2seq, task="text2text", max_new_tokens=12, batch_tokens=batch_tokens, device="cpu")
    out, metrics = run(spec, pa.array([None, *texts], pa.string()))
    assert len(texts) >= 50
    assert out.to_pylist() == [None, *(seq2seq_oracle.text(p, 12) for p in texts)]
    assert len({seq2seq_oracle.text(p, 12) for p in texts}) > len(texts) // 2  # outputs depend on the input
    assert metrics.micro_batches >= (5 if batch_tokens == 200 else 1)


def test_details_report_tokens_and_finish_reason(
    tiny_causal_lm: str, causal_oracle: GenerateOracle, prompts: list[str]
) -> None:
    spec = ModelSpec(tiny_causal_lm, task="generation", max_new_tokens=16, return_details=True, batch_tokens=600,
                     device="cpu")
    out, _ = run(spec, pa.array(prompts[:30], pa.string()))
    got = out.to_pylist()
    assert got == [causal_oracle.details(p, 16) for p in prompts[:30]]
    assert {row["finish_reason"] for row in got} == {"stop", "length"}
    assert all(row["completion_tokens"] <= 16 for row in got)


def test_max_new_tokens_is_respected(tiny_causal_lm: str, causal_oracle: GenerateOracle, prompts: list[str]) -> None:
    spec = ModelSpec(tiny_causal_lm, task="generation", max_new_tokens=3, return_details=True, device="cpu")
    out, _ = run(spec, pa.array(prompts[:20], pa.string()))
    got = out.to_pylist()
    assert got == [causal_oracle.details(p, 3) for p in prompts[:20]]
    assert max(row["completion_tokens"] for row in got) == 3
    assert any(row["finish_reason"] == "length" for row in got)


def test_stop_strings_cut_at_the_first_stop(
    tiny_causal_lm: str, causal_oracle: GenerateOracle, prompts: list[str]
) -> None:
    full = [causal_oracle.text(p, 16) for p in prompts]
    # Two frequent 2-character pieces of the greedy outputs: stops that occur in some rows, at different places.
    counts: dict[str, int] = {}
    for text in full:
        for piece in {text[i : i + 2] for i in range(len(text) - 1)}:
            counts[piece] = counts.get(piece, 0) + 1
    ranked = sorted((c, s) for s, c in counts.items() if c < len(full) * 0.6 and s.strip())
    stops = (ranked[-1][1], ranked[-2][1])
    spec = ModelSpec(tiny_causal_lm, task="generation", max_new_tokens=16, stop=stops, return_details=True,
                     batch_tokens=500, device="cpu")
    out, _ = run(spec, pa.array(prompts, pa.string()))
    got = out.to_pylist()
    assert got == [causal_oracle.details(p, 16, stops) for p in prompts]
    cut = [row for row, text in zip(got, full) if row["text"] != text]
    assert len(cut) >= 10 and all(row["finish_reason"] == "stop" for row in cut)
    assert not any(stop in row["text"] for row in got for stop in stops)
    # The rows a stop string ended generated fewer tokens than without it.
    plain = {p: len(causal_oracle.generate(p, 16)[0]) for p in prompts}
    assert any(row["completion_tokens"] < plain[p] for row, p in zip(got, prompts))


def test_empty_prompt_gives_empty_text(tiny_causal_lm: str, causal_oracle: GenerateOracle) -> None:
    spec = ModelSpec(tiny_causal_lm, task="generation", max_new_tokens=4, return_details=True, device="cpu")
    out, _ = run(spec, pa.array(["", "Return the"], pa.string()))
    assert out.to_pylist() == [
        {"text": "", "prompt_tokens": 0, "completion_tokens": 0, "finish_reason": "length"},
        causal_oracle.details("Return the", 4),
    ]


# ---------------------------------------------------------------------------------------------- chat


def test_chat_template_with_system_prompt_equals_per_row_generate(
    tiny_causal_lm: str, causal_oracle: GenerateOracle, prompts: list[str]
) -> None:
    system = "You answer in one line."
    spec = ModelSpec(tiny_causal_lm, task="generation", max_new_tokens=10, chat=True, system_prompt=system,
                     return_details=True, device="cpu")
    texts = prompts[6:26]
    out, _ = run(spec, pa.array(texts, pa.string()))
    got = out.to_pylist()
    assert [row["text"] for row in got] == [causal_oracle.text(t, 10, chat=True, system=system) for t in texts]
    rendered = [len(causal_oracle.ids(t, 10, chat=True, system=system)) for t in texts]
    assert [row["prompt_tokens"] for row in got] == rendered
    short = [len(causal_oracle.ids(t, 10)) for t in texts]
    assert all(r > s for r, s, in zip(rendered, short) if s < POSITIONS - 10)  # the template's tokens were added
    plain, _ = run(ModelSpec(tiny_causal_lm, task="generation", max_new_tokens=10, device="cpu"), pa.array(texts))
    assert plain.to_pylist() != [row["text"] for row in got]


def test_chat_without_a_template_fails_at_load(tiny_causal_lm: str, tmp_path: Path) -> None:
    copy = tmp_path / "no_template"
    shutil.copytree(tiny_causal_lm, copy)
    (copy / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    spec = ModelSpec(str(copy), task="generation", chat=True, device="cpu")
    with pytest.raises(SpecError, match=r"chat=True needs a tokenizer with a chat template.*chat=False"):
        run(spec, pa.array(["hi"]))


def test_max_new_tokens_must_leave_room_for_a_prompt(tiny_causal_lm: str) -> None:
    spec = ModelSpec(tiny_causal_lm, task="generation", max_new_tokens=POSITIONS, device="cpu")
    message = r"max_new_tokens must be below the model's 128 positions .*got max_new_tokens=128"
    with pytest.raises(SpecError, match=message):
        run(spec, pa.array(["hi"]))


# ---------------------------------------------------------------------------------------------- sampling


def _stream(spec: ModelSpec, texts: list[str], batch_rows: int) -> list[str | None]:
    batches = [pa.array(texts[i : i + batch_rows], pa.string()) for i in range(0, len(texts), batch_rows)]
    return [v for out in run_stream(spec, batches) for v in out.to_pylist()]


def test_sampling_with_a_seed_does_not_depend_on_batching_or_order(
    tiny_causal_lm: str, causal_oracle: GenerateOracle, prompts: list[str]
) -> None:
    options: dict[str, Any] = {"task": "generation", "max_new_tokens": 12, "do_sample": True, "seed": 11,
                               "temperature": 0.8, "top_k": 50, "top_p": 0.95, "device": "cpu"}
    texts = prompts[:40]
    first = _stream(ModelSpec(tiny_causal_lm, batch_tokens=100_000, **options), texts, 40)
    order = list(range(len(texts)))
    random.Random(5).shuffle(order)
    shuffled = _stream(ModelSpec(tiny_causal_lm, batch_tokens=130, buffer_rows=7, overlap=False, **options),
                       [texts[i] for i in order], 3)
    assert [shuffled[order.index(i)] for i in range(len(texts))] == first
    # Sampling really sampled: most rows differ from greedy decoding, and from another seed's samples.
    greedy = [causal_oracle.text(t, 12) for t in texts]
    assert sum(a != b for a, b in zip(first, greedy)) > len(texts) * 0.7
    other = _stream(ModelSpec(tiny_causal_lm, **{**options, "seed": 12}), texts, 40)
    assert sum(a != b for a, b in zip(first, other)) > len(texts) * 0.7


def test_sampling_with_top_k_1_is_greedy(
    tiny_causal_lm: str, causal_oracle: GenerateOracle, prompts: list[str]
) -> None:
    spec = ModelSpec(tiny_causal_lm, task="generation", max_new_tokens=8, do_sample=True, top_k=1, device="cpu")
    out, _ = run(spec, pa.array(prompts[:20], pa.string()))
    assert out.to_pylist() == [causal_oracle.text(p, 8) for p in prompts[:20]]


def test_gumbel_sampler_draws_from_the_warped_softmax() -> None:
    import torch

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]])
    rows = 6000

    def frequencies(**options: Any) -> np.ndarray:
        spec = ModelSpec("m", task="generation", do_sample=True, **options)
        sampler = _GumbelSampler(spec, [row_seed(0, [i]) for i in range(rows)])
        noisy = sampler(torch.zeros(rows, 1, dtype=torch.long), logits.expand(rows, -1).clone())
        return np.bincount(noisy.argmax(dim=-1).numpy(), minlength=5) / rows

    plain = torch.softmax(logits[0], dim=-1).numpy()
    assert np.abs(frequencies() - plain).max() < 0.03
    hot = torch.softmax(logits[0] / 2.0, dim=-1).numpy()
    assert np.abs(frequencies(temperature=2.0) - hot).max() < 0.03
    top2 = frequencies(top_k=2)
    assert top2[2:].sum() == 0 and abs(top2[0] - plain[0] / plain[:2].sum()) < 0.03
    nucleus = frequencies(top_p=0.6)  # the first token alone holds 0.64 of the mass
    assert nucleus[0] == 1.0


def test_row_seed_is_stable_and_depends_on_seed_and_prompt() -> None:
    assert row_seed(0, [5, 6]) == row_seed(0, [5, 6])
    assert len({row_seed(0, [5, 6]), row_seed(1, [5, 6]), row_seed(0, [6, 5]), row_seed(0, [5, 6, 0])}) == 4
    assert row_seed(3, [1, 2, 3]) == 8743347518122771447  # blake2b, not Python's salted hash()


# ---------------------------------------------------------------------------------------------- 4-bit


@pytest.mark.parametrize("path", CPU_4BIT_PATHS)
def test_4bit_generation_equals_the_4bit_models_own_per_row_generate(
    monkeypatch: pytest.MonkeyPatch, tiny_causal_lm_4bit: str, prompts: list[str], path: str
) -> None:
    pytest.importorskip("bitsandbytes")
    use_cpu_4bit_path(monkeypatch, path)
    cache.clear()
    oracle = GenerateOracle(tiny_causal_lm_4bit, causal=True, quantized=True, cpu_4bit_path=path)
    texts = prompts[:24]
    spec = ModelSpec(tiny_causal_lm_4bit, task="generation", max_new_tokens=10, quantization="4bit",
                     batch_tokens=400, device="cpu")
    out, metrics = run(spec, pa.array(texts, pa.string()))
    expected = [oracle.text(t, 10) for t in texts]
    assert out.to_pylist() == expected and metrics.micro_batches > 1
    assert expected != [GenerateOracle(tiny_causal_lm_4bit, causal=True).text(t, 10) for t in texts]  # 4 bits show
    attention = cache.get_model(spec, device="cpu")[0].model.transformer.h[0].attn.c_attn
    assert type(attention).__name__ == "Linear4bit"
    assert getattr(attention.weight.quant_state, "packing_format_for_cpu", False) == (path == "packed")


@pytest.fixture(scope="module")
def narrow_causal_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny GPT-2 at width 64 with a 96-wide MLP: ``mlp.c_fc`` (64 -> 96) fits bitsandbytes' packed CPU
    kernel, ``mlp.c_proj`` (96 -> 64) does not (96 inputs are no whole number of 64-blocks)."""
    return build_tiny_causal_lm(tmp_path_factory.mktemp("narrow_causal_lm"), width=64, inner=96)


@pytest.mark.parametrize("path", CPU_4BIT_PATHS)
def test_layers_too_narrow_for_the_cpu_4bit_kernel_stay_full_precision_and_the_model_generates(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, narrow_causal_lm: str, prompts: list[str],
    path: str,
) -> None:
    """Once failed every row on CPUs with AVX-512-BF16 (RuntimeError in bitsandbytes' repacking)."""
    import logging

    import torch

    pytest.importorskip("bitsandbytes")
    use_cpu_4bit_path(monkeypatch, path)
    cache.clear()
    texts = prompts[:16]
    spec = ModelSpec(narrow_causal_lm, task="generation", max_new_tokens=10, quantization="4bit",
                     batch_tokens=400, device="cpu")
    with caplog.at_level(logging.WARNING, logger="sparkinfer"):
        out, metrics = run(spec, pa.array(texts, pa.string()))
    warnings = [r.getMessage() for r in caplog.records if "full precision" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "keeping 2 layer(s)" in warnings[0] and "transformer.h.0.mlp.c_proj (96->64)" in warnings[0]

    # The oracle states the expected layout on its own: transformers' default skip (the tied output head)
    # plus the two narrow projections.
    skip = ["lm_head", "transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_proj"]
    oracle = GenerateOracle(narrow_causal_lm, causal=True, quantized=True, cpu_4bit_path=path, skip=skip)
    assert out.to_pylist() == [oracle.text(t, 10) for t in texts] and metrics.error_rows == 0
    model = cache.get_model(spec, device="cpu")[0].model
    for block in model.transformer.h:
        assert type(block.mlp.c_proj).__name__ == "Conv1D"
        assert {type(block.mlp.c_fc).__name__, type(block.attn.c_attn).__name__} == {"Linear4bit"}
    assert type(model.lm_head) is torch.nn.Linear


# ---------------------------------------------------------------------------------------------- job options


def test_job_options_for_generation_parse_repeated_stops_and_a_prompt_template() -> None:
    from sparkinfer.spark.job import Job, parse_args

    base = ["--input", "in", "--output", "out", "--model", "m", "--task", "generation"]
    job, _ = parse_args([*base, "--stop", "a,b", "--stop", "\n\n", "--prompt-template", "Q: {title} {{x}} {body}",
                         "--do-sample", "--seed", "3", "--top-k", "5"])
    assert job.spec.stop == ("a,b", "\n\n") and (job.spec.do_sample, job.spec.seed, job.spec.top_k) == (True, 3, 5)
    assert job.sources == ("title", "body") and job.targets == ("prediction",)
    with pytest.raises(SpecError, match=r"prompt_template replaces input_cols"):
        Job(input="i", output="o", spec=job.spec, input_cols=("a",), prompt_template="{b}")
    with pytest.raises(SpecError, match=r"template is malformed"):
        Job(input="i", output="o", spec=job.spec, prompt_template="{b")


def test_all_null_input_gives_a_null_column_of_the_task_type(tiny_causal_lm: str) -> None:
    spec = ModelSpec(tiny_causal_lm, task="generation", return_details=True, device="cpu")
    out, metrics = run(spec, pa.array([None, None], pa.string()))
    assert out.type == pa.struct([("text", pa.string()), ("prompt_tokens", pa.int32()),
                                  ("completion_tokens", pa.int32()), ("finish_reason", pa.string())])
    assert out.to_pylist() == [None, None] and metrics.micro_batches == 0


def test_spark_types_of_both_tasks() -> None:
    from sparkinfer.engine.tasks import get_task
    from sparkinfer.spark.types import spark_ddl

    details = "struct<text:string,prompt_tokens:int,completion_tokens:int,finish_reason:string>"
    for task in ("generation", "text2text"):
        assert spark_ddl(get_task(task).arrow_type(ModelSpec("m", task=task))) == "string"
        assert spark_ddl(get_task(task).arrow_type(ModelSpec("m", task=task, return_details=True))) == details
    assert get_task("generation").auto_class == "AutoModelForCausalLM"
    assert get_task("text2text").auto_class == "AutoModelForSeq2SeqLM"


def test_a_micro_batch_stops_when_its_last_row_has_ended(
    tiny_causal_lm: str, causal_oracle: GenerateOracle, prompts: list[str]
) -> None:
    early = [p for p in prompts if causal_oracle.generate(p, 40)[0][-1:] == [EOS]][:6]
    assert len(early) >= 3
    spec = ModelSpec(tiny_causal_lm, task="generation", max_new_tokens=40, return_details=True, device="cpu")
    model = cache.get_model(spec, device="cpu")[0].model
    calls: list[int] = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        out, metrics = run(spec, pa.array(early, pa.string()))
    finally:
        hook.remove()
    got = out.to_pylist()
    assert got == [causal_oracle.details(p, 40) for p in early] and metrics.micro_batches == 1
    assert len(calls) == max(row["completion_tokens"] for row in got) < 40  # one forward per step, no more


@pytest.mark.parametrize("option", [{"temperature": 0.5}, {"top_p": 0.9}, {"top_k": 5}, {"seed": 3}])
def test_sampling_options_without_do_sample_are_refused(option: dict[str, Any]) -> None:
    name, value = next(iter(option.items()))
    expected = rf"ModelSpec\.{name} applies to sampling, which needs do_sample=True "
    message = expected + rf"\(got do_sample=False, {name}={value}\)"
    for task in ("generation", "text2text"):
        with pytest.raises(SpecError, match=message):
            ModelSpec("m", task=task, **option)
        assert getattr(ModelSpec("m", task=task, do_sample=True, **option), name) == value
