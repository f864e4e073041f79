"""Persistent feature cache keyed by backbone fingerprint and image content hash.

Layout: ``<root>/<backbone fingerprint>-v<pipeline version>/shard-<n>.safetensors``; each shard holds a ``features``
tensor and, in its safetensors metadata, the content hashes of its rows. Shards are written
atomically, so an interrupted extraction keeps every finished shard and a rerun resumes from there.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from medcbm._io import atomic_write_bytes, atomic_write_json, sha256_file
from medcbm.backbones._registry import BackboneSpec

logger = logging.getLogger(__name__)

# Bump when image loading or preprocessing code changes what a given file decodes to: the backbone
# fingerprint captures settings, not code, and a stale cache silently mixes old and new features.
PIPELINE_VERSION = 2


def content_hash(path: str | os.PathLike) -> str:
    """Identity of an image for caching: SHA-256 of its bytes (renames and copies still hit)."""
    return sha256_file(path)


class FeatureCache:
    """Read/append features for one backbone (+ preprocessing)."""

    def __init__(self, root: str | os.PathLike, spec: BackboneSpec):
        self.dir = Path(root) / f"{spec.fingerprint()}-v{PIPELINE_VERSION}"
        self.dir.mkdir(parents=True, exist_ok=True)
        spec_file = self.dir / "backbone.json"
        if not spec_file.exists():
            atomic_write_json(spec_file, spec.model_dump(mode="json"))
        self._index: dict[str, tuple[Path, int]] = {}
        self._arrays: dict[Path, np.ndarray] = {}
        self._scan()

    def _scan(self) -> None:
        from safetensors import safe_open

        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            try:
                with safe_open(str(shard), framework="numpy") as fh:
                    hashes = json.loads(fh.metadata()["hashes"])
            except Exception as exc:  # a foreign or damaged file must not poison the cache
                logger.warning("ignoring unreadable cache shard %s: %s", shard, exc)
                continue
            for row, h in enumerate(hashes):
                self._index[h] = (shard, row)

    def __contains__(self, h: str) -> bool:
        return h in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get_many(self, hashes: list[str]) -> np.ndarray:
        """Stack cached features for ``hashes`` (all must be present)."""
        from safetensors.numpy import load_file

        rows = []
        for h in hashes:
            shard, row = self._index[h]
            if shard not in self._arrays:
                self._arrays[shard] = load_file(str(shard))["features"]
            rows.append(self._arrays[shard][row])
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)

    def put(self, hashes: list[str], features: np.ndarray) -> Path:
        """Append a shard atomically."""
        from safetensors.numpy import save

        n = len(list(self.dir.glob("shard-*.safetensors")))
        shard = self.dir / f"shard-{n:06d}-{os.getpid()}.safetensors"
        data = save({"features": np.ascontiguousarray(features, dtype=np.float32)}, metadata={"hashes": json.dumps(hashes)})
        atomic_write_bytes(shard, data)
        for row, h in enumerate(hashes):
            self._index[h] = (shard, row)
        return shard
