"""Lazy optional imports (MONAI's ``optional_import`` idea) so ``import medcbm`` stays light."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from medcbm.errors import MedcbmError


class _Missing:
    """Placeholder that raises a helpful error on first use."""

    def __init__(self, name: str, hint: str):
        self._name, self._hint = name, hint

    def __getattr__(self, item: str) -> Any:
        raise MedcbmError(f"optional dependency '{self._name}' is not installed. {self._hint}".strip())

    def __bool__(self) -> bool:
        return False


def optional_import(name: str, *, hint: str = "") -> tuple[ModuleType | Any, bool]:
    """Import ``name`` if available.

    Args:
        name: dotted module name.
        hint: what to install, shown when the module is used but missing.

    Returns:
        ``(module, True)`` or ``(placeholder, False)``; the placeholder raises on attribute access.
    """
    try:
        return importlib.import_module(name), True
    except ImportError:
        return _Missing(name, hint or f"Install it with: pip install {name.split('.')[0]}"), False
