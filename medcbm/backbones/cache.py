"""Persistent feature cache keyed by backbone fingerprint and image content hash.

Layout: ``<root>/<backbone fingerprint>-v<pipeline version>/shard-<hash of its rows>.safetensors``; each shard holds
a ``features`` tensor and, in its safetensors metadata, the content hashes of its rows and a checksum of the
features (verified when the shard is read). Shards are written
atomically, so an interrupted extraction keeps every finished shard and a rerun resumes from there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from medcbm._io import atomic_write_bytes, atomic_write_json, sha256_file, sha256_text
from medcbm.backbones._registry import BackboneSpec
from medcbm.errors import DataError

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
        self._dim: int | None = None
        self._scan()

    def _scan(self) -> None:
        from safetensors import safe_open

        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            try:  # headers only: opening a large cache must not read every feature
                with safe_open(str(shard), framework="numpy") as fh:
                    hashes = json.loads(fh.metadata()["hashes"])
                    shape = fh.get_slice("features").get_shape()
                if len(shape) != 2 or shape[0] != len(hashes) or (self._dim is not None and shape[1] != self._dim):
                    raise ValueError(f"features of shape {shape} for {len(hashes)} rows")
                self._dim = shape[1]
            except Exception as exc:  # a foreign or damaged file must not poison the cache
                logger.warning("ignoring unreadable cache shard %s: %s", shard.name, exc)
                continue
            for row, h in enumerate(hashes):
                self._index[h] = (shard, row)

    def _load(self, shard: Path) -> np.ndarray:
        """A shard's features, verified against the checksum written with them and required finite."""
        from safetensors import safe_open

        with safe_open(str(shard), framework="numpy") as fh:
            meta, X = fh.metadata(), fh.get_tensor("features")
        expected = meta.get("sha256")  # shards written before checksums existed have none
        if expected and hashlib.sha256(np.ascontiguousarray(X, dtype=np.float32).tobytes()).hexdigest() != expected:
            raise DataError(f"feature cache shard {shard} fails its checksum (bit rot or an edit); delete it and "
                            "rerun to re-extract those images")
        if not np.isfinite(X).all():
            raise DataError(f"feature cache shard {shard} holds non-finite values; delete it and rerun to "
                            "re-extract those images")
        return X

    def __contains__(self, h: str) -> bool:
        return h in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get_many(self, hashes: list[str]) -> np.ndarray:
        """Stack cached features for ``hashes`` (all must be present)."""
        rows = []
        for h in hashes:
            shard, row = self._index[h]
            if shard not in self._arrays:
                self._arrays[shard] = self._load(shard)
            rows.append(self._arrays[shard][row])
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)

    def put(self, hashes: list[str], features: np.ndarray) -> Path:
        """Write a shard atomically, named by the rows it holds: two writers (other hosts, same pid) never
        overwrite each other's rows, and a retried or duplicated write is harmless."""
        from safetensors.numpy import save

        X = np.ascontiguousarray(features, dtype=np.float32)
        if X.ndim != 2 or len(X) != len(hashes) or not np.isfinite(X).all():
            raise ValueError(f"refusing to cache features of shape {X.shape} for {len(hashes)} images "
                             "(or with non-finite values)")
        shard = self.dir / f"shard-{sha256_text(*hashes)[:24]}.safetensors"
        meta = {"hashes": json.dumps(hashes), "sha256": hashlib.sha256(X.tobytes()).hexdigest()}
        atomic_write_bytes(shard, save({"features": X}, metadata=meta))
        for row, h in enumerate(hashes):
            self._index[h] = (shard, row)
        self._arrays.pop(shard, None)
        return shard
