"""--engine ray: the same features as the local engine on real images, in a local and a 2-node Ray cluster."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from medcbm.backbones.features import extract_features
from medcbm.data.manifest import SkipLog
from medcbm.engines import EngineConfig, ray_session, use_engine
from medcbm.errors import ConfigError, MedcbmError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(ham_manifest, tmp_path_factory):
    """32 real images plus one broken file (row 33), which both engines must skip and record the same way."""
    from medcbm.data.manifest import Manifest

    sub = ham_manifest.subset(range(33))
    frame = sub.frame.copy()
    frame["image"] = [str(p) for p in sub.image_paths()]
    broken = tmp_path_factory.mktemp("bad") / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    frame.loc[32, "image"] = str(broken)
    return Manifest(frame, broken.parent)


@pytest.fixture(scope="module")
def local_features(images, tmp_path_factory):
    skips = SkipLog()
    return extract_features(images, cache_dir=tmp_path_factory.mktemp("local"), progress=False, skips=skips), skips


def _check_ray_run(images, local_features, cache, engine: EngineConfig) -> None:
    local, local_skips = local_features
    skips = SkipLog()
    first = extract_features(images, cache_dir=cache, progress=False, engine=engine, skips=skips)
    assert first.stats["engine"] == "RayRunner" and first.stats["extracted"] == 32
    np.testing.assert_allclose(first.X, local.X, rtol=0, atol=1e-6)
    assert first.keys == local.keys and first.ids == local.ids
    assert [(s.row, s.path, s.reason) for s in skips.items] == [(s.row, s.path, s.reason) for s in local_skips.items]
    again = extract_features(images, cache_dir=cache, progress=False, engine=engine, skips=SkipLog())
    assert again.stats["extracted"] == 0 and again.stats["from_cache"] == 32
    np.testing.assert_array_equal(again.X, first.X)


def test_local_ray_cluster_matches_the_local_engine(images, local_features, tmp_path):
    from medcbm.backbones.ray_runner import RayRunner

    engine = EngineConfig(engine="ray", workers=2, batch_size=8)
    with ray_session(engine):  # one cluster for every run, as a CLI command holds it
        _check_ray_run(images, local_features, tmp_path / "cache", engine)
        runner = RayRunner(engine)
        runner.driver_hash_max = 0  # large archives are hashed on the workers, not read by the driver
        paths = [str(p) for p in images.image_paths()] + [str(tmp_path / "gone.jpg")]
        from medcbm.backbones.cache import content_hash

        assert runner.hash_files(paths) == [content_hash(p) for p in paths[:-1]] + [None]


def test_two_node_cluster_matches_the_local_engine(images, local_features, tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        engine = EngineConfig(engine="ray", address=cluster.address, workers=2, batch_size=8)
        with ray_session(engine) as ray:
            assert len([n for n in ray.nodes() if n["Alive"]]) == 2
            _check_ray_run(images, local_features, tmp_path / "cache", engine)
    finally:
        cluster.shutdown()


def test_unreachable_cluster_fails_fast_with_one_line(images, tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"cannot reach the Ray cluster at --address 127.0.0.1:9.*ray start --head"):
        extract_features(images.subset(range(2)), cache_dir=None, progress=False,
                         engine=EngineConfig(engine="ray", address="127.0.0.1:9"))
    assert time.perf_counter() - t0 < 10
    with pytest.raises(ValueError, match="not auto, HOST:PORT"):
        EngineConfig(engine="ray", address="nowhere")


def test_missing_ray_names_the_extra(images, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra looks like
    with pytest.raises(MedcbmError, match=r"pip install 'medcbm\[ray\]'"):
        with use_engine(EngineConfig(engine="ray")):
            extract_features(images.subset(range(2)), progress=False)
