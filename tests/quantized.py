"""Oracles and measurements for quantized models, shared by the unit and Spark tiers.

The oracle is plain transformers + bitsandbytes, configured here independently of sparkinfer (so a wrong
translation of QuantizationSpec would show), run on ONE row at a time: no batching, no padding.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

FloatArray = npt.NDArray[np.float64]

# bitsandbytes' two 4-bit CPU paths (sparkinfer.engine.faults.set_cpu_4bit_path): tests run each on every
# machine where it can run; the packed one's fused kernel needs AVX-512-BF16.
CPU_4BIT_PATHS = ("packed", "reference")


def use_cpu_4bit_path(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """Make this process's next 4-bit loads take `path` (through SPARKINFER_FAULTS, as Spark workers do).

    Skips the test for ``"packed"`` on a CPU without AVX-512-BF16, where the fused kernel cannot run;
    ``test_every_layer_left_in_4bit_repacks_for_the_fused_kernel`` still checks the repacking there.
    """
    from sparkinfer.engine import faults

    if path == "packed" and not packed_4bit_kernel_here():
        pytest.skip("no AVX-512-BF16 here (or scripts/cpu_paths.sh emulates a CPU without AVX-512), so "
                    "bitsandbytes' fused 4-bit kernel does not run (the repacking it needs is checked on every CPU)")
    monkeypatch.setenv(faults.ENV, f"cpu_4bit_path={path}")


def packed_4bit_kernel_here() -> bool:
    """Whether bitsandbytes' fused 4-bit CPU kernel runs here: an AVX-512-BF16 CPU, not emulating AVX2."""
    import torch
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16()) and torch.backends.cpu.get_cpu_capability() == "AVX512"


def assert_every_4bit_layer_repacks(model: Any) -> int:
    """Repack a copy of every 4-bit weight of `model` as bitsandbytes' packed CPU path does; returns the count.

    The repacking is plain torch, so this runs on every CPU, including those that take the other path.
    """
    import copy

    from bitsandbytes.functional import _convert_weight_packed_for_cpu
    from bitsandbytes.nn import Linear4bit

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, Linear4bit)]
    for name, layer in layers:
        state = layer.weight.quant_state
        assert not getattr(state, "packing_format_for_cpu", False), f"{name} was repacked already"
        try:
            _convert_weight_packed_for_cpu(layer.weight.data.clone(), copy.deepcopy(state))
        except (RuntimeError, AssertionError) as exc:
            raise AssertionError(f"{name} ({layer.in_features}->{layer.out_features}) cannot be repacked: {exc}")
    return len(layers)


def bnb_config(bits: int | None) -> Any:
    """The BitsAndBytesConfig that sparkinfer's "8bit"/"4bit" presets stand for on CPU (float32 model)."""
    import torch
    import transformers

    if bits is None:
        return None
    if bits == 8:
        return transformers.BitsAndBytesConfig(load_in_8bit=True)
    return transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )


def build_encoder(path: Path, minilm_path: str, *, seed: int = 0) -> str:
    """A tiny random BERT whose layers are 64 wide (bitsandbytes quantizes blocks of 64), MiniLM tokenizer.

    Weights are drawn 5x wider than BERT's default (std 0.1, not 0.02) so that quantization shows: with the
    default, 8-bit and float32 outputs agree to cosine 0.99999 and FP4 and NF4 to 0.99995, and a test could
    not tell them apart. At std 0.1 (measured): 8-bit vs float32 0.99993, FP4 vs NF4 0.963.
    """
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path)
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
        initializer_range=0.1,
    )
    torch.manual_seed(seed)
    transformers.AutoModel.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


class EmbeddingOracle:
    """``AutoModel`` (+ bitsandbytes) on one row at a time: mean pooling, optionally L2-normalized."""

    def __init__(self, path: str, *, bits: int | None, dtype: str = "float32", normalize: bool, max_length: int,
                 cpu_4bit_path: str | None = None):
        import torch
        import transformers

        from sparkinfer.engine.faults import set_cpu_4bit_path

        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype)}
        if bits is not None:
            kwargs.update(quantization_config=bnb_config(bits), device_map={"": "cpu"})
        self.model = transformers.AutoModel.from_pretrained(path, **kwargs).eval()
        if cpu_4bit_path is not None:
            set_cpu_4bit_path(self.model, cpu_4bit_path)
        self.normalize = normalize
        self.max_length = max_length
        self._vectors: dict[str, FloatArray] = {}

    def __call__(self, text: str) -> FloatArray:
        if text not in self._vectors:
            import torch

            enc = self.tokenizer(text, truncation=True, max_length=self.max_length, return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state[0].double()
            vector = hidden.mean(dim=0).numpy()  # one row, no padding: every token counts
            self._vectors[text] = vector / np.linalg.norm(vector) if self.normalize else vector
        return self._vectors[text]


def cosines(rows: list[Any], texts: list[str], reference: Any) -> FloatArray:
    """Per-row cosine between engine/Spark vectors and ``reference(text)``."""
    assert len(rows) == len(texts)
    out = []
    for i, (row, text) in enumerate(zip(rows, texts)):
        assert row is not None, f"row {i}: non-null input {text[:40]!r} gave null"
        got, expected = np.asarray(row, dtype=np.float64), reference(text)
        assert got.shape == expected.shape, f"row {i}: shape {got.shape} != {expected.shape}"
        out.append(float(got @ expected / (np.linalg.norm(got) * np.linalg.norm(expected))))
    return np.asarray(out)


def linear_weight_bytes(model: Any) -> tuple[int, int, set[str]]:
    """(bytes of the Linear layers' weights as loaded, the same weights' float32 bytes, their class names).

    Quantized weights count at their packed size plus the scales bitsandbytes keeps beside them (8-bit row
    scales, 4-bit block absmax and, under double quantization, the absmax of those).
    """
    import torch

    loaded = fp32 = 0
    kinds: set[str] = set()
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        kinds.add(type(module).__name__)
        weight = module.weight
        fp32 += module.in_features * module.out_features * 4
        loaded += weight.numel() * weight.element_size()
        state = getattr(weight, "quant_state", None)
        for extra in (getattr(weight, "SCB", None), getattr(state, "absmax", None),
                      getattr(getattr(state, "state2", None), "absmax", None)):
            if extra is not None:
                loaded += extra.numel() * extra.element_size()
    return loaded, fp32, kinds


@contextmanager
def spark_cpu_4bit_path(spark: Any, monkeypatch: pytest.MonkeyPatch, path: str) -> Iterator[None]:
    """`use_cpu_4bit_path` for this process and for the Python workers of UDFs built inside the block.

    Spark starts the workers of a UDF with the environment of the SparkContext as it was when the UDF was
    built (and pools them by it), so workers of other tests never see the setting.
    """
    from sparkinfer.engine import faults

    use_cpu_4bit_path(monkeypatch, path)
    environment = spark.sparkContext.environment
    environment[faults.ENV] = f"cpu_4bit_path={path}"
    try:
        yield
    finally:
        del environment[faults.ENV]
