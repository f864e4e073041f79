"""``medcbm bench concepts``: PH2 and Derm7pt concept-probe quality and the batched-vs-loop training speed.

Where the concepts are read (HAM10000, per acquisition site) lives in
:mod:`medcbm.benchmarks.bench_concepts_sites`; :func:`run_concepts_benchmark` runs both for several backbones.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from medcbm.concepts.grounding._linear import fit_batched_logistic
from medcbm.concepts.grounding.probes import C_GRID, ConceptProbes, _auc, kfold_masks

logger = logging.getLogger(__name__)


def sklearn_loop_cv(X: np.ndarray, C: np.ndarray, names: list[str], *, C_grid=C_GRID, n_folds: int = 5,
                    seed: int = 0) -> tuple[dict[str, float], float]:
    """KnoBo's way: one scikit-learn ``LogisticRegression`` per concept, per C, per fold, then a refit.

    Same folds, grid, class balancing and selection rule as :class:`ConceptProbes`, so the two differ
    only in how the optimisation is organised.

    Returns:
        ``(cv AUROC per concept, seconds)``.
    """
    t0 = time.perf_counter()
    Xs = StandardScaler().fit_transform(X)
    held = kfold_masks(len(X), n_folds, seed)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, name in enumerate(names):
            y = C[:, k]
            best_auc, best_c = -1.0, C_grid[0]
            for c in C_grid:
                oof = np.zeros(len(y))
                for f in range(n_folds):
                    tr = ~held[f]
                    m = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(Xs[tr], y[tr])
                    oof[held[f]] = m.decision_function(Xs[held[f]])
                a = _auc(y, oof)
                if a > best_auc:
                    best_auc, best_c = a, c
            LogisticRegression(C=best_c, class_weight="balanced", max_iter=2000).fit(Xs, y)
            out[name] = float(best_auc)
    return out, time.perf_counter() - t0


def bench_concepts(X: np.ndarray, C: np.ndarray, names: list[str], *, backbone: str, feature_mode: str,
                   repeats: int = 3) -> dict:
    """Fit batched probes and the scikit-learn loop on the same data; report AUROC and speed.

    Each is timed ``repeats`` times in a block (batched first) and the medians are reported. Blocks, not
    interleaving: right after the scikit-learn loop its BLAS worker threads still spin on the cores and
    slow whatever runs next, which would charge the loop's cost to the batched fit.
    """
    # warm-up: the first torch.linalg call loads LAPACK kernels; time the steady state of both methods
    fit_batched_logistic(X[:20], (np.arange(20) % 2)[:, None].astype(float), np.ones((20, 1)), np.ones(1))
    batched_runs, loop_runs = [], []
    for _ in range(max(1, repeats)):
        probes = ConceptProbes(min_auc=0.0).fit(X, C, names)
        batched_runs.append(probes.fit_seconds_)
    for _ in range(max(1, repeats)):
        loop_auc, s = sklearn_loop_cv(X, C, probes.all_concepts_)
        loop_runs.append(s)
    batched_s, loop_s = float(np.median(batched_runs)), float(np.median(loop_runs))
    mean_b = float(np.mean(list(probes.cv_auc_.values())))
    mean_l = float(np.mean(list(loop_auc.values())))
    return {
        "backbone": backbone,
        "feature_mode": feature_mode,
        "n_images": int(X.shape[0]),
        "feature_dim": int(X.shape[1]),
        "n_concepts": len(probes.all_concepts_),
        "mean_cv_auc": mean_b,
        "per_concept": {k: {"cv_auc": v, "C": probes.C_[k], "positives": int(C[:, names.index(k)].sum()),
                            "sklearn_cv_auc": loop_auc[k]} for k, v in probes.cv_auc_.items()},
        "batched_fit_s": round(batched_s, 3),
        "sklearn_loop_fit_s": round(loop_s, 3),
        "sklearn_mean_cv_auc": mean_l,
        "speedup": round(loop_s / batched_s, 2),
        "timing_runs": {"batched_s": [round(t, 3) for t in batched_runs], "sklearn_loop_s": [round(t, 3) for t in loop_runs]},
        "auc_diff_vs_sklearn": round(mean_b - mean_l, 4),
        "targets": {"mean_cv_auc": 0.80, "speedup": 10.0, "abs_auc_diff": 0.01},
        "flagged": probes.flagged_,
    }


#: dataset -> (criteria vocabulary, whole-lesion pattern vocabulary), imported lazily
VOCABULARIES = {"ph2": ("medcbm.data.ph2_vocab", "PH2_CONCEPTS", "PH2_PATTERN_CONCEPTS"),
                "derm7pt": ("medcbm.data.derm7pt_vocab", "DERM7PT_CONCEPTS", "DERM7PT_PATTERN_CONCEPTS")}
TARGETS = {"ph2": 0.80, "derm7pt": 0.82}


def bench_concept_datasets(datasets: list[str], backbone: str, *, repeats: int = 3, data_root=None,
                           cache_dir=None) -> dict:
    """:func:`bench_concepts` on each annotated dataset's criteria, plus the CV AUROC of its pattern concepts."""
    import importlib

    from medcbm.backbones import get_backbone_spec
    from medcbm.backbones.features import extract_features
    from medcbm.data.importers import import_dataset
    from medcbm.data.ph2_vocab import CONCEPT_PREFIX
    from medcbm.errors import ConfigError

    spec = get_backbone_spec(backbone)
    out = {"backbone": backbone, "preprocess": spec.preprocess.model_dump(), "datasets": {}}
    for name in datasets:
        if name not in VOCABULARIES:
            raise ConfigError(f"no concept vocabulary for dataset '{name}'; choose from {sorted(VOCABULARIES)} "
                              f"(or '{HAM_SITES}' for the per-site report)")
        mod, crit, pat = VOCABULARIES[name]
        vocab = importlib.import_module(mod)
        m = import_dataset(name, data_root)
        X = extract_features(m, spec, cache_dir=cache_dir).X
        names = list(getattr(vocab, crit))
        res = bench_concepts(X, m.frame[[CONCEPT_PREFIX + k for k in names]].to_numpy(float), names,
                             backbone=backbone, feature_mode=spec.pooling, repeats=repeats)
        res["targets"]["mean_cv_auc"] = TARGETS[name]
        patterns = list(getattr(vocab, pat))
        probes = ConceptProbes(min_auc=0.0).fit(X, m.frame[[CONCEPT_PREFIX + k for k in patterns]].to_numpy(float), patterns)
        res["patterns_cv_auc"] = probes.cv_auc_
        res["patterns_mean_cv_auc"] = float(np.mean(list(probes.cv_auc_.values())))
        # a fine-tuned backbone may have seen these images: its held-out scores come with the fine-tuning run
        res["scored_on"] = f"{len(m)} {name} images, 5-fold cross-validation over every annotated image"
        out["datasets"][name] = res
    return out


#: the dataset name that selects the per-site HAM10000 report in :func:`run_concepts_benchmark`
HAM_SITES = "ham10000"


def run_concepts_benchmark(datasets: list[str], backbones: list[str], *, repeats: int = 3, data_root=None,
                           cache_dir=None, ham: dict | None = None) -> dict:
    """Probe quality on the annotated ``datasets`` and, if ``ham10000`` is among them, the per-site HAM report.

    Args:
        datasets: any of ``ph2``, ``derm7pt`` (CV probe quality) and ``ham10000`` (where the concepts are read).
        backbones: registered backbone names (e.g. the frozen default and a fine-tuned one), reported side by side.
        ham: keyword arguments of :func:`~medcbm.benchmarks.bench_concepts_sites.bench_ham_sites`.

    Returns:
        ``{"backbones", "probe_quality": {backbone: ...}, "ham_sites": ...}`` (the last two when requested).
    """
    from medcbm.errors import ConfigError

    backbones = list(dict.fromkeys(backbones))  # a repeated name would overwrite its own column
    annotated = [d for d in datasets if d != HAM_SITES]
    unknown = sorted(set(annotated) - set(VOCABULARIES))
    if unknown:  # before any fit: a typo should not cost the PH2 timing runs first
        raise ConfigError(f"unknown dataset(s) {unknown}; choose from {sorted(VOCABULARIES) + [HAM_SITES]}")
    out: dict = {"backbones": list(backbones)}
    if annotated:
        out["probe_quality"] = {b: bench_concept_datasets(annotated, b, repeats=repeats, data_root=data_root,
                                                          cache_dir=cache_dir) for b in backbones}
    if HAM_SITES in datasets:
        from medcbm.benchmarks.bench_concepts_sites import bench_ham_sites

        out["ham_sites"] = bench_ham_sites(list(backbones), data_root=data_root, cache_dir=cache_dir, **(ham or {}))
    return out
