"""``medcbm bench scope``: how often the scope verdict flags images it should pass, and misses ones it should flag.

Per seed of a protocol, the feature domain is fitted exactly as a trained model's is (mean of the training
split, limit calibrated on the validation split), with the rules of the protocol's imaging domain. Then:

- *should pass*: the protocol's in-domain test split (never used to fit or calibrate) and its held-out-site
  test split, plus other dermoscopy collections (PH2, Derm7pt) as a new-hospital check;
- *should flag*: every pydicom-data file that holds a decodable image (CT, MR, US, NM, SC/OT, CR, ...) and the
  COVID-CXR radiographs.

Rates come with Wilson 95 % intervals; the JSON names the split each number is scored on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from medcbm.backbones.features import extract_features
from medcbm.bottleneck.domain import FeatureDomain
from medcbm.bottleneck.scope import DOMAIN_MODALITIES, ScopeRules, judge_images, scope_counts
from medcbm.data.importers import import_dataset
from medcbm.data.manifest import Manifest, SkipLog
from medcbm.metrics import wilson_ci

logger = logging.getLogger(__name__)


def pydicom_manifest() -> Manifest:
    """Every pydicom-data file whose header declares pixel data, as a manifest (unlabelled)."""
    import pydicom
    from pydicom.data import get_testdata_files

    rows = []
    for f in sorted(set(get_testdata_files("*"))):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - pydicom-data holds deliberately broken files
            continue
        if "Rows" in ds:
            rows.append({"id": f"dicom{len(rows)}", "image": f, "label": "none",
                         "modality": str(ds.get("Modality", "") or "(none)")})
    return Manifest(pd.DataFrame(rows), source="pydicom-data")


def _rate(flags: np.ndarray) -> dict:
    n, k = len(flags), int(np.sum(flags))
    lo, hi = wilson_ci(k, n)
    return {"n": n, "flagged": k, "rate": round(k / n, 4) if n else None, "ci95": [round(lo, 4), round(hi, 4)]}


def _features(m: Manifest, spec, cache_dir, progress: bool):
    skips = SkipLog()
    f = extract_features(m, spec, cache_dir=cache_dir, progress=progress, skips=skips)
    return f.X, f.manifest.image_paths(), len(skips.items)


def run_scope_benchmark(protocol: str, *, seeds: int = 3, domain: str = "dermoscopy", data_root=None,
                        cache_dir: str | os.PathLike | None = "runs/cache/features", progress: bool = True) -> dict:
    """Flag rates per seed and set (see the module docstring)."""
    from medcbm.benchmarks.bench_shift import load_protocol_data

    pdata = load_protocol_data(protocol, seeds=seeds, data_root=data_root, cache_dir=cache_dir, progress=progress)
    others = {"pydicom-data (every decodable file)": pydicom_manifest()}
    for name in ("covid-cxr", "ph2", "derm7pt"):
        others[name] = import_dataset(name, data_root, skips=SkipLog())
    foreign = {k: _features(m, pdata.spec, cache_dir, progress) for k, m in others.items()}
    rules = ScopeRules(domain, DOMAIN_MODALITIES[domain], domain == "dermoscopy", calibrated=True)
    paths = pdata.base.image_paths()
    per_seed = {}
    for seed, sp in pdata.splits.items():
        X = {k: pdata.feats.X[pdata.pos[v]] for k, v in sp.index.items()}
        fd = FeatureDomain.fit(X["train"], X["val"])
        res = {}
        for split in ("test_id", "test_ood"):
            v = judge_images(rules, fd, [paths[i] for i in sp.index[split]], X[split])
            res[f"{split} (should pass)"] = {**_rate(np.array([not x.in_scope for x in v])),
                                             "by_check": scope_counts(v)["by_check"]}
        for name, (Xo, po, n_unread) in foreign.items():
            v = judge_images(rules, fd, po, Xo)
            kind = "should flag" if name in ("covid-cxr",) or name.startswith("pydicom") else "should pass"
            res[f"{name} ({kind})"] = {**_rate(np.array([not x.in_scope for x in v])),
                                       "by_check": scope_counts(v)["by_check"], "unreadable_skipped": n_unread}
        per_seed[str(seed)] = {"limit": fd.summary.threshold, "n_calibration": fd.summary.n_calibration, "sets": res}
    return {"protocol": protocol, "domain": domain, "seeds": list(per_seed), "per_seed": per_seed,
            "splits": "mean fitted on train, limit calibrated on val; rates scored on test_id, test_ood "
                      "(held-out site) and external sets, never on train or val",
            "targets": {"pydicom-data flagged": 1.0, "in-domain test_id flagged at most": 0.02}}


def markdown_table(res: dict) -> str:
    """One row per set: flag rate per seed."""
    seeds = res["seeds"]
    sets = list(res["per_seed"][seeds[0]]["sets"])
    lines = ["| set | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---" * (len(seeds) + 1) + "|"]
    for name in sets:
        cells = []
        for s in seeds:
            r = res["per_seed"][s]["sets"][name]
            cells.append(f"{r['flagged']}/{r['n']} ({100 * r['rate']:.1f} %)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_scope_benchmark(path: Path, res: dict) -> None:
    """The JSON and a markdown table beside it."""
    from medcbm._io import atomic_write_json, atomic_write_text

    atomic_write_json(path, res)
    atomic_write_text(path.with_suffix(".md"), markdown_table(res) + "\n")
