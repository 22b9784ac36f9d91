"""QuantizationSpec → transformers' ``BitsAndBytesConfig``, and the layers bitsandbytes' CPU kernel cannot take.

bitsandbytes (0.47 and later) has two 4-bit paths on CPU. Where the CPU has AVX-512-BF16,
``Linear4bit.forward`` repacks each weight at its first forward for a fused bf16 kernel, in tiles of 32
output rows with one scale per 64 inputs of a row; elsewhere it dequantizes and multiplies. Repacking fails
(``RuntimeError: shape '[96, 0]' is invalid ...``) for a layer whose ``in_features`` is not a multiple of the
4-bit block size or whose ``out_features`` is not a multiple of 32, so such a model would load and then fail
every row on one kind of CPU and work on the other. Loading a 4-bit model for the CPU therefore keeps those
layers in full precision on every CPU: the model, its memory and its outputs then do not depend on which
CPU an executor happens to have (up to the bf16 rounding of the fused kernel), and layers this narrow save
next to nothing in 4 bits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkinfer.spec import QuantizationSpec

log = logging.getLogger("sparkinfer")

# bitsandbytes' 4-bit block size (Params4bit's default, which transformers keeps) and the output-row tile
# of its CPU repacking (`_convert_weight_packed_for_cpu(block_n=32)`); tests check both against the library.
BLOCKSIZE_4BIT = 64
CPU_PACK_ROWS = 32


@dataclass(frozen=True)
class NarrowLayer:
    """A layer the 4-bit CPU kernel cannot repack: its name and shape."""

    name: str
    in_features: int
    out_features: int


def bitsandbytes_config(quantization: QuantizationSpec, dtype: Any, keep: tuple[str, ...] = ()) -> Any:
    """The transformers ``BitsAndBytesConfig`` for a QuantizationSpec.

    Args:
        quantization: The settings.
        dtype: The model's torch dtype: the 4-bit compute dtype when ``compute_dtype="auto"``.
        keep: Module names to keep in full precision on top of ``quantization.skip_modules`` (or, when that
            is empty, on top of transformers' default, the output head): see `narrow_4bit_layers`.
    """
    import torch
    import transformers

    skip = [*quantization.skip_modules, *keep] or None  # None keeps transformers' default (the output head)
    if quantization.bits == 8:
        return transformers.BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_threshold=quantization.outlier_threshold, llm_int8_skip_modules=skip
        )
    compute = dtype if quantization.compute_dtype == "auto" else getattr(torch, quantization.compute_dtype)
    return transformers.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization.quant_type,
        bnb_4bit_use_double_quant=quantization.double_quant,
        bnb_4bit_compute_dtype=compute,
        llm_int8_skip_modules=skip,
    )


def fits_cpu_4bit_kernel(in_features: int, out_features: int) -> bool:
    """Whether bitsandbytes' AVX-512-BF16 kernel can repack a 4-bit weight of this shape."""
    return in_features % BLOCKSIZE_4BIT == 0 and out_features % CPU_PACK_ROWS == 0


def narrow_4bit_layers(model: Any) -> list[NarrowLayer]:
    """The layers of `model` that transformers quantizes to 4 bits and bitsandbytes' CPU kernel cannot repack.

    Layers are walked as transformers' ``replace_with_bnb_linear`` walks them: plain ``nn.Linear`` and
    GPT-2's ``Conv1D`` (whose weight is stored transposed).
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    narrow = []
    for name, module in model.named_modules():
        if isinstance(module, Conv1D):
            in_features, out_features = module.weight.shape
        elif type(module) is torch.nn.Linear:
            in_features, out_features = module.in_features, module.out_features
        else:
            continue
        if not fits_cpu_4bit_kernel(int(in_features), int(out_features)):
            narrow.append(NarrowLayer(name, int(in_features), int(out_features)))
    return narrow


def keep_narrow_layers(
    quantization: QuantizationSpec, model_class: Any, model_dir: Path, device: str, **config_kwargs: Any
) -> tuple[str, ...]:
    """The module names a 4-bit load on `device` keeps in full precision beyond the spec's own choice.

    Non-empty only for 4-bit on CPU. The model is built on the meta device from its config (no weights are
    read) to find its `narrow_4bit_layers`; one warning names how many and why.

    Args:
        quantization: The spec's quantization.
        model_class: The transformers auto class the model loads with.
        model_dir: The model directory.
        device: The torch device it loads onto.
        config_kwargs: Passed to ``AutoConfig.from_pretrained`` (revision, trust_remote_code).

    Returns:
        Names for ``BitsAndBytesConfig.llm_int8_skip_modules`` on top of the spec's ``skip_modules``. An
        explicit list replaces transformers' default one (the output head, tied weights), so when the spec
        names none, the default's names come first.
    """
    import torch
    import transformers

    if quantization.bits != 4 or not device.startswith("cpu"):
        return ()
    config = transformers.AutoConfig.from_pretrained(model_dir, **config_kwargs)
    with torch.device("meta"):
        skeleton = model_class.from_config(config, trust_remote_code=config_kwargs.get("trust_remote_code", False))
    skipped = list(quantization.skip_modules) or _default_skips(skeleton)
    narrow = [layer for layer in narrow_4bit_layers(skeleton) if not _named(layer.name, skipped)]
    if not narrow:
        return ()
    shown = ", ".join(f"{layer.name} ({layer.in_features}->{layer.out_features})" for layer in narrow[:3])
    log.warning(
        "sparkinfer: keeping %d layer(s) of %s in full precision under 4-bit on CPU: bitsandbytes' CPU 4-bit "
        "kernel needs in_features a multiple of %d and out_features a multiple of %d (got %s%s); layers this "
        "narrow gain little from 4 bits. Name them in QuantizationSpec.skip_modules to silence this warning",
        len(narrow), model_dir, BLOCKSIZE_4BIT, CPU_PACK_ROWS, shown, ", ..." if len(narrow) > 3 else "",
    )
    names = tuple(layer.name for layer in narrow)
    return names if quantization.skip_modules else (*skipped, *names)


def _named(name: str, patterns: list[str]) -> bool:
    """Whether a skip list names module `name` (itself, a parent, or as a dotted suffix), as transformers reads it."""
    return any(name == p or name.startswith(f"{p}.") or name.endswith(f".{p}") for p in patterns)


def _default_skips(model: Any) -> list[str]:
    """transformers' own default skip list for `model`, which an explicit list replaces."""
    try:
        from transformers.quantizers.base import get_keys_to_not_convert
    except ImportError:  # transformers 4.x
        from transformers.integrations import get_keys_to_not_convert
    return sorted(get_keys_to_not_convert(model))


