"""Text-to-text generation with encoder-decoder models (T5, BART, ...): the generation head, not causal.

Everything but the model class lives in `generation.py`; this module gives the task its own registry entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sparkinfer.engine.tasks import generation

if TYPE_CHECKING:
    from sparkinfer.spec import ModelSpec

auto_class = "AutoModelForSeq2SeqLM"


def arrow_type(spec: ModelSpec) -> pa.DataType:
    """The same column as task "generation": string, or the details struct."""
    return generation.arrow_type(spec)


def build_head(spec: ModelSpec, model: Any, tokenizer: Any, model_dir: Path) -> generation.GenerationHead:
    """The generation head in encoder-decoder mode (right padding, the decoder's tokens returned)."""
    return generation.build_head(spec, model, tokenizer, model_dir)
