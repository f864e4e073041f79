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
