"""Remembered content hashes: ``(path, size, mtime)`` -> SHA-256 of the file's bytes.

The feature cache is keyed by content, so a run must know every image's hash before it knows what is left to
extract; reading a whole archive for that is the slowest part of a rerun. This note lets a rerun skip reading
files whose path, size and modification time are unchanged (the heuristic rsync and make use).

Layout: ``<cache root>/content-hashes/note-<hash of its entries>.safetensors``, written atomically and never
modified, so concurrent writers are safe; entries are keyed by a hash of the path and stat (no file names are
stored). Many small notes are merged into one once there are more than ``MERGE_AT``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from medcbm._io import atomic_write_bytes, sha256_text

logger = logging.getLogger(__name__)

NOTE_DIR = "content-hashes"
MERGE_AT = 16


def stat_key(path: str) -> str | None:
    """Identity of a file version without reading it (``None``: it does not exist)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return sha256_text(os.path.abspath(path), str(st.st_size), str(st.st_mtime_ns))[:32]


class HashNote:
    """The content hashes recorded under a cache root."""

    def __init__(self, root: str | os.PathLike):
        self.dir = Path(root) / NOTE_DIR
        self._known: dict[str, str] = {}
        self._new: dict[str, str] = {}
        self._files = sorted(self.dir.glob("note-*.safetensors")) if self.dir.exists() else []
        for f in self._files:
            self._known.update(self._read(f))

    @staticmethod
    def _read(path: Path) -> dict[str, str]:
        from safetensors.numpy import load

        try:
            t = load(path.read_bytes())
            return dict(zip((k.tobytes().hex() for k in t["stat"]), (h.tobytes().hex() for h in t["sha256"])))
        except FileNotFoundError:  # merged away by a concurrent writer: its entries are in the merged note
            return {}
        except Exception as exc:  # a damaged note only costs re-reading those files
            logger.warning("ignoring unreadable content-hash note %s: %s", path.name, exc)
            return {}

    def __len__(self) -> int:
        return len(self._known)

    def get(self, key: str | None) -> str | None:
        return None if key is None else self._known.get(key)

    def add(self, key: str | None, content_hash: str) -> None:
        if key is not None and self._known.get(key) != content_hash:
            self._known[key] = self._new[key] = content_hash

    def save(self) -> None:
        """Write this run's new entries as one note; merge the notes when there are many."""
        if not self._new:
            return
        path = self._write(self._new)
        self._new = {}
        self._files.append(path)
        if len(self._files) > MERGE_AT:
            merged = self._write(self._known)
            for f in self._files:
                if f != merged:
                    f.unlink(missing_ok=True)
            self._files = [merged]

    def _write(self, entries: dict[str, str]) -> Path:
        from safetensors.numpy import save

        keys = sorted(entries)
        stat = np.frombuffer(bytes.fromhex("".join(keys)), np.uint8).reshape(len(keys), 16)
        sha = np.frombuffer(bytes.fromhex("".join(entries[k] for k in keys)), np.uint8).reshape(len(keys), 32)
        path = self.dir / f"note-{sha256_text(*keys, *(entries[k] for k in keys))[:24]}.safetensors"
        return atomic_write_bytes(path, save({"stat": stat.copy(), "sha256": sha.copy()}))
