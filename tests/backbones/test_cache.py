"""The feature cache: content-named shards, verified before they are served."""

from __future__ import annotations

import numpy as np
import pytest

from medcbm.backbones import get_backbone_spec
from medcbm.backbones.cache import FeatureCache
from medcbm.errors import DataError


def _cache(tmp_path):
    return FeatureCache(tmp_path, get_backbone_spec("efficientnet_lite0"))


def test_two_writers_with_the_same_pid_never_overwrite_each_other(tmp_path):
    rng = np.random.default_rng(0)
    a, b = _cache(tmp_path), _cache(tmp_path)  # e.g. two hosts whose processes share a pid
    Xa, Xb = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(2, 5)).astype(np.float32)
    sa, sb = a.put(["h1", "h2", "h3"], Xa), b.put(["h3", "h4"], Xb)
    assert sa != sb and a.put(["h1", "h2", "h3"], Xa) == sa  # a retried write lands on the same file
    fresh = _cache(tmp_path)
    assert len(fresh) == 4
    np.testing.assert_array_equal(fresh.get_many(["h1", "h2"]), Xa[:2])
    np.testing.assert_array_equal(fresh.get_many(["h4"]), Xb[1:])


def test_damaged_shards_are_refused_or_skipped_never_served(tmp_path):
    from safetensors.numpy import save

    c = _cache(tmp_path)
    X = np.arange(10, dtype=np.float32).reshape(2, 5)
    shard = c.put(["x", "y"], X)
    raw = bytearray(shard.read_bytes())
    raw[-4] ^= 0x01  # one flipped bit in the last feature value
    shard.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="fails its checksum.*delete it and rerun"):
        _cache(tmp_path).get_many(["x"])
    # a shard whose header disagrees with its rows is ignored at open, so those images are extracted again
    shard.write_bytes(save({"features": X}, metadata={"hashes": '["x", "y", "z"]'}))
    assert "x" not in _cache(tmp_path)
    with pytest.raises(ValueError, match="non-finite"):
        c.put(["n"], np.array([[np.nan] * 5], np.float32))


def test_compacted_index_is_one_read_and_never_the_only_truth(tmp_path):
    rng = np.random.default_rng(1)
    c = _cache(tmp_path)
    X1, X2 = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(2, 4)).astype(np.float32)
    s1, s2 = c.put(["a", "b", "c"], X1), c.put(["d", "e"], X2)
    assert c.compact() == c.index_path
    fresh = _cache(tmp_path)
    assert len(fresh) == 5 and fresh.unindexed_shards == 0  # no shard header was read
    np.testing.assert_array_equal(fresh.get_many(["e", "a"]), np.stack([X2[1], X1[0]]))
    # a shard written after the index (another writer) is found by listing; a deleted one is dropped
    X3 = rng.normal(size=(1, 4)).astype(np.float32)
    _cache(tmp_path).put(["f"], X3)
    s2.unlink()
    later = _cache(tmp_path)
    assert later.unindexed_shards == 1 and "f" in later and "d" not in later and len(later) == 4
    # a damaged index costs a scan, not wrong rows
    c.index_path.write_bytes(b"garbage")
    scanned = _cache(tmp_path)
    assert len(scanned) == 4 and scanned.unindexed_shards == 2
    np.testing.assert_array_equal(scanned.get_many(["f", "b"]), np.stack([X3[0], X1[1]]))


def test_rerun_reuses_remembered_hashes_without_reading_files(tmp_path, ham_manifest, monkeypatch):
    import os

    from medcbm.backbones import runners
    from medcbm.backbones.features import extract_features

    small = ham_manifest.subset(range(4))
    first = extract_features(small, cache_dir=tmp_path, progress=False)
    reads = []
    from medcbm._io import sha256_file_or_none

    monkeypatch.setattr(runners, "sha256_file_or_none", lambda p: reads.append(p) or sha256_file_or_none(p))
    again = extract_features(small, cache_dir=tmp_path, progress=False)
    assert reads == [] and again.stats["extracted"] == 0 and again.keys == first.keys
    # a copy with a new mtime is hashed again (by content it is still a cache hit)
    import shutil

    copy = tmp_path / "copy.jpg"
    shutil.copy(small.image_path(0), copy)
    os.utime(copy, ns=(1, 1))
    frame = small.frame.iloc[:1].copy()
    frame["image"] = [str(copy)]
    from medcbm.data.manifest import Manifest

    hit = extract_features(Manifest(frame, tmp_path), cache_dir=tmp_path, progress=False)
    assert reads == [str(copy)] and hit.stats["extracted"] == 0 and hit.keys == first.keys[:1]


_WRITER = """
import sys
from medcbm.backbones.features import extract_features
from medcbm.data.manifest import load_manifest
extract_features(load_manifest(sys.argv[1]), cache_dir=sys.argv[2], batch_size=2, shard_size=2, num_workers=0,
                 optimize=False, progress=False)
"""


def test_two_concurrent_writers_lose_and_corrupt_nothing(tmp_path, ham_manifest):
    """Two processes fill one cache with overlapping images at once; the result equals a single writer's."""
    import subprocess
    import sys

    from medcbm.backbones.features import extract_features
    from medcbm.data.manifest import save_manifest

    sub = ham_manifest.subset(range(12))
    frame = sub.frame.copy()
    frame["image"] = [str(p) for p in sub.image_paths()]
    from medcbm.data.manifest import Manifest

    full = Manifest(frame, tmp_path)
    for name, rows in (("a", range(0, 8)), ("b", range(4, 12))):
        save_manifest(full.subset(list(rows)), tmp_path / f"{name}.csv")
    shared = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / f"{n}.csv"), str(shared)],
                              stderr=subprocess.PIPE, text=True) for n in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    single = extract_features(full, cache_dir=tmp_path / "single", num_workers=0, optimize=False, progress=False)
    from medcbm.backbones.cache import FeatureCache

    merged = FeatureCache(shared, single.spec)
    assert all(k in merged for k in single.keys) and len(merged) == 12
    np.testing.assert_allclose(merged.get_many(single.keys), single.X, rtol=0, atol=1e-5)
    assert extract_features(full, cache_dir=shared, progress=False, optimize=False).stats["extracted"] == 0


def test_a_stop_mid_run_keeps_every_finished_batch(tmp_path, ham_manifest):
    """A refused file (or Ctrl-C) after two batches: those batches are already in the cache."""
    from medcbm.backbones.features import extract_features
    from medcbm.data.manifest import Manifest

    sub = ham_manifest.subset(range(12))
    frame = sub.frame.copy()
    frame["image"] = [str(p) for p in sub.image_paths()]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 broken")
    frame.loc[9, "image"] = str(bad)
    with pytest.raises(DataError, match="broken.jpg, manifest row 10"):
        extract_features(Manifest(frame, tmp_path), cache_dir=tmp_path / "c", batch_size=4, shard_size=512,
                         num_workers=0, progress=False)
    kept = FeatureCache(tmp_path / "c", get_backbone_spec("efficientnet_lite0"))
    assert len(kept) == 8 and kept.unindexed_shards == 0  # two full batches, flushed and indexed
