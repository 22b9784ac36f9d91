"""Quantization and dtypes: QuantizationSpec validation, its translation to bitsandbytes, and quantized runs.

Quantized runs compare the engine (batched, length-sorted, padded) with plain transformers + bitsandbytes
on each row alone. NF4 is batch-invariant, so 4-bit must match to cosine 0.9999. LLM.int8 multiplies the
features above its outlier threshold (6.0) in float16 for the whole batch, so on MiniLM 8-bit rows drift
with their batch-mates (0.995 there, see tests/spark/test_quantized_spark.py); the tiny encoder here has no
feature that large, so 8-bit is batch-invariant too and must match to 0.99999 (measured: 1 - 1e-15), tighter
than 8-bit vs float32 (0.99993), so an unquantized run would fail.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from sparkinfer import MissingDependencyError, ModelSpec, QuantizationSpec, SpecError
from sparkinfer._optional import check_installed
from sparkinfer.engine import cache, run
from sparkinfer.engine.loading import load_model
from sparkinfer.engine.quantize import bitsandbytes_config
from tests.quantized import (
    CPU_4BIT_PATHS,
    EmbeddingOracle,
    assert_every_4bit_layer_repacks,
    build_encoder,
    cosines,
    linear_weight_bytes,
    use_cpu_4bit_path,
)

pytestmark = pytest.mark.usefixtures("empty_cache")

MIN_COSINE = {4: 0.9999, 8: 0.99999}
BNB_LINEAR = {4: "Linear4bit", 8: "Linear8bitLt"}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    return build_encoder(tmp_path_factory.mktemp("encoder64"), minilm_path)


@pytest.fixture(scope="module")
def texts(docs: list[str]) -> list[str]:
    """Short and long rows (truncated at 64 tokens), for length-sorted batches of mixed widths."""
    return [docs[i][: 40 + 37 * (i % 9)] for i in range(40)]


# ---------------------------------------------------------------------------------------------- spec


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"quant_type": "np4"}, r"QuantizationSpec\.quant_type must be one of \('nf4', 'fp4'\) \(got 'np4'\)"),
        ({"bits": 3}, r"QuantizationSpec\.bits must be one of \(4, 8\) \(got 3\)"),
        ({"compute_dtype": "fp16"}, r"QuantizationSpec\.compute_dtype must be one of .* \(got 'fp16'\)"),
        ({"double_quant": 1}, r"QuantizationSpec\.double_quant must be True or False \(got 1\)"),
        ({"skip_modules": ["classifier"]}, r"skip_modules must be a tuple of module names .*\('classifier',\)"),
        ({"outlier_threshold": 0}, r"outlier_threshold must be a positive number \(got 0\)"),
        ({"bits": 8, "quant_type": "fp4"}, r"quant_type applies to 4-bit quantization, not 8-bit .* use bits=4"),
        ({"bits": 8, "compute_dtype": "bfloat16"}, r"compute_dtype applies to 4-bit"),
        ({"bits": 4, "outlier_threshold": 4.0}, r"outlier_threshold applies to 8-bit .* use bits=8"),
    ],
)
def test_invalid_quantization_specs_say_what_was_expected(options: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        QuantizationSpec(**options)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("int8", r"ModelSpec\.quantization must be None, one of \('8bit', '4bit'\) or a QuantizationSpec "
                 r"\(got 'int8'\)"),
        (4, r"\(got 4\)"),
        (["4bit"], r"\(got \['4bit'\]\)"),
    ],
)
def test_invalid_quantization_values_fail_on_the_spec(value: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        ModelSpec("m", task="embedding", quantization=value)


def test_quantization_on_mps_is_refused_with_the_reason() -> None:
    with pytest.raises(SpecError, match="bitsandbytes has no MPS kernels"):
        ModelSpec("m", task="embedding", quantization="4bit", device="mps")


def test_presets_spell_out_and_share_a_cache_key_with_their_spec() -> None:
    four = ModelSpec("m", task="embedding", quantization="4bit")
    assert four.quantization_spec == QuantizationSpec(bits=4, quant_type="nf4", double_quant=False)
    assert ModelSpec("m", task="embedding", quantization="8bit").quantization_spec == QuantizationSpec(bits=8)
    assert ModelSpec("m", task="embedding").quantization_spec is None
    assert four.cache_key == four.with_options(quantization=QuantizationSpec(bits=4)).cache_key
    keys = {
        ModelSpec("m", task="embedding", quantization=q).cache_key
        for q in (None, "8bit", "4bit", QuantizationSpec(quant_type="fp4"), QuantizationSpec(double_quant=True))
    }
    assert len(keys) == 5
    spec = ModelSpec("m", task="embedding", quantization=QuantizationSpec(skip_modules=("pooler",)))
    assert pickle.loads(pickle.dumps(spec)) == spec and hash(spec) == hash(pickle.loads(pickle.dumps(spec)))


def test_bitsandbytes_config_translation() -> None:
    import torch

    eight = bitsandbytes_config(QuantizationSpec(bits=8, outlier_threshold=4.5), torch.float32)
    assert (eight.load_in_8bit, eight.load_in_4bit, eight.llm_int8_threshold) == (True, False, 4.5)
    four = bitsandbytes_config(QuantizationSpec(), torch.bfloat16)
    assert (four.load_in_4bit, four.bnb_4bit_quant_type, four.bnb_4bit_use_double_quant) == (True, "nf4", False)
    assert four.bnb_4bit_compute_dtype == torch.bfloat16  # "auto": the model's dtype
    assert four.llm_int8_skip_modules is None  # transformers' default: keep the output head
    custom = bitsandbytes_config(
        QuantizationSpec(quant_type="fp4", double_quant=True, compute_dtype="float16", skip_modules=("pooler",)),
        torch.float32,
    )
    assert (custom.bnb_4bit_quant_type, custom.bnb_4bit_use_double_quant) == ("fp4", True)
    assert custom.bnb_4bit_compute_dtype == torch.float16
    assert custom.llm_int8_skip_modules == ["pooler"]


# ------------------------------------------------------------------------------------ missing package


def test_check_installed_names_the_extra_without_importing(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name))
    with pytest.raises(MissingDependencyError) as info:
        check_installed("accelerate", "bitsandbytes", extra="quant", purpose="ModelSpec.quantization='4bit'")
    assert str(info.value) == (
        "ModelSpec.quantization='4bit' needs bitsandbytes, which is not installed; "
        "install it with: pip install 'sparkinfer[quant]'"
    )
    check_installed("accelerate", extra="quant", purpose="x")  # present: no error


def test_loading_without_bitsandbytes_raises_missing_dependency(
    monkeypatch: pytest.MonkeyPatch, encoder: str
) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'sparkinfer\[quant\]'"):
        load_model(ModelSpec(encoder, task="embedding", quantization="8bit"), "cpu")


# ---------------------------------------------------------------------------------------- quantized runs


@pytest.mark.parametrize(("bits", "path"), [(8, None), *((4, path) for path in CPU_4BIT_PATHS)])
def test_quantized_engine_equals_per_row_bitsandbytes(
    monkeypatch: pytest.MonkeyPatch, encoder: str, texts: list[str], bits: int, path: str | None
) -> None:
    if path is not None:
        use_cpu_4bit_path(monkeypatch, path)
    spec = ModelSpec(encoder, task="embedding", max_length=64, batch_tokens=512, quantization=f"{bits}bit")
    out, metrics = run(spec, pa.array(texts, pa.string()))
    assert metrics.micro_batches > 2  # several batches of several widths
    oracle = EmbeddingOracle(encoder, bits=bits, normalize=False, max_length=64, cpu_4bit_path=path)
    got = cosines(out.to_pylist(), texts, oracle)
    assert got.min() >= MIN_COSINE[bits], f"{bits}-bit: min cosine {got.min()} at row {got.argmin()}"
    loaded, _ = cache.get_model(spec)
    assert linear_weight_bytes(loaded.model)[2] == {BNB_LINEAR[bits]}
    if path is not None:  # the path asked for is the one that ran: the packed one repacks at the first forward
        states = {getattr(m.weight.quant_state, "packing_format_for_cpu", False)
                  for m in loaded.model.modules() if type(m).__name__ == "Linear4bit"}
        assert states == {path == "packed"}


# ------------------------------------------------------------------------- bitsandbytes' packed CPU kernel


@pytest.mark.parametrize(
    ("in_features", "out_features"), [(64, 32), (128, 96), (32, 32), (96, 64), (64, 48), (65, 32), (64, 16)]
)
def test_the_narrow_layer_rule_is_the_one_bitsandbytes_repacking_enforces(in_features: int, out_features: int) -> None:
    """`fits_cpu_4bit_kernel` against the real repacking (plain torch, so it runs on every CPU)."""
    import inspect

    import bitsandbytes.functional as bnbf
    import torch
    from bitsandbytes.nn import Params4bit

    from sparkinfer.engine.quantize import BLOCKSIZE_4BIT, CPU_PACK_ROWS, fits_cpu_4bit_kernel

    assert inspect.signature(bnbf._convert_weight_packed_for_cpu).parameters["block_n"].default == CPU_PACK_ROWS
    torch.manual_seed(0)
    weight = Params4bit(torch.randn(out_features, in_features), requires_grad=False, quant_type="nf4")
    weight = weight._quantize("cpu")  # as transformers quantizes it on the way to the device
    assert weight.quant_state.blocksize == BLOCKSIZE_4BIT
    try:
        bnbf._convert_weight_packed_for_cpu(weight.data, weight.quant_state)
        repacked = True
    except (RuntimeError, AssertionError):
        repacked = False
    assert fits_cpu_4bit_kernel(in_features, out_features) == repacked


def test_every_layer_left_in_4bit_repacks_for_the_fused_kernel(encoder: str, tiny_classifier: str) -> None:
    """What sparkinfer leaves in 4 bits on CPU never crashes the packed path, on any CPU."""
    wide = load_model(ModelSpec(encoder, task="embedding", quantization="4bit"), "cpu")
    assert assert_every_4bit_layer_repacks(wide.model) == 2 * 6 + 1  # 6 Linear per BERT layer, plus the pooler
    narrow = load_model(ModelSpec(tiny_classifier, task="classification", quantization="4bit"), "cpu")
    assert assert_every_4bit_layer_repacks(narrow.model) == 0  # 32 and 37 wide: all kept in full precision


def test_a_quantized_model_is_loaded_in_place_never_moved(monkeypatch: pytest.MonkeyPatch, encoder: str) -> None:
    import transformers

    moves: list[tuple[Any, ...]] = []
    original = transformers.PreTrainedModel.to

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        moves.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(transformers.PreTrainedModel, "to", spy)
    for quantization in ("8bit", "4bit"):
        loaded = load_model(ModelSpec(encoder, task="embedding", quantization=quantization), "cpu")
        assert {str(p.device) for p in loaded.model.parameters()} == {"cpu"}
    assert moves == []
    load_model(ModelSpec(encoder, task="embedding"), "cpu")
    assert moves == [("cpu",)]  # the control: an unquantized model is moved once, after loading


def test_quantization_options_reach_the_loaded_layers(encoder: str) -> None:
    import torch

    quantization = QuantizationSpec(
        quant_type="fp4", double_quant=True, compute_dtype="bfloat16", skip_modules=("pooler",)
    )
    loaded = load_model(ModelSpec(encoder, task="embedding", quantization=quantization), "cpu")
    query = loaded.model.encoder.layer[0].attention.self.query
    assert type(query).__name__ == "Linear4bit"
    assert query.compute_dtype == torch.bfloat16
    assert (query.weight.quant_state.quant_type, query.weight.quant_state.nested) == ("fp4", True)
    assert type(loaded.model.pooler.dense) is torch.nn.Linear  # skipped: full precision


def test_4bit_linear_weights_take_under_half_their_float32_size(encoder: str) -> None:
    full = load_model(ModelSpec(encoder, task="embedding"), "cpu")
    four = load_model(ModelSpec(encoder, task="embedding", quantization="4bit"), "cpu")
    packed, fp32, kinds = linear_weight_bytes(four.model)
    assert kinds == {"Linear4bit"}
    assert linear_weight_bytes(full.model)[:2] == (fp32, fp32)
    assert packed < 0.5 * fp32, f"4-bit linear weights {packed} B vs float32 {fp32} B"
    assert four.memory_bytes < full.memory_bytes


# ---------------------------------------------------------------------------------------------- dtypes


def test_bfloat16_on_cpu_returns_float32_vectors(encoder: str, texts: list[str]) -> None:
    spec = ModelSpec(encoder, task="embedding", max_length=64, batch_tokens=512, dtype="bfloat16", device="cpu")
    out, _ = run(spec, pa.array(texts, pa.string()))
    loaded, _ = cache.get_model(spec)
    assert str(loaded.model.dtype) == "torch.bfloat16"
    assert out.type == pa.list_(pa.float32())
    # Same dtype, one row at a time: only bf16 rounding of a different summation order separates them.
    bf16_oracle = EmbeddingOracle(encoder, bits=None, dtype="bfloat16", normalize=False, max_length=64)
    bf16 = cosines(out.to_pylist(), texts, bf16_oracle)
    fp32 = cosines(out.to_pylist(), texts, EmbeddingOracle(encoder, bits=None, normalize=False, max_length=64))
    assert bf16.min() >= 0.999, bf16.min()
    assert fp32.min() >= 0.99, fp32.min()
    assert np.isfinite(np.concatenate([np.asarray(v) for v in out.to_pylist()])).all()
