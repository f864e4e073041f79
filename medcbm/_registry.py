"""One registry implementation for every ``name -> thing`` table in medcbm (timm style).

Backbones, benchmark methods, concept backends, embedders, dataset importers and concept grounders are
each a :class:`Registry`. Entries carry metadata (e.g. the datasets a method applies to) that
``names(**filters)`` matches; unknown names raise :class:`~medcbm.errors.RegistryError` listing the
available ones. Dynamic names (``timm:<arch>@<file>``) are handled by prefix parsers.
"""

from __future__ import annotations

import fnmatch
import importlib
from typing import Any, Callable, Generic, TypeVar

from medcbm.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of objects with metadata, filters and lazily imported plugin modules.

    Args:
        kind: what the entries are, for error messages ("backbone", "method", ...).
        plugins: modules imported on first lookup; they register their entries on import.
    """

    def __init__(self, kind: str, *, plugins: tuple[str, ...] = ()):
        self.kind = kind
        self._plugins = plugins
        self._loaded = not plugins
        self._entries: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._prefixes: dict[str, Callable[[str], T]] = {}

    # ------------------------------------------------------------------ registration
    def add(self, name: str, obj: T, **meta: Any) -> T:
        """Register ``obj`` under ``name`` (re-registering a name replaces it, as a reload would)."""
        self._entries[name] = obj
        self._meta[name] = meta
        return obj

    def register(self, name: str | None = None, **meta: Any) -> Callable[[T], T]:
        """Decorator form of :meth:`add`; the name defaults to the object's ``__name__``."""

        def deco(obj: T) -> T:
            return self.add(name or obj.__name__, obj, **meta)

        return deco

    def register_prefix(self, prefix: str) -> Callable[[Callable[[str], T]], Callable[[str], T]]:
        """Decorator: ``fn(rest)`` resolves dynamic names ``<prefix>:<rest>``."""

        def deco(fn: Callable[[str], T]) -> Callable[[str], T]:
            self._prefixes[prefix] = fn
            return fn

        return deco

    def remove(self, name: str) -> None:
        """Unregister ``name`` (e.g. a method a test registered for itself)."""
        self._entries.pop(name, None)
        self._meta.pop(name, None)

    # ------------------------------------------------------------------ lookup
    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in self._plugins:
            importlib.import_module(mod)

    def names(self, pattern: str | None = None, **filters: Any) -> list[str]:
        """Registered names matching a glob ``pattern`` and metadata ``filters``.

        A filter ``key=value`` keeps entries whose metadata ``key`` is ``None`` (applies to anything),
        equals ``value``, or is a collection containing it. Filters with value ``None`` are ignored.
        """
        self._load()
        out = []
        for name in sorted(self._entries):
            if pattern and not fnmatch.fnmatch(name, pattern):
                continue
            if all(_matches(self._meta[name].get(k), v) for k, v in filters.items() if v is not None):
                out.append(name)
        return out

    def prefixes(self) -> list[str]:
        """Dynamic-name prefixes, shown as ``prefix:...``."""
        self._load()
        return [f"{p}:..." for p in sorted(self._prefixes)]

    def get(self, name: str) -> T:
        """The entry called ``name`` (or the prefix parser's result for a dynamic name).

        Raises:
            RegistryError: unknown name; the message lists the available ones.
        """
        self._load()
        if name in self._entries:
            return self._entries[name]
        prefix, sep, rest = name.partition(":")
        if sep and prefix in self._prefixes:
            return self._prefixes[prefix](rest)
        available = ", ".join(self.names() + self.prefixes()) or "none"
        raise RegistryError(f"unknown {self.kind} '{name}'. Available: {available}")

    def meta(self, name: str) -> dict[str, Any]:
        """Metadata registered with ``name``."""
        self.get(name)
        return dict(self._meta.get(name, {}))

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries


def _matches(have: Any, want: Any) -> bool:
    if have is None:
        return True
    if isinstance(have, (list, tuple, set, frozenset)):
        return want in have
    return have == want
