"""Persistent feature cache keyed by backbone fingerprint and image content hash.

Layout: ``<root>/<backbone fingerprint>-v<pipeline version>/shard-<hash of its rows>.safetensors``; each shard holds
a ``features`` tensor and, in its safetensors metadata, the content hashes of its rows and a checksum of the
features (verified when the shard is read). Shards are written atomically and never modified, so an interrupted
extraction keeps every finished shard, a rerun resumes from there, and any number of writers (processes, hosts,
Ray workers) can add shards to one cache at once.

``index.safetensors`` is a compacted index (key -> shard, row) of the shards that existed when it was written:
opening a cache of a million rows is one read plus a directory listing, and only shards the index does not
know (written since) have their headers read. The index is a hint, never the truth: a shard it names that is
gone is dropped, and caches from before the index existed are scanned as before and compacted at the next write.
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
INDEX_FILE = "index.safetensors"


def content_hash(path: str | os.PathLike) -> str:
    """Identity of an image for caching: SHA-256 of its bytes (renames and copies still hit)."""
    return sha256_file(path)


class FeatureCache:
    """Read/append features for one backbone (+ preprocessing)."""

    def __init__(self, root: str | os.PathLike, spec: BackboneSpec, *, scan: bool = True):
        """Open (and create) the cache; ``scan=False`` opens it for writing only (a worker that never reads)."""
        self.dir = Path(root) / f"{spec.fingerprint()}-v{PIPELINE_VERSION}"
        self.dir.mkdir(parents=True, exist_ok=True)
        spec_file = self.dir / "backbone.json"
        if not spec_file.exists():
            atomic_write_json(spec_file, spec.model_dump(mode="json"))
        self._index: dict[str, tuple[Path, int]] = {}
        self._arrays: dict[Path, np.ndarray] = {}
        self._dim: int | None = None
        self.unindexed_shards = 0  # shards found by listing, not in the compacted index (compact() folds them in)
        if scan:
            self._scan()

    @property
    def index_path(self) -> Path:
        return self.dir / INDEX_FILE

    def _read_index(self, present: set[str]) -> set[str]:
        """Load the compacted index; returns the shard names it covered (those still present)."""
        from safetensors import safe_open

        if not self.index_path.exists():
            return set()
        try:
            with safe_open(str(self.index_path), framework="numpy") as fh:
                meta = fh.metadata()
                keys = fh.get_tensor("keys").tobytes().decode("utf-8").split("\n")
                shard_id, row = fh.get_tensor("shard"), fh.get_tensor("row")
            names, dim = json.loads(meta["shards"]), int(meta["dim"])
            if not (len(keys) == len(shard_id) == len(row)):
                raise ValueError("keys, shards and rows differ in length")
        except Exception as exc:  # a damaged index only costs a full scan
            logger.warning("ignoring unreadable feature cache index %s (%s); scanning the shards", self.index_path, exc)
            return set()
        self._dim = dim
        paths = [self.dir / n for n in names]
        alive = np.array([n in present for n in names], dtype=bool)
        for k, s, r in zip(keys, shard_id.tolist(), row.tolist()):
            if alive[s]:
                self._index[k] = (paths[s], r)
        return {n for n in names if n in present}

    def _scan(self) -> None:
        present = {p.name for p in self.dir.glob("shard-*.safetensors")}
        covered = self._read_index(present)
        self.adopt(sorted(present - covered))

    def _index_shard(self, shard: Path) -> bool:
        """Index one shard from its header only (opening a large cache must not read every feature)."""
        from safetensors import safe_open

        try:
            with safe_open(str(shard), framework="numpy") as fh:
                hashes = json.loads(fh.metadata()["hashes"])
                shape = fh.get_slice("features").get_shape()
            if len(shape) != 2 or shape[0] != len(hashes) or (self._dim is not None and shape[1] != self._dim):
                raise ValueError(f"features of shape {shape} for {len(hashes)} rows")
        except Exception as exc:  # a foreign or damaged file must not poison the cache
            logger.warning("ignoring unreadable cache shard %s: %s", shard.name, exc)
            return False
        self._dim = shape[1]
        for row, h in enumerate(hashes):
            self._index[h] = (shard, row)
        return True

    def adopt(self, shard_names: list[str]) -> None:
        """Index shards another process (e.g. a Ray worker) wrote into this cache since it was opened."""
        for name in shard_names:
            if self._index_shard(self.dir / name):
                self.unindexed_shards += 1

    def _load(self, shard: Path) -> np.ndarray:
        """A shard's features, verified against the checksum written with them and required finite."""
        from safetensors import safe_open

        with safe_open(str(shard), framework="numpy") as fh:
            meta, X = fh.metadata(), fh.get_tensor("features")
        if X.ndim != 2 or len(X) != len(json.loads(meta.get("hashes", "[]"))) or (self._dim and X.shape[1] != self._dim):
            raise DataError(f"feature cache shard {shard} does not match its header or the cache's feature size; "
                            "delete it and rerun to re-extract those images")
        expected = meta.get("sha256")  # shards written before checksums existed have none
        if expected and hashlib.sha256(np.ascontiguousarray(X, dtype=np.float32).tobytes()).hexdigest() != expected:
            raise DataError(f"feature cache shard {shard} fails its checksum (bit rot or an edit); delete it and "
                            "rerun to re-extract those images")
        if not np.isfinite(X).all():
            raise DataError(f"feature cache shard {shard} holds non-finite values; delete it and rerun to "
                            "re-extract those images")
        return X

    def compact(self) -> Path | None:
        """Write the compacted index of every shard known now (atomic; a concurrent writer's index may win,
        which is harmless: shards it lacks are found by listing)."""
        from safetensors.numpy import save

        if not self._index:
            return None
        names = sorted({shard.name for shard, _ in self._index.values()})
        ids = {n: i for i, n in enumerate(names)}
        keys = list(self._index)
        blob = np.frombuffer("\n".join(keys).encode("utf-8"), dtype=np.uint8)
        tensors = {"keys": blob.copy(), "shard": np.array([ids[self._index[k][0].name] for k in keys], np.int32),
                   "row": np.array([self._index[k][1] for k in keys], np.int32)}
        atomic_write_bytes(self.index_path, save(tensors, metadata={"shards": json.dumps(names), "dim": str(self._dim)}))
        self.unindexed_shards = 0
        return self.index_path

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
        if X.ndim != 2 or len(X) != len(hashes) or not np.isfinite(X).all() or any("\n" in h for h in hashes):
            raise ValueError(f"refusing to cache features of shape {X.shape} for {len(hashes)} images "
                             "(or with non-finite values, or keys with newlines)")
        shard = self.dir / f"shard-{sha256_text(*hashes)[:24]}.safetensors"
        meta = {"hashes": json.dumps(hashes), "sha256": hashlib.sha256(X.tobytes()).hexdigest()}
        atomic_write_bytes(shard, save({"features": X}, metadata=meta))
        for row, h in enumerate(hashes):
            self._index[h] = (shard, row)
        self._dim = X.shape[1]
        self._arrays.pop(shard, None)
        self.unindexed_shards += 1
        return shard
