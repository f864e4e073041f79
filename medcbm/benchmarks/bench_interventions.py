"""``medcbm bench interventions``: how much a clinician correcting concepts helps, on data with true concepts.

- **Derm7pt**: concept probes and the bottleneck are fitted on the Derm7pt+ ``train`` split (the bottleneck's
  regularisation strength chosen on ``valid``), curves are measured on ``test``;
- **PH2**: 5-fold cross-validation (probes and bottleneck on four folds, a fifth of those held out to choose the
  strength; curves on the held-out fold, pooled over folds).

The bottleneck is the shipped recipe's (``configs/methods/cbm.yaml``). Besides the curves, every concept is set
present and absent on every test image (:func:`single_concept_effects`): a concept with a non-zero prior must
move P(malignant) the prior's way on all of them, and none may flip more than half of a class's predictions.

The task is benign vs malignant, the concepts the dataset's expert-annotated criteria (Derm7pt's 20 7-point-
checklist criteria, PH2's 14), the prior the shipped reviewed one. Whole-lesion *pattern* concepts are left
out on purpose: they are derived from the diagnosis, so "correcting" them would hand the model its label.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from medcbm.audit.interventions import concept_ablation, intervention_curves, normalised_auc
from medcbm.bottleneck.estimator import KnowledgeCBM
from medcbm.bottleneck.priors import merge_prior_files, shipped_prior_file
from medcbm.bottleneck.trainer import BottleneckConfig
from medcbm.concepts.grounding.probes import ConceptProbes, kfold_masks
from medcbm.errors import ConfigError

logger = logging.getLogger(__name__)

CLASSES = ["benign", "malignant"]
TARGETS = {"derm7pt_all_true_gain": 0.10, "derm7pt_gain_at_5": 0.10, "ph2_all_true_gain": 0.0,
           "prior_way_fraction": 1.0, "max_flip_fraction": 0.5}


def shipped_bottleneck() -> BottleneckConfig:
    """The dermoscopy CBM's bottleneck settings (``configs/methods/cbm.yaml``), read from the one place they live."""
    from medcbm.methods.cbm import load_method_recipe

    return load_method_recipe("cbm").bottleneck


def _concepts(dataset: str) -> list[str]:
    if dataset == "derm7pt":
        from medcbm.data.derm7pt_vocab import DERM7PT_CONCEPTS

        return list(DERM7PT_CONCEPTS)
    from medcbm.data.ph2_vocab import PH2_CONCEPTS

    return list(PH2_CONCEPTS)


def fit_concept_cbm(X: np.ndarray, C: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                    names: list[str], dataset: str, *, seed: int = 0,
                    config: BottleneckConfig | None = None) -> KnowledgeCBM:
    """Probes on ``(X, C)`` (weak ones dropped, as the recipe does), then the prior-constrained bottleneck
    (``config``, default the shipped recipe's)."""
    probes = ConceptProbes(min_auc=0.6, drop_weak=True, seed=seed).fit(X, C, names)
    prior, _ = merge_prior_files([shipped_prior_file(dataset)])
    return KnowledgeCBM(probes, classes=CLASSES, prior=prior, config=config or shipped_bottleneck()).fit(
        X, y, X_val, y_val)


def prior_direction(model: KnowledgeCBM, positive: int = 1) -> np.ndarray:
    """Per concept, the way its prior says setting it present should move P(``positive``): +1, -1 or 0."""
    prior = getattr(model, "prior_", None)
    if prior is None:
        return np.zeros(len(model.concept_names_))
    others = np.delete(np.asarray(prior, float), positive, axis=0).mean(0)
    return np.sign(np.asarray(prior, float)[positive] - others)


def single_concept_effects(model: KnowledgeCBM, P: np.ndarray, y: np.ndarray, *, positive: int = 1,
                           tol: float = 1e-9) -> dict:
    """Set each concept present (1) and absent (0) on every image, one concept at a time.

    Args:
        P: the images' concept activations ``(n, K)`` (what the head reads).
        y: their true classes (to report flips per class).
        positive: the class whose probability the prior's direction refers to (``malignant``).

    Returns:
        Per concept: ``prior_way`` (fraction of images whose P(positive) does not move against the prior when the
        concept is set present; only for concepts with a non-zero prior), ``moved`` (fraction it moves strictly),
        and ``max_flip`` (largest fraction of one true class's predictions that setting it to 0 or to 1 changes);
        plus the worst of each over concepts.
    """
    P, y = np.asarray(P, float), np.asarray(y, int)
    base = model.predict_proba_from_concepts(P)
    pred, direction = base.argmax(1), prior_direction(model, positive)
    per: dict[str, dict] = {}
    for j, k in enumerate(model.concept_names_):
        flips, delta = [], None
        for v in (0.0, 1.0):
            q = model.intervene_concepts(P, {k: v})
            flips += [float((q.argmax(1) != pred)[y == c].mean()) for c in np.unique(y)]
            if v == 1.0:
                delta = q[:, positive] - base[:, positive]
        rec = {"prior": int(direction[j]), "max_flip": round(max(flips), 4)}
        if direction[j] != 0:
            rec["prior_way"] = round(float((direction[j] * delta >= -tol).mean()), 4)
            rec["moved"] = round(float((direction[j] * delta > tol).mean()), 4)
        per[k] = rec
    with_prior = [r["prior_way"] for r in per.values() if "prior_way" in r]
    return {"concepts": per, "min_prior_way": min(with_prior) if with_prior else None,
            "max_flip": max(r["max_flip"] for r in per.values())}


def true_concepts(model: KnowledgeCBM, C: np.ndarray, names: list[str]) -> np.ndarray:
    """The expert annotations ``C`` (columns ``names``) in the model's concept order (weak probes dropped)."""
    return C[:, [names.index(k) for k in model.concept_names_]]


def load_dataset(dataset: str, backbone: str, data_root, cache_dir):
    """``(manifest, features X, annotations C, malignant y, concept names)`` of Derm7pt or PH2 (features cached)."""
    from medcbm.backbones.features import extract_features
    from medcbm.data.importers import import_dataset
    from medcbm.data.ph2_vocab import CONCEPT_PREFIX

    m = import_dataset(dataset, data_root)
    X = extract_features(m, backbone, cache_dir=cache_dir, progress=True).X
    names = _concepts(dataset)
    C = m.frame[[CONCEPT_PREFIX + k for k in names]].to_numpy(float)
    y = (m.frame["malignant"].to_numpy(int) if "malignant" in m.frame.columns
         else (m.frame["label"] == "melanoma").to_numpy(int))  # PH2: melanoma vs common/atypical nevus
    return m, X, C, y, names


def derm7pt_interventions(*, backbone: str, data_root=None, cache_dir=None, n_random: int = 5, seed: int = 0) -> dict:
    """Curves on Derm7pt's test split for a CBM fitted on its train split."""
    m, X, C, y, names = load_dataset("derm7pt", backbone, data_root, cache_dir)
    tr, va, te = derm7pt_splits(m)
    t0 = time.perf_counter()
    model = fit_concept_cbm(X[tr], C[tr], y[tr], X[va], y[va], names, "derm7pt", seed=seed)
    fit_s = time.perf_counter() - t0
    P, T = model.predict_concepts(X[te]), true_concepts(model, C[te], names)
    lo, hi = percentile_values(model.predict_concepts(X[va]))
    t0 = time.perf_counter()
    res = {}
    for mode, TT in (("binary", T), ("percentile", np.where(T > 0.5, hi, lo))):
        c = intervention_curves(model, P, TT, y[te], n_random=n_random, seed=seed)
        res[mode] = {**_summary(c), "curves": c.curves, "random_trials": c.random_trials}
    ablation = concept_ablation(model, P, y[te])
    return {"protocol": "Derm7pt+ asymmetric: fit on train (strength chosen on valid), curves on test",
            "n_train": int(tr.sum()), "n_val": int(va.sum()), "n_test": int(te.sum()),
            "concepts": model.concept_names_, "dropped_concepts": sorted(set(names) - set(model.concept_names_)),
            "fit_s": round(fit_s, 2), "curves_s": round(time.perf_counter() - t0, 2), "fit_info": model.fit_info_,
            **res, "ablation": ablation.model_dump(), "single_concept": single_concept_effects(model, P, y[te])}


def derm7pt_splits(m) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks of Derm7pt's official ``train``, ``valid`` and ``test`` splits (``unassigned`` is in none)."""
    split = m.frame["derm7pt_split"].to_numpy()
    return split == "train", split == "valid", split == "test"


def percentile_values(P_val: np.ndarray, q: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Koh et al.'s corrected values: a concept set "absent" takes the ``q``-th percentile of its activations on
    held-out images, "present" the ``100 - q``-th — values the bottleneck has seen, unlike a hard 0/1."""
    return np.percentile(P_val, q, axis=0), np.percentile(P_val, 100 - q, axis=0)


def ph2_interventions(*, backbone: str, data_root=None, cache_dir=None, n_folds: int = 5, n_random: int = 5,
                      seed: int = 0) -> dict:
    """Curves pooled over PH2's cross-validation folds (each fold's model fitted on the other folds)."""
    _, X, C, y, names = load_dataset("ph2", backbone, data_root, cache_dir)
    held = kfold_masks(len(X), n_folds, seed)
    rng = np.random.default_rng(seed)
    fits, kept = [], []
    t0 = time.perf_counter()
    for f in range(n_folds):
        train = np.flatnonzero(~held[f])
        val_mask = rng.random(len(train)) < 0.2
        tr, va = train[~val_mask], train[val_mask]
        model = fit_concept_cbm(X[tr], C[tr], y[tr], X[va], y[va], names, "ph2", seed=seed)
        T = true_concepts(model, C[held[f]], names)
        lo, hi = percentile_values(model.predict_concepts(X[va]))
        fits.append((model, model.predict_concepts(X[held[f]]), {"binary": T, "percentile": np.where(T > 0.5, hi, lo)},
                     y[held[f]]))
        kept.append(model.concept_names_)
    fit_s = time.perf_counter() - t0
    out = {"protocol": f"PH2 {n_folds}-fold CV (fold-size-weighted mean of per-fold curves)", "n": len(X),
           "concepts_per_fold": [len(k) for k in kept],
           "dropped_concepts_per_fold": [sorted(set(names) - set(k)) for k in kept], "fit_s": round(fit_s, 2)}
    for mode in ("binary", "percentile"):
        # each fold has its own model and may drop a weak probe: average over the steps every fold has
        per_fold = [intervention_curves(mod, P, Ts[mode], yy, n_random=n_random, seed=seed) for mod, P, Ts, yy in fits]
        w = np.array([c.n for c in per_fold], float)
        K = min(len(c.concepts) for c in per_fold)
        pooled = {o: np.average([np.asarray(c.curves[o][:K + 1]) for c in per_fold], axis=0, weights=w).tolist()
                  for o in per_fold[0].curves}
        base = float(np.average([c.base_accuracy for c in per_fold], weights=w))
        all_true = float(np.average([c.all_true_accuracy for c in per_fold], weights=w))
        out[mode] = {"base_accuracy": base, "all_true_accuracy": all_true, "all_true_gain": all_true - base,
                     "auc": {o: normalised_auc(c) for o, c in pooled.items()}, "curves": pooled,
                     "per_fold_auc": [c.auc for c in per_fold]}
    abl = [concept_ablation(mod, P, yy) for mod, P, _, yy in fits]
    out["ablation_per_fold"] = [a.model_dump() for a in abl]
    out["ablation_concepts_for_half_drop"] = [a.concepts_for_half_drop for a in abl]
    out["fit_info_per_fold"] = [mod.fit_info_ for mod, *_ in fits]
    effects = [single_concept_effects(mod, P, yy) for mod, P, _, yy in fits]
    ways = [e["min_prior_way"] for e in effects if e["min_prior_way"] is not None]
    out["single_concept"] = {"min_prior_way": min(ways) if ways else None,
                             "max_flip": max(e["max_flip"] for e in effects), "per_fold": effects}
    return out


def _summary(c) -> dict:
    return {"base_accuracy": c.base_accuracy, "all_true_accuracy": c.all_true_accuracy,
            "all_true_gain": c.all_true_accuracy - c.base_accuracy, "auc": c.auc}


def run_interventions_benchmark(datasets: list[str] | None = None, *, backbone: str = "efficientnet_lite0_lesion_cc",
                                data_root=None, cache_dir="runs/cache/features", n_random: int = 5,
                                seed: int = 0) -> dict:
    """Intervention curves on Derm7pt (train/test split) and PH2 (cross-validated), with the targets checked.

    Returns:
        JSON-ready results: per dataset the curves per order, their normalised AUCs, the accuracy with every
        concept true, the ablation check, the single-concept effects (:func:`single_concept_effects`), the
        bottleneck's ``fit_info``, and ``checks`` against :data:`TARGETS` (gains; informed orders beat random by
        AUC; every non-zero-prior concept moves the prediction the prior's way; no concept flips more than half
        of a class).
    """
    datasets = datasets or ["derm7pt", "ph2"]
    unknown = [d for d in datasets if d not in ("derm7pt", "ph2")]
    if unknown:
        raise ConfigError(f"intervention benchmark datasets {unknown}: choose from ['derm7pt', 'ph2']")
    out: dict = {"backbone": backbone, "task": "benign vs malignant", "n_random_trials": n_random, "seed": seed,
                 "targets": TARGETS, "datasets": {}, "checks": {}}
    for d in datasets:
        fn = derm7pt_interventions if d == "derm7pt" else ph2_interventions
        res = fn(backbone=backbone, data_root=data_root, cache_dir=cache_dir, n_random=n_random, seed=seed)
        out["datasets"][d] = res
        out["checks"][d] = {}
        eff = res["single_concept"]
        out["checks"][d]["prior_way_met"] = eff["min_prior_way"] is None or eff["min_prior_way"] >= TARGETS["prior_way_fraction"]
        out["checks"][d]["max_flip"] = eff["max_flip"]
        out["checks"][d]["max_flip_met"] = eff["max_flip"] <= TARGETS["max_flip_fraction"]
        for mode in ("binary", "percentile"):
            r, auc = res[mode], res[mode]["auc"]
            curve = r["curves"]["uncertainty"]
            at5 = curve[min(5, len(curve) - 1)] - curve[0]
            chk = out["checks"][d][mode] = {
                "all_true_gain": round(r["all_true_gain"], 4), "gain_at_5_uncertainty": round(at5, 4),
                **{f"{o}_beats_random": bool(auc[o] > auc["random"]) for o in ("uncertainty", "contribution", "oracle")}}
            if d == "derm7pt":
                chk["gain_target_met"] = r["all_true_gain"] >= TARGETS["derm7pt_all_true_gain"]
                chk["gain_at_5_target_met"] = at5 >= TARGETS["derm7pt_gain_at_5"]
            else:
                chk["all_true_helps"] = r["all_true_gain"] > TARGETS["ph2_all_true_gain"]
            logger.info("%s (%s values): base %.3f, all concepts true %.3f, AUC %s", d, mode, r["base_accuracy"],
                        r["all_true_accuracy"], {k: round(v, 3) for k, v in auc.items()})
    return out
