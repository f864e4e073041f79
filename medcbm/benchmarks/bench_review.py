"""``medcbm bench review``: a simulated clinician answers the review app's questions with Derm7pt's expert truth.

Per seed, the concept CBM of ``bench interventions`` is fitted once on Derm7pt's official ``train`` split (the
bottleneck's strength chosen on ``valid``); the ``test`` split is never seen by that fit. Then:

1. **Reviewed cases**: on every test image the reviewer is asked about concepts in
   :func:`~medcbm.audit.interventions.ask_order` (what the review app shows first) and answers with the expert
   annotation: present sets the concept to 1, absent to 0, as the app's answers do. Accuracy and balanced
   accuracy before and after, with a paired bootstrap interval over images, against the ``contribution`` order
   and a random one (:func:`~medcbm.audit.interventions.concept_ranks`).
2. **Adaptation from reviewed cases**: random stratified draws of test images are "reviewed" (diagnosis and
   the first asked concepts answered); :class:`~medcbm.adapt.site.SiteAdaptation` is fitted from the labels
   alone, the labels plus the concept answers, and the answers alone, and scored on the test images not drawn.
   The answers enter in two ways: as a per-concept shift of the head's inputs (:mod:`medcbm.adapt.corrections`,
   ``*corrections``), or as training targets for the answered concepts' probes, refitted on the reviewed images'
   features and shrunk to the source probes (:mod:`medcbm.adapt.probe_refit`, ``*_probes``: each image's
   activation moves with its features; the head is unchanged, or label-adapted on the new activations).
3. **A new site**: both parts again on PH2 — another hospital and dermoscope — whose expert criteria answer the
   app's questions where PH2 annotates the concept (the six concepts the datasets share; others stay unsure).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Callable

import numpy as np

from medcbm.adapt.edit import ConceptEdit
from medcbm.adapt.estimate import GainEstimate
from medcbm.adapt.probe_refit import ProbeRefit
from medcbm.adapt.site import SiteAdaptation
from medcbm.audit.interventions import concept_ranks
from medcbm.benchmarks.bench_interventions import derm7pt_splits, fit_concept_cbm, load_dataset, true_concepts
from medcbm.data.site_split import draw_support
from medcbm.errors import ConfigError, DataError
from medcbm.metrics import balanced_accuracy, bootstrap_ci, concept_aurocs

logger = logging.getLogger(__name__)

#: concepts the review app asks about per case (``medcbm.review.session.ASKED``: the layering keeps benchmarks
#: from importing the app, so a test holds the two equal)
ASKED = 6
#: concepts the simulated reviewer answers per case for the headline numbers (the issue's targets are at 5)
ANSWERED = 5
ORDERS = ("ask", "contribution", "random")
PROBE_VARIANTS = ("corrections_probes", "labels_corrections_probes")
VARIANTS = ("labels", "labels_corrections", "corrections", *PROBE_VARIANTS)
TARGETS = {"reviewed_case_accuracy_gain_at_5": 0.10, "corrections_plus_labels_minus_labels": 0.0}


def reviewer_answers(T: np.ndarray, rank: np.ndarray, m: int) -> np.ndarray:
    """The reviewer's table ``(n, K)``: the truth on each case's first ``m`` concepts of ``rank``, NaN elsewhere
    (not asked), the shape ``SiteAdaptation.fit_concepts(T_reviewed=...)`` reads."""
    R = np.full(T.shape, np.nan)
    rows = np.arange(len(T))[:, None]
    R[rows, rank[:, :m]] = T[rows, rank[:, :m]]
    return R


def answerable_first(rank: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Each case's ``rank`` with the concepts its experts annotated (finite ``T``) first, in the same order: a
    reviewer at another hospital answers the app's questions they can, and an unannotated one counts as unsure."""
    unknown = np.isnan(np.take_along_axis(T, rank, axis=1))
    return np.take_along_axis(rank, np.argsort(unknown, axis=1, kind="stable"), axis=1)


def answered(P: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Activations with the reviewer's answers ``R`` applied (the app's ``corrected_concepts``, vectorised)."""
    return np.where(np.isnan(R), P, R)


def _balanced_mean(y: np.ndarray, v: np.ndarray) -> float:
    """Mean over the classes present of a per-image score's class mean (balanced accuracy of 0/1 correctness)."""
    return float(np.mean([v[y == c].mean() for c in np.unique(y)]))


def case_outcomes(model, P: np.ndarray, T: np.ndarray, y: np.ndarray, *, seed: int, n_random: int = 5,
                  max_asked: int = ASKED) -> dict[str, np.ndarray]:
    """Per order, whether each case is right after answering its first 0..``max_asked`` concepts with the truth.

    Args:
        P: the cases' concept activations ``(n, K)``; ``T``: their true 0/1 concepts; ``y``: class indices.
        n_random: random-order trials (a fresh permutation per case and trial, averaged as in
            ``intervention_curves``).

    Returns:
        order -> ``(n, max_asked + 1)`` correctness (a fraction of trials for ``random``).
    """
    rng = np.random.default_rng([seed, 11])
    out = {}
    for order in ORDERS:
        trials = [answerable_first(concept_ranks(model, P, order, rng=rng), T)
                  for _ in range(n_random if order == "random" else 1)]
        out[order] = np.mean([[model.predict_proba_from_concepts(answered(P, reviewer_answers(T, r, m))).argmax(1) == y
                               for m in range(max_asked + 1)] for r in trials], axis=0).T
    return out


def _estimate(point: float, ci: tuple[float, float], n: int, on: str) -> dict:
    return GainEstimate(point, ci, n, on).to_json()  # one verdict rule ("cannot tell" when 0 is inside)


def paired_gain_summary(y: np.ndarray, before: np.ndarray, after: np.ndarray, *, n_boot: int = 1000,
                        seed: int = 0, images: str = "Derm7pt test images") -> dict:
    """Accuracy and balanced accuracy before/after and their paired gains, 95 % bootstrap intervals over images.

    Args:
        before, after: per-image correctness (0/1, or its mean over seeds and trials) of the same images.
        images: what the images are, for each estimate's ``measured_on``.
    """
    V = np.c_[before, after]
    acc = lambda _, v: float((v[:, 1] - v[:, 0]).mean())  # noqa: E731 - bootstrap statistics over resampled rows
    bal = lambda yy, v: _balanced_mean(yy, v[:, 1]) - _balanced_mean(yy, v[:, 0])  # noqa: E731
    on = f"{len(y)} {images} (paired bootstrap over images)"
    return {"accuracy_before": round(float(before.mean()), 4), "accuracy_after": round(float(after.mean()), 4),
            "balanced_accuracy_before": round(_balanced_mean(y, before), 4),
            "balanced_accuracy_after": round(_balanced_mean(y, after), 4),
            "accuracy_gain": _estimate(acc(y, V), bootstrap_ci(y, V, fn=acc, n=n_boot, seed=seed), len(y), on),
            "balanced_accuracy_gain": _estimate(bal(y, V), bootstrap_ci(y, V, fn=bal, n=n_boot, seed=seed), len(y), on)}


def reviewed_case_summary(y: np.ndarray, outcomes: list[dict[str, np.ndarray]], *, n_boot: int = 1000,
                          images: str = "Derm7pt test images") -> dict:
    """Per order, the gains at 1..``ASKED`` answered concepts (correctness averaged over seeds, paired over images)
    and each seed's own figures at :data:`ANSWERED`."""
    out: dict = {}
    for order in ORDERS:
        mean = np.mean([o[order] for o in outcomes], axis=0)
        out[order] = {"by_answered": {str(m): paired_gain_summary(y, mean[:, 0], mean[:, m], n_boot=n_boot,
                                                                  images=images)
                                      for m in range(1, mean.shape[1])},
                      "per_seed_at_5": [paired_gain_summary(y, o[order][:, 0], o[order][:, ANSWERED], n_boot=n_boot,
                                                            images=images) for o in outcomes]}
        out[order]["at_5"] = out[order]["by_answered"][str(ANSWERED)]
    return out


def _variants(model, P: np.ndarray, y: np.ndarray, R: np.ndarray, sel: np.ndarray,
              X: np.ndarray | None = None) -> dict[str, Callable[[], tuple[SiteAdaptation, np.ndarray]]]:
    """The adaptations of one draw of reviewed cases ``sel`` (``P`` activations, ``y`` diagnoses, ``R`` answers of
    every case; only the reviewed rows are read). Each gives the fitted adaptation and the activations its model
    reads on every case: ``P``, or, for the ``*_probes`` variants (when the features ``X`` are given), those of the
    probes refitted on the reviewed cases' answers (:class:`~medcbm.adapt.probe_refit.ProbeRefit`)."""
    Ps, ys, Rs = P[sel], y[sel], R[sel]
    out = {"labels": lambda: (SiteAdaptation(model).fit_concepts(Ps, ys), P),
           "labels_corrections": lambda: (SiteAdaptation(model).fit_concepts(Ps, ys, P_reviewed=Ps, T_reviewed=Rs), P),
           "corrections": lambda: (SiteAdaptation(model).fit_concepts(Ps[:0], ys[:0], P_reviewed=Ps, T_reviewed=Rs), P)}
    if X is None:
        return out

    @functools.cache  # one refit per draw, shared by the two variants (lazily: a refusal is recorded per variant)
    def refitted() -> np.ndarray:
        return ProbeRefit(model).fit(X[sel], Rs).predict_concepts(X)

    def probes(labels: bool) -> tuple[SiteAdaptation, np.ndarray]:
        Pn = refitted()
        a = SiteAdaptation(model)
        return (a.fit_concepts(Pn[sel], ys) if labels else a.fit_concepts(Pn[:0], ys[:0], P_unlabelled=Pn[sel])), Pn

    return {**out, "corrections_probes": lambda: probes(False), "labels_corrections_probes": lambda: probes(True)}


def adaptation_draws(model, P: np.ndarray, T: np.ndarray, y: np.ndarray, *, seed: int, draws: int = 20,
                     per_class: int = 10, asked: int = ANSWERED, X: np.ndarray | None = None) -> list[dict]:
    """Per draw of ``per_class`` reviewed cases per class, each variant's balanced-accuracy gain on the rest.

    Args:
        P, T, y: the test split's activations, true concepts and class indices.
        asked: concepts answered per reviewed case (the first of its ``ask`` order), NaN elsewhere.
        X: the cases' backbone features: adds the probe-refit variants (:data:`PROBE_VARIANTS`).

    Returns:
        One row per (draw, variant): held-out balanced accuracy and gain over the unadapted model, whether
        the fit changed the model at all and whether it changed a held-out prediction, the reviewed cases'
        positions in ``y`` (every other case is held out and scored). A variant that refuses to fit has ``error``.
        A probe-refit row also has the held-out concept AUROC before and after per concept answered on the
        reviewed cases (``concept_auroc_held_out``: name -> [before, after]; NaN-free, concepts whose held-out
        annotations have both values at least twice) and the mean absolute activation change on held-out cases.
    """
    R_all = reviewer_answers(T, answerable_first(concept_ranks(model, P, "ask"), T), asked)
    base_proba = model.predict_proba_from_concepts(P)
    base_pred = base_proba.argmax(1)
    identity = ConceptEdit.identity(model)
    rows = []
    for d in range(draws):
        sel = draw_support(y, per_class, np.random.default_rng([seed, 23, d]))
        if sel is None:
            raise DataError(f"the test split has fewer than {per_class} images of a class to review")
        held = np.setdiff1d(np.arange(len(y)), sel)
        base = balanced_accuracy(y[held], base_proba[held])
        for name, fit in _variants(model, P, y, R_all, sel, X).items():
            row = {"seed": seed, "draw": d, "variant": name, "reviewed": sorted(sel.tolist()), "n_held_out": len(held),
                   "base_balanced_acc": base}
            t0 = time.perf_counter()
            try:
                a, Pa = fit()
            except (ConfigError, DataError) as exc:  # reported, not hidden: the variant "does not work" here
                rows.append({**row, "error": str(exc)})
                continue
            proba = a.adapted_.predict_proba_from_concepts(Pa[held])
            bal = balanced_accuracy(y[held], proba)
            # the largest concept shift in the head's standardised inputs: a tail loss traces back to it
            j = int(np.abs(a.edit_.shift).argmax())
            moved = Pa is not P
            rows.append({**row, "balanced_acc": bal, "gain": bal - base,
                         "changed": a.edit_.changed(identity) or (moved and bool(np.any(Pa != P))),
                         "max_abs_shift_z": float(abs(a.edit_.shift[j])), "max_shift_concept": model.concept_names_[j],
                         "predictions_changed": bool((proba.argmax(1) != base_pred[held]).any()),
                         "labelled_change_kept": bool(a.adopted_), "fit_seconds": time.perf_counter() - t0,
                         **(_concept_change(model, P[held], Pa[held], T[held], R_all[sel]) if moved else {})})
    return rows


def _concept_change(model, P: np.ndarray, Pn: np.ndarray, T: np.ndarray, R: np.ndarray) -> dict:
    """Held-out concept AUROC before/after for the concepts answered on the reviewed cases (``R``), and the mean
    absolute change of those concepts' held-out activations."""
    ans = np.flatnonzero((~np.isnan(R)).any(0))
    before, after = concept_aurocs(T[:, ans], P[:, ans]), concept_aurocs(T[:, ans], Pn[:, ans])
    return {"concept_auroc_held_out": {model.concept_names_[k]: [round(float(b), 4), round(float(a), 4)]
                                       for k, b, a in zip(ans, before, after) if np.isfinite(b)},
            "mean_abs_activation_change": float(np.abs(Pn[:, ans] - P[:, ans]).mean()) if len(ans) else 0.0}


def recalibration_ceiling(model, P: np.ndarray, T: np.ndarray, y: np.ndarray) -> dict:
    """What a site-level concept shift can do at best: every case reviewed, every annotated concept answered.

    The shift is fitted on all of ``P``/``T`` and scored on the same images, so this is an in-sample upper bound
    on the corrections' adaptation, not a gain estimate. Beside it, the same answers applied case by case (an
    intervention on every case), which is what the reviewer gets on the reviewed cases themselves.
    """
    base = balanced_accuracy(y, model.predict_proba_from_concepts(P))
    shifted = SiteAdaptation(model).fit_concepts(P[:0], y[:0], P_reviewed=P, T_reviewed=T)
    after = balanced_accuracy(y, shifted.adapted_.predict_proba_from_concepts(P))
    answered = balanced_accuracy(y, model.predict_proba_from_concepts(np.where(np.isnan(T), P, T)))
    return {"balanced_acc_base": round(base, 4), "balanced_acc_shifted": round(after, 4),
            "shift_gain": round(after - base, 4), "balanced_acc_every_case_answered": round(answered, 4),
            "answered_gain": round(answered - base, 4), "n_images": int(len(y)),
            "concepts_answered": int((~np.isnan(T)).any(0).sum()),
            "scored_on": "the same images the shift was fitted on (in-sample upper bound, not a gain estimate)"}


def _ceiling_summary(per_seed: list[dict]) -> dict:
    """Mean over seeds of :func:`recalibration_ceiling` (the images are the same for every seed)."""
    keys = ("balanced_acc_base", "balanced_acc_shifted", "shift_gain", "balanced_acc_every_case_answered",
            "answered_gain")
    return {**{k: round(float(np.mean([c[k] for c in per_seed])), 4) for k in keys},
            **{k: per_seed[0][k] for k in ("n_images", "concepts_answered", "scored_on")}, "per_seed": per_seed}


def _mean_ci(v: np.ndarray, *, n_boot: int, on: str) -> dict:
    """Mean over draws with a percentile bootstrap interval over draws (``bootstrap_ci`` with the values as rows)."""
    mean = lambda _, g: float(g.mean())  # noqa: E731
    return _estimate(float(v.mean()), bootstrap_ci(v, v[:, None], fn=mean, n=n_boot, seed=0), len(v), on)


def adaptation_summary(rows: list[dict], *, n_boot: int = 2000, images: str = "Derm7pt test images") -> dict:
    """Per variant: mean held-out gain with an interval over draws, how often it changed anything; and the paired
    differences of the corrections variants from labels alone, draw by draw."""
    on = f"draws (each scored on its held-out {images}; bootstrap over draws)"
    by = {v: rs for v in VARIANTS if (rs := [r for r in rows if r["variant"] == v])}
    out: dict = {"variants": {}, "paired": {}}
    for v, rs in by.items():
        ok = [r for r in rs if "error" not in r]
        out["variants"][v] = {"n_draws": len(rs), "n_failed": len(rs) - len(ok),
                              "errors": sorted({r["error"] for r in rs if "error" in r})}
        if ok:
            out["variants"][v].update({
                "gain": _mean_ci(np.array([r["gain"] for r in ok]), n_boot=n_boot, on=on),
                "worst_gain": round(min(r["gain"] for r in ok), 4), "best_gain": round(max(r["gain"] for r in ok), 4),
                "loss_over_0.05_fraction": round(float(np.mean([r["gain"] < -0.05 for r in ok])), 4),
                "max_abs_shift_z": round(max(r["max_abs_shift_z"] for r in ok), 3),
                "balanced_acc": round(float(np.mean([r["balanced_acc"] for r in ok])), 4),
                "changed_fraction": round(float(np.mean([r["changed"] for r in ok])), 4),
                "predictions_changed_fraction": round(float(np.mean([r["predictions_changed"] for r in ok])), 4),
                "labelled_change_kept_fraction": round(float(np.mean([r["labelled_change_kept"] for r in ok])), 4),
                "fit_seconds_mean": round(float(np.mean([r["fit_seconds"] for r in ok])), 4)})
    ref = {(r["seed"], r["draw"]): r for r in by["labels"] if "error" not in r}
    for v in [v for v in by if v != "labels"]:
        d = np.array([r["gain"] - ref[r["seed"], r["draw"]]["gain"] for r in by[v]
                      if "error" not in r and (r["seed"], r["draw"]) in ref])
        if len(d):
            out["paired"][f"{v}_minus_labels"] = _mean_ci(d, n_boot=n_boot, on="paired " + on)
    probe_rows = [r for r in by.get(PROBE_VARIANTS[0], []) if "error" not in r]
    if probe_rows:
        out["probe_refit_concepts"] = concept_auroc_summary(probe_rows, n_boot=n_boot, images=images)
    if rows:
        out["base_balanced_acc"] = round(float(np.mean([r["base_balanced_acc"] for r in by["labels"]])), 4)
    return out


def concept_auroc_summary(rows: list[dict], *, n_boot: int = 2000, images: str = "Derm7pt test images") -> dict:
    """What the probe refit did to the answered concepts on the held-out cases: per concept the mean AUROC before
    and after over the draws that answered it, and the per-draw mean over concepts of after - before, with an
    interval over draws; the mean absolute activation change."""
    per: dict[str, list] = {}
    for r in rows:
        for k, ba in r["concept_auroc_held_out"].items():
            per.setdefault(k, []).append(ba)
    d = np.array([np.mean([a - b for b, a in r["concept_auroc_held_out"].values()]) for r in rows
                  if r["concept_auroc_held_out"]])
    on = f"draws (each on its held-out {images}, the concepts answered on its reviewed cases; bootstrap over draws)"
    return {"concepts": {k: {"auroc_before": round(float(np.mean([b for b, _ in v])), 4),
                             "auroc_after": round(float(np.mean([a for _, a in v])), 4), "n_draws": len(v)}
                         for k, v in per.items()},
            "mean_auroc_change": _mean_ci(d, n_boot=n_boot, on=on) if len(d) else None,
            "mean_abs_activation_change": round(float(np.mean([r["mean_abs_activation_change"] for r in rows])), 4)}


def run_review_benchmark(seeds: list[int] | int = 5, *, backbone: str = "efficientnet_lite0_lesion_cc",
                         draws: int = 20, per_class: int = 10, n_random: int = 5, data_root=None,
                         cache_dir="runs/cache/features", n_boot: int = 1000) -> dict:
    """Both parts of the benchmark on Derm7pt, the targets checked (see the module docstring).

    Args:
        seeds: how many (0..N-1) or which seeds; each fits its own model (probe folds) and draws its own cases.
        draws, per_class: reviewed-case draws per seed and their size per class (benign, malignant).

    Returns:
        JSON-ready results: ``protocol``, ``splits``, ``limitations``, ``reviewed_cases`` per order,
        ``adaptation`` per variant with the paired differences, ``per_seed`` fits, ``checks`` against
        :data:`TARGETS`, ``seconds``.
    """
    t0 = time.perf_counter()
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    m, X, C, y, names = load_dataset("derm7pt", backbone, data_root, cache_dir)
    tr, va, te = derm7pt_splits(m)
    site = load_dataset("ph2", backbone, data_root, cache_dir)
    outcomes, rows, per_seed, site_outcomes, site_rows, ceilings = [], [], [], [], [], []
    for seed in seeds:
        ts = time.perf_counter()
        model = fit_concept_cbm(X[tr], C[tr], y[tr], X[va], y[va], names, "derm7pt", seed=seed)
        fit_s = time.perf_counter() - ts
        P, T = model.predict_concepts(X[te]), true_concepts(model, C[te], names)
        outcomes.append(case_outcomes(model, P, T, y[te], seed=seed, n_random=n_random))
        ts = time.perf_counter()
        rows += adaptation_draws(model, P, T, y[te], seed=seed, draws=draws, per_class=per_class, X=X[te])
        P2, T2 = model.predict_concepts(site[1]), site_concepts(model, site[2], site[4])
        site_outcomes.append(case_outcomes(model, P2, T2, site[3], seed=seed, n_random=n_random))
        site_rows += adaptation_draws(model, P2, T2, site[3], seed=seed, draws=draws, per_class=per_class, X=site[1])
        ceilings.append(recalibration_ceiling(model, P2, T2, site[3]))
        per_seed.append({"seed": seed, "concepts": list(model.concept_names_), "fit_s": round(fit_s, 2),
                         "adaptation_s": round(time.perf_counter() - ts, 2),
                         "ph2_answerable": [k for k in model.concept_names_ if k in site[4]]})
        logger.info("seed %d: fitted in %.1f s, %d concepts", seed, fit_s, len(model.concept_names_))
    res = {
        "backbone": backbone, "task": "benign vs malignant", "seeds": seeds, "targets": TARGETS,
        "protocol": {
            "fit": "per seed, fit_concept_cbm (probes + prior-constrained bottleneck of bench interventions) on "
                   "Derm7pt's official train split, bottleneck strength chosen on valid; the test split is never "
                   "seen by the fit; seeds change the probes' cross-validation folds, not the data",
            "reviewer": f"simulated: answers the first concepts of ask_order (the review app's order; it shows "
                        f"{ASKED}) with Derm7pt's expert annotation, present -> 1, absent -> 0",
            "reviewed_cases": f"every test image reviewed; {ANSWERED} concepts answered for the headline, 1..{ASKED} "
                              f"for the curve; orders ask, contribution, random ({n_random} trials); correctness "
                              "averaged over seeds per image, 95 % intervals by paired bootstrap over images",
            "adaptation": f"per seed {draws} draws of {per_class} benign + {per_class} malignant test images reviewed "
                          f"(diagnosis + {ANSWERED} ask-order concepts answered, NaN elsewhere); (a) labels alone, "
                          "(b) labels + concept corrections, (c) corrections alone, all SiteAdaptation.fit_concepts (corrections "
                          "as a per-concept shift); (d) corrections_probes: the answered concepts' probes refitted "
                          "on the reviewed images' features and answers (ProbeRefit, strength 1 fixed a priori: a "
                          "reviewed case weighs as a source training case, under the source probe's own L2), head "
                          "unchanged; (e) labels_corrections_probes: (d), then (a) on the new activations; scored on "
                          "the draw's held-out test images; 95 % intervals by bootstrap over draws"},
        "splits": {"train": int(tr.sum()), "valid": int(va.sum()), "test": int(te.sum()),
                   "unused_unassigned": int((~(tr | va | te)).sum()),
                   "reviewed_cases_scored_on": f"the Derm7pt official test split (all {int(te.sum())} images)",
                   "adaptation_reviewed_per_draw": 2 * per_class,
                   "adaptation_held_out_per_draw": int(te.sum()) - 2 * per_class,
                   "adaptation_scored_on": "held-out = the test images not in the draw (the reviewed ones are never "
                                           "scored); the unadapted model is scored on the same images",
                   "test_ids": m.frame["id"][te].astype(str).tolist()},  # adaptation draws' "reviewed" index these
        "limitations": [
            "Derm7pt is one source: on its test split the 'site' adapted to is the training distribution, so there "
            "is no site shift for concept corrections to repair; the new_site part (PH2) is another hospital, but "
            "its experts annotate only the concepts the two datasets share, and it has 40 melanomas",
            "the reviewer is perfect (the expert annotation, binary); real reviewers disagree with it",
            "adaptation intervals are over draws and seeds; the held-out sets of one seed overlap almost entirely, "
            "so they do not cover the sampling of the test split itself",
            "the probe refit's strength (1) was fixed a priori, not chosen on the held-out images; a look at 0.25 "
            "and 4 on seed 0 (10 draws) gave PH2 gains of the same sign, so the result is not tied to that value",
            "a site-level shift cannot repair PH2's concept errors (recalibration_ceiling: they are per image); the "
            "probe refit is the per-image use of the answers, and it needs the reviewed images' backbone features"],
        "reviewed_cases": reviewed_case_summary(y[te], outcomes, n_boot=n_boot),
        "adaptation": {**adaptation_summary(rows, n_boot=2 * n_boot), "draws": rows},
        "per_seed": per_seed,
        "new_site": {
            "site": "PH2 (Hospital Pedro Hispano, Matosinhos: another hospital and dermoscope; never seen by the fit)",
            "task": "melanoma vs common/atypical nevus (malignant vs benign)", "n_images": int(len(site[3])),
            "n_malignant": int(site[3].sum()),
            "reviewer": "PH2's expert criteria answer the app's questions they cover (the concepts PH2 and Derm7pt "
                        "share: blue-whitish veil, dots/globules, atypical dots/globules, atypical network, "
                        "regression, streaks); an asked concept PH2 does not annotate is left unsure",
            "reviewed_cases": reviewed_case_summary(site[3], site_outcomes, n_boot=n_boot, images="PH2 images"),
            "adaptation": {**adaptation_summary(site_rows, n_boot=2 * n_boot, images="PH2 images"), "draws": site_rows},
            "recalibration_ceiling": _ceiling_summary(ceilings),
        },
    }
    res["checks"] = checks(res)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def site_concepts(model, C: np.ndarray, names: list[str]) -> np.ndarray:
    """Another dataset's expert concepts in the model's concept order ``(n, K)``; NaN for a concept it does not
    annotate (the simulated reviewer leaves those unsure)."""
    T = np.full((len(C), len(model.concept_names_)), np.nan)
    for j, k in enumerate(model.concept_names_):
        if k in names:
            T[:, j] = C[:, names.index(k)]
    return T


def _verdict(est: dict | None, target: float) -> str:
    """``met`` (the 95 % interval above ``target``), ``missed`` (below it), ``cannot tell`` (it straddles it)."""
    if est is None:
        return "not measured"
    lo, hi = est["ci95"]
    return "met" if lo > target else "missed" if hi < target else "cannot tell"


def checks(res: dict) -> dict:
    """The two targets: reviewed-case accuracy gain at 5 (ask order) >= 0.10; corrections + labels beat labels."""
    at5 = res["reviewed_cases"]["ask"]["at_5"]["accuracy_gain"]
    diff = res["adaptation"]["paired"].get("labels_corrections_minus_labels")
    t = TARGETS
    site = res.get("new_site") or {}
    site_paired = (site.get("adaptation") or {}).get("paired", {})
    site_diff = site_paired.get("labels_corrections_minus_labels")
    probe_diff = site_paired.get("labels_corrections_probes_minus_labels")
    probe_d7 = res["adaptation"]["paired"].get("labels_corrections_probes_minus_labels")
    return {"reviewed_case_gain_at_5": at5["gain"],
            "new_site_reviewed_case_gain_at_5": site["reviewed_cases"]["ask"]["at_5"]["accuracy_gain"]["gain"]
            if site else None,
            "new_site_corrections_beat_labels_verdict": _verdict(site_diff, t["corrections_plus_labels_minus_labels"]),
            "new_site_probe_corrections_beat_labels_verdict": _verdict(probe_diff,
                                                                       t["corrections_plus_labels_minus_labels"]),
            "probe_corrections_beat_labels_verdict": _verdict(probe_d7, t["corrections_plus_labels_minus_labels"]),
            "reviewed_case_gain_point_met": at5["gain"] >= t["reviewed_case_accuracy_gain_at_5"],
            "reviewed_case_gain_verdict": _verdict(at5, t["reviewed_case_accuracy_gain_at_5"]),
            "corrections_minus_labels": None if diff is None else diff["gain"],
            "corrections_beat_labels_verdict": _verdict(diff, t["corrections_plus_labels_minus_labels"])}
