"""Exceptions raised by sparkinfer.

The hierarchy is short on purpose::

    SparkInferError
    ├── SpecError(ValueError)                  a ModelSpec or column-builder argument is invalid (driver side)
    ├── ModelLoadError                         a model or tokenizer could not be loaded (executor side)
    ├── MissingDependencyError(ImportError)    an optional dependency is not installed
    ├── InferenceError                         a micro-batch failed during inference
    │   └── HostError                          the executor's model host could not start or died
    └── TableError                             a table cannot be read or written as asked (driver side)

Every message says what was expected, what was received, and how to fix it.
"""

from __future__ import annotations


class SparkInferError(Exception):
    """Base class of every error sparkinfer raises on purpose."""


class SpecError(SparkInferError, ValueError):
    """An invalid specification: raised on the driver, when the Column is built."""


class ModelLoadError(SparkInferError):
    """The model or tokenizer named by a spec could not be loaded."""


class MissingDependencyError(SparkInferError, ImportError):
    """An optional dependency is missing; the message names the pip extra that installs it."""


class InferenceError(SparkInferError):
    """A micro-batch failed in the model's forward pass or post-processing."""


class TableError(SparkInferError):
    """A table cannot be read or written as asked: missing, mode conflict, schema mismatch, Delta feature."""


class HostError(InferenceError):
    """The executor's model host (``ModelSpec.host="executor"``) could not start, or died mid-request.

    The message names the host's log file. Spark retries the task, which elects a new host.
    """
