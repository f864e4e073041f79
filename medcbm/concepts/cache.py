"""On-disk cache of backend responses keyed by prompt hash (one JSON file per response, atomic writes)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from medcbm._io import atomic_write_json

logger = logging.getLogger(__name__)


class ResponseCache:
    """``get``/``put`` JSON-serialisable responses under ``root/<hash[:2]>/<hash>.json``.

    A corrupt entry (e.g. from a disk-full write elsewhere) is logged and treated as a miss.
    ``root=None`` disables caching.
    """

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root) if root else None
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        """The cached response for ``key`` or ``None``."""
        if self.root is None:
            return None
        p = self._path(key)
        if not p.is_file():
            self.misses += 1
            return None
        try:
            value = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            logger.warning("ignoring unreadable cache entry %s (%s)", p, err)
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` for ``key`` (no-op when caching is disabled)."""
        if self.root is not None:
            atomic_write_json(self._path(key), value)
