"""``medcbm bench scale``: 1 vs N Ray workers on real images, and a cost model calibrated from this machine.

The calibration is measured here, per core (one torch thread), on real HAM10000 JPEGs, real pydicom-data
DICOMs and the shipped knowledge corpus; :mod:`medcbm.benchmarks.cost_model` turns it into estimates for an
archive. Numbers from a 2-core VM are a floor for real servers, not a promise.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from medcbm._io import sha256_file
from medcbm.backbones import get_backbone_spec
from medcbm.benchmarks.cost_model import DEFAULT_WORKLOADS, Calibration, Cluster, estimate
from medcbm.data.manifest import Manifest
from medcbm.errors import MedcbmError

logger = logging.getLogger(__name__)

# VmHWM (peak RSS of this process image), not ru_maxrss: on Linux a child started by a large parent inherits the
# parent's ru_maxrss through fork and exec
_RSS = """
import re, sys, torch
torch.set_num_threads(1)
{body}
print(int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024)
"""
_ENCODER = """from medcbm.backbones import get_backbone_spec
from medcbm.backbones.inference import BatchEncoder
BatchEncoder(get_backbone_spec(sys.argv[1])).encode(torch.zeros(8, 3, 224, 224))"""
_EMBEDDER = """from medcbm.knowledge.embedders import get_embedder
get_embedder().encode(["a short clinical sentence"] * 64)"""


def _rss_mb(body: str, *args: str) -> float:
    """Peak RSS of a fresh process that loads a model and runs it once (what one worker costs)."""
    out = subprocess.run([sys.executable, "-c", _RSS.format(body=body), *args], capture_output=True, text=True,
                         timeout=600, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _per_item(fn, items: list) -> float:
    t0 = time.perf_counter()
    for it in items:
        fn(it)
    return (time.perf_counter() - t0) / max(1, len(items))


def _image_costs(paths: list[str], dicoms: list[str], spec) -> dict:
    import torch

    from medcbm.backbones.inference import BatchEncoder, decode_sample

    torch.set_num_threads(1)  # per-core costs
    enc = BatchEncoder(spec)
    size = sum(Path(p).stat().st_size for p in paths)
    t0 = time.perf_counter()
    for p in paths:
        sha256_file(p)
    hash_mb_s = size / 1e6 / (time.perf_counter() - t0)
    jpeg = _per_item(lambda p: decode_sample(enc.transform, p, None), paths)
    dicom_ok = [p for p in dicoms if decode_sample(enc.transform, p, None)[0] is not None]  # first pass also warms
    dicom = _per_item(lambda p: decode_sample(enc.transform, p, None), dicom_ok)
    dicoms = dicom_ok
    x = torch.stack([decode_sample(enc.transform, p, None)[0] for p in paths[:32]])
    enc.encode(x)  # warm
    t0 = time.perf_counter()
    enc.encode(x)
    model_s = (time.perf_counter() - t0) / len(x)
    return {"jpeg_mb": size / 1e6 / len(paths), "dicom_mb": float(np.mean([Path(p).stat().st_size for p in dicoms])) / 1e6,
            "hash_mb_s": hash_mb_s, "jpeg_decode_s": jpeg, "dicom_decode_s": dicom, "model_s": model_s,
            "feature_bytes": (spec.num_features or 1280) * 4 + 150}


def _text_costs(n: int = 512) -> dict:
    import chromadb
    import torch

    from medcbm.knowledge.embedders import get_embedder
    from medcbm.knowledge.resources import iter_openi

    torch.set_num_threads(1)
    texts = [d.text for d in iter_openi(limit=n)]  # real radiology reports, about one chunk each
    n = len(texts)
    emb = get_embedder()
    emb.encode(texts[:16])
    t0 = time.perf_counter()
    E = emb.encode(texts)
    embed_s = (time.perf_counter() - t0) / n
    with tempfile.TemporaryDirectory() as d:
        col = chromadb.PersistentClient(path=d).create_collection("bench_scale", embedding_function=None)
        t0 = time.perf_counter()
        for i in range(0, n, 128):
            col.add(ids=[f"c{j}" for j in range(i, min(n, i + 128))], embeddings=E[i:i + 128].tolist(),
                    documents=texts[i:i + 128], metadatas=[{"doc_id": f"d{j}"} for j in range(i, min(n, i + 128))])
        insert_s = (time.perf_counter() - t0) / n
        disk = sum(f.stat().st_size for f in Path(d).rglob("*") if f.is_file())
    return {"embed_s": embed_s, "insert_s": insert_s, "chunk_bytes": disk / n}


def ray_speedup(manifest: Manifest, *, workers: list[int], backbone: str = "efficientnet_lite0") -> dict:
    """Extract ``manifest`` from scratch with each worker count on one local Ray cluster; where the time goes."""
    from medcbm.backbones.features import extract_features
    from medcbm.engines import EngineConfig, ray_session

    runs = {}
    with ray_session(EngineConfig(engine="ray", workers=max(workers))):
        for w in workers:
            with tempfile.TemporaryDirectory() as cache:
                f = extract_features(manifest, backbone, cache_dir=cache, progress=False,
                                     engine=EngineConfig(engine="ray", workers=w))
            s = f.stats
            # after the first batch: the rate once workers are up (what a long archive run sees)
            steady_s = s["extract_seconds"] - s["first_result_seconds"]
            first_batch = min(len(f.X), EngineConfig().batch_size)
            runs[str(w)] = {"wall_s": s["seconds"], "hash_s": s["hash_seconds"], "extract_s": s["extract_seconds"],
                            "worker_start_s": s["first_result_seconds"], "worker_init_s": s["setup_seconds"],
                            "decode_cpu_s": s["decode_cpu_seconds"], "model_cpu_s": s["model_cpu_seconds"],
                            "img_s": round(len(f.X) / s["extract_seconds"], 2),
                            "steady_img_s": round((len(f.X) - first_batch) / steady_s, 2) if steady_s > 0 else None}
            logger.info("ray workers=%d: %s", w, runs[str(w)])
    base = runs[str(min(workers))]
    for r in runs.values():
        r["speedup"] = round(base["extract_s"] / r["extract_s"], 3)
        r["steady_speedup"] = round(r["steady_img_s"] / base["steady_img_s"], 3) if base["steady_img_s"] else None
    return runs


def real_dicoms(limit: int = 40) -> list[str]:
    """Real DICOM images from pydicom-data (CT, MR, CR, US...), for the DICOM decode cost."""
    try:
        from pydicom.data import get_testdata_files
    except ImportError:
        raise MedcbmError("bench scale times real DICOMs from pydicom-data: pip install pydicom-data") from None
    files = [f for f in get_testdata_files("*.dcm") if Path(f).stat().st_size > 20_000]
    return sorted(files)[:limit]


def bench_scale(manifest: Manifest, *, n_images: int = 512, workers: list[int] | None = None,
                cluster_workers: list[int] | None = None, storage_mb_s: float = 1000.0, store_servers: int = 1,
                backbone: str = "efficientnet_lite0", skip_ray: bool = False) -> dict:
    """Measure the Ray speed-up and the calibration, then estimate the default archive workloads."""
    spec = get_backbone_spec(backbone)
    sub = manifest.subset(range(min(n_images, len(manifest))))
    paths = [str(p) for p in sub.image_paths()]
    result: dict = {"n_images": len(paths), "backbone": spec.name}
    if not skip_ray:
        result["ray"] = ray_speedup(sub, workers=workers or [1, 2], backbone=backbone)
    costs = {**_image_costs(paths[:128], real_dicoms(), spec), **_text_costs()}
    ray_runs = result.get("ray", {})
    start = min((r["worker_start_s"] for r in ray_runs.values()), default=20.0)
    cal = Calibration(**costs, worker_start_s=start, worker_rss_mb=_rss_mb(_ENCODER, backbone),
                      embed_worker_rss_mb=_rss_mb(_EMBEDDER))
    result["calibration"] = json.loads(cal.model_dump_json())
    result["estimates"] = [estimate(cal, w, Cluster(workers=n, storage_mb_s=storage_mb_s, store_servers=store_servers))
                           .model_dump() for w in DEFAULT_WORKLOADS for n in (cluster_workers or [1, 16, 64])]
    result["assumptions"] = {"storage_mb_s": storage_mb_s, "store_servers": store_servers, "cpus_per_worker": 1.0}
    return result
