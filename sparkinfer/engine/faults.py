"""Fault injection for tests of recovery paths that need a real executor: off unless asked for.

Recovery code (out-of-memory splits, Spark task retries) must be tested where it runs: inside Spark's
Python workers, which a test cannot monkeypatch. A test asks for faults through the environment of the
workers, e.g. ``spark.sparkContext.environment["SPARKINFER_FAULTS"] = "oom_above_rows=4"`` before
building the UDF (Spark starts workers with that environment), or the environment of a job's
subprocess. Without the variable the hook costs one dictionary lookup per micro-batch.

Faults (comma-separated ``name=value``):

* ``oom_above_rows=N``: a micro-batch of more than N rows raises ``torch.cuda.OutOfMemoryError``, as a
  GPU out of memory does (the error can be constructed without a GPU).
"""

from __future__ import annotations

import os

from sparkinfer.errors import SpecError

ENV = "SPARKINFER_FAULTS"
_KNOWN = ("oom_above_rows",)


def _parse(text: str) -> dict[str, int]:
    faults: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in _KNOWN or not value.isdigit():
            raise SpecError(
                f"{ENV} must hold name=int items with names from {_KNOWN} (got {text!r}); "
                f"e.g. {ENV}=oom_above_rows=4, or unset it"
            )
        faults[name] = int(value)
    return faults


def before_forward(rows: int) -> None:
    """Raise the fault the environment asks for, if any, before a micro-batch of `rows` rows runs."""
    text = os.environ.get(ENV)
    if not text:
        return
    limit = _parse(text).get("oom_above_rows")
    if limit is not None and rows > limit:
        import torch

        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected by {ENV}: more than {limit} rows)")
