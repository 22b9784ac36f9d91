"""One helper for every optional dependency."""

from __future__ import annotations

import importlib
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
        raise MissingDependencyError(
            f"{purpose} needs {module}, which is not installed; "
            f"install it with: pip install 'sparkinfer[{extra}]'"
        ) from exc
