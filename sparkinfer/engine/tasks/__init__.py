"""Task registry: one line per task module."""

from __future__ import annotations

from types import ModuleType
from typing import cast

from sparkinfer.engine.tasks import classification, embedding
from sparkinfer.engine.tasks import token_classification
from sparkinfer.engine.tasks import extraction, generation, text2text
from sparkinfer.engine.tasks.base import Head, Inputs, Task

_TASKS: dict[str, ModuleType] = {
    "embedding": embedding,
    "classification": classification,
    "token-classification": token_classification,
    "generation": generation,
    "text2text": text2text,
    "extraction": extraction,
}


def get_task(name: str) -> Task:
    """The task module registered under `name` (names are validated by ModelSpec)."""
    return cast(Task, _TASKS[name])


__all__ = ["Head", "Inputs", "Task", "get_task"]
