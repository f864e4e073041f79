"""Two models on the same labelled images: did the adaptation help? (``medcbm evaluate --baseline``)

Both models are scored on every image of the manifest and compared image by image (paired); the gain in
balanced accuracy and in accuracy comes with a 95 % interval (:func:`medcbm.adapt.estimate.paired_gain`, a
Bayesian bootstrap over the images). Use it on images neither model was adapted or chosen on — the query
set of ``medcbm split-site``.
"""

from __future__ import annotations

import os

import numpy as np

from medcbm.adapt.estimate import correct, paired_gain
from medcbm.adapt.store import predict_saved
from medcbm.bottleneck.metadata import mapped_labels
from medcbm.data.manifest import Manifest
from medcbm.errors import DataError
from medcbm.metrics import split_metrics


def compare_models(model_dir: str | os.PathLike, baseline_dir: str | os.PathLike, manifest: Manifest, *,
                   cache_dir=None, progress: bool = True, measured_on: str = "the given labelled images") -> dict:
    """Metrics of both models and the paired gain of ``model_dir`` over ``baseline_dir`` on ``manifest``."""
    model, meta, proba, _ = predict_saved(model_dir, manifest, cache_dir=cache_dir, progress=progress)
    base, _, base_proba, _ = predict_saved(baseline_dir, manifest, cache_dir=cache_dir, progress=progress)
    if list(model.classes) != list(base.classes):
        raise DataError(f"the two models predict different classes ({model.classes} vs {base.classes}); compare "
                        "an adaptation with its own base model")
    manifest, y = mapped_labels(manifest, meta)
    new_ok, base_ok = correct(proba, y), correct(base_proba, y)
    bal = paired_gain(y, base_ok, new_ok, measured_on=measured_on)
    acc = paired_gain(np.zeros(len(y), int), base_ok, new_ok, measured_on=measured_on)
    return {"n": int(len(y)), "measured_on": measured_on,
            "model": split_metrics(y, proba), "baseline": split_metrics(y, base_proba),
            "balanced_acc_gain": bal.to_json(), "acc_gain": acc.to_json(),
            "changed_predictions": int((proba.argmax(1) != base_proba.argmax(1)).sum())}
