"""Optional dependencies: `require` imports one on an executor, `check_installed` looks one up on the driver."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from sparkinfer.errors import MissingDependencyError


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import `module` or raise an error that names the pip extra installing it.

    Args:
        module: The importable module name, e.g. ``"bitsandbytes"``.
        extra: The sparkinfer extra that pulls it in, e.g. ``"quant"``.
        purpose: What needs it, for the message, e.g. ``"quantization='4bit'"``.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: If the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise _missing(module, extra, purpose) from exc


def check_installed(*modules: str, extra: str, purpose: str) -> None:
    """Check that `modules` are installed, without importing them (for the driver).

    Importing bitsandbytes imports torch, which the driver should not pay for; ``find_spec`` only looks
    the module up on ``sys.path``.

    Args:
        modules: Top-level module names, e.g. ``"bitsandbytes", "accelerate"``.
        extra: The sparkinfer extra that pulls them in.
        purpose: What needs them, for the message.

    Raises:
        MissingDependencyError: Naming the first module that is missing.
    """
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise _missing(module, extra, purpose)


def _missing(module: str, extra: str, purpose: str) -> MissingDependencyError:
    return MissingDependencyError(
        f"{purpose} needs {module}, which is not installed; install it with: pip install 'sparkinfer[{extra}]'"
    )
