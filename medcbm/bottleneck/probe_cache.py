"""Fitted annotation probes on disk, keyed by their exact inputs, so every training run with the same grounding
sources (PH2 and Derm7pt for the shipped dermoscopy CBM) fits them once — not once per model.

Stored as safetensors + JSON beside the feature cache (``<cache_dir>/probes/<key>.*``); never pickled. The key
hashes the features, the annotations, the probe settings and the medcbm version, so any change refits.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from medcbm import __version__
from medcbm._io import atomic_write_bytes, atomic_write_json
from medcbm.concepts.grounding.probes import ConceptProbes

logger = logging.getLogger(__name__)


def probe_key(settings: str, X: np.ndarray, C: np.ndarray, names: list[str]) -> str:
    """Content hash of everything a probe fit depends on."""
    h = hashlib.sha256()
    for part in (__version__, settings, json.dumps(names)):
        h.update(part.encode("utf-8") + b"\0")
    for arr in (X, C):
        a = np.ascontiguousarray(arr, dtype=np.float64)
        h.update(str(a.shape).encode() + a.tobytes())
    return h.hexdigest()[:32]


def load_probes(cache_dir: str | Path | None, key: str) -> ConceptProbes | None:
    """The cached fit, or ``None`` (no cache, not fitted yet, or an unreadable entry, which is refitted)."""
    if cache_dir is None:
        return None
    base = Path(cache_dir) / "probes" / key
    if not (base.with_suffix(".json").is_file() and base.with_suffix(".safetensors").is_file()):
        return None
    from safetensors.numpy import load_file

    try:
        meta = json.loads(base.with_suffix(".json").read_text(encoding="utf-8"))
        probes = ConceptProbes.from_state(load_file(str(base.with_suffix(".safetensors"))), meta)
    except Exception as exc:  # a torn or foreign entry costs a refit, never a wrong model
        logger.warning("cached concept probes %s unreadable (%s); refitting", base.name, type(exc).__name__)
        return None
    logger.info("concept probes reused from the cache (%s)", base.name[:12])
    return probes


def save_probes(cache_dir: str | Path | None, key: str, probes: ConceptProbes) -> None:
    if cache_dir is None:
        return
    from safetensors.numpy import save

    tensors, meta = probes.get_state()
    base = Path(cache_dir) / "probes" / key
    # tensors first: the JSON is what marks the entry complete
    atomic_write_bytes(base.with_suffix(".safetensors"), save({k: np.ascontiguousarray(v) for k, v in tensors.items()}))
    atomic_write_json(base.with_suffix(".json"), meta)
