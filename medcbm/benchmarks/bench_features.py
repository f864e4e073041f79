"""``medcbm bench features``: feature-extraction throughput (forward-only, naive, end-to-end) and memory."""

from __future__ import annotations

import logging
import resource
import time

import numpy as np
import torch

from medcbm.backbones import create_backbone, get_backbone_spec
from medcbm.backbones.features import extract_features, optimize_for_inference
from medcbm.data.manifest import Manifest
from medcbm.data.transforms import apply_preprocess, preprocess_transforms

logger = logging.getLogger(__name__)


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024.0, 1)  # Linux reports KiB


def _rate(fn, n_images: int, repeats: int = 3) -> float:
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = max(best, n_images / (time.perf_counter() - t0))
    return best


def bench_features(manifest: Manifest, backbone: str = "efficientnet_lite0", *, n_images: int = 512,
                   batch_size: int = 32) -> dict:
    """Measure the three throughputs on the first ``n_images`` of ``manifest``.

    - ``forward_only_img_s``: best of eager channels-last and traced+frozen on preloaded tensors.
    - ``naive_img_s``: eager fp32 contiguous, decoding in the main process.
    - ``end_to_end_img_s``: :func:`extract_features` from files on disk (no cache).
    """
    spec = get_backbone_spec(backbone)
    sub = manifest.subset(range(min(n_images, len(manifest))))
    n = len(sub)
    paths = [str(p) for p in sub.image_paths()]
    model = create_backbone(spec).eval()
    tf = preprocess_transforms(spec.preprocess)
    threads = torch.get_num_threads()

    # naive: decode in the main process, eager fp32, contiguous NCHW
    def naive():
        with torch.inference_mode():
            for i in range(0, n, batch_size):
                x = torch.stack([apply_preprocess(tf, p) for p in paths[i : i + batch_size]])
                model(x.contiguous())

    naive_rate = _rate(naive, n, repeats=1)
    torch.set_num_threads(threads)  # decoding may have changed it; forward uses every core

    x_all = torch.stack([apply_preprocess(tf, p) for p in paths])
    batches = [x_all[i : i + batch_size] for i in range(0, n, batch_size)]
    variants = {}
    eager_cl = create_backbone(spec).eval().to(memory_format=torch.channels_last)
    cl_batches = [b.contiguous(memory_format=torch.channels_last) for b in batches]

    def run(m, bs):
        with torch.inference_mode():
            for b in bs:
                m(b)

    run(eager_cl, cl_batches[:1])
    variants["eager_channels_last"] = _rate(lambda: run(eager_cl, cl_batches), n, repeats=2)
    fast = optimize_for_inference(create_backbone(spec), spec.preprocess.image_size)
    run(fast, cl_batches[:2])
    variants["traced_frozen_channels_last"] = _rate(lambda: run(fast, cl_batches), n, repeats=2)
    forward_only = max(variants.values())

    t0 = time.perf_counter()
    feats = extract_features(sub, spec, cache_dir=None, batch_size=batch_size, progress=False, model=create_backbone(spec))
    total_s = time.perf_counter() - t0
    # steady-state rate of the real extractor (decode workers + forward), excluding the one-time trace/freeze
    e2e = feats.stats["extract_img_s"]
    assert feats.X.shape[0] == n
    result = {
        "backbone": spec.name,
        "n_images": n,
        "batch_size": batch_size,
        "torch_threads": threads,
        "end_to_end_img_s": round(e2e, 2),
        "end_to_end_incl_setup_img_s": round(n / total_s, 2),
        "end_to_end_setup_s": feats.stats["setup_seconds"],
        "forward_only_img_s": round(forward_only, 2),
        "naive_img_s": round(naive_rate, 2),
        "forward_variants_img_s": {k: round(v, 2) for k, v in variants.items()},
        "end_to_end_over_forward_only": round(e2e / forward_only, 3),
        "end_to_end_over_naive": round(e2e / naive_rate, 3),
        "targets": {"end_to_end_over_forward_only": 0.85, "end_to_end_over_naive": 2.0},
        "peak_rss_mb": _peak_rss_mb(),
        "feature_dim": int(feats.X.shape[1]),
        "finite": bool(np.isfinite(feats.X).all()),
    }
    result["meets_targets"] = bool(result["end_to_end_over_forward_only"] >= 0.85 and result["end_to_end_over_naive"] >= 2.0)
    return result
