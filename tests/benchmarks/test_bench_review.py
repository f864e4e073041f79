"""`bench review` on real PH2 (global features shared with other tests): the simulated reviewer does what the review
app does, helps on the reviewed cases, and the adaptation part never scores a reviewed case."""

from __future__ import annotations

import numpy as np
import pytest

from medcbm.adapt.probe_refit import ProbeRefit
from medcbm.audit.interventions import ask_order, concept_ranks, intervention_curves
from medcbm.benchmarks.bench_interventions import fit_concept_cbm, load_dataset, true_concepts
from medcbm.benchmarks.bench_review import (ANSWERED, ASKED, PROBE_VARIANTS, VARIANTS, _variants, adaptation_draws,
                                            adaptation_summary, answerable_first, case_outcomes, paired_gain_summary,
                                            recalibration_ceiling, reviewer_answers)
from medcbm.review import session


@pytest.fixture(scope="module")
def ph2_cbm(data_root, feature_cache):
    """A PH2 concept CBM fitted on 120 images (30 to choose its strength) and the 50 it never saw."""
    _, X, C, y, names = load_dataset("ph2", "efficientnet_lite0", data_root, feature_cache)
    order = np.random.default_rng(0).permutation(len(y))
    tr, va, te = order[:120], order[120:150], order[150:]
    model = fit_concept_cbm(X[tr], C[tr], y[tr], X[va], y[va], names, "ph2")
    return model, model.predict_concepts(X[te]), true_concepts(model, C[te], names), y[te], X[te]


def test_simulated_answers_are_the_apps_and_help_the_reviewed_cases(ph2_cbm):
    model, P, T, y, _ = ph2_cbm
    K = len(model.concept_names_)
    out = case_outcomes(model, P, T, y, seed=0, n_random=3, max_asked=K)
    base = model.predict_proba_from_concepts(P).argmax(1) == y
    all_true = intervention_curves(model, P, T, y, n_random=1).all_true_accuracy
    for order, c in out.items():
        assert c.shape == (len(y), K + 1)
        assert np.array_equal(c[:, 0], base), order  # nothing answered: the model's own reading
        assert c[:, K].mean() == pytest.approx(all_true), order  # everything answered: the truth throughout
    # the app's path: each asked concept answered present/absent through the model's intervention API
    for i in range(len(y)):
        asked = [model.concept_names_[j] for j in ask_order(model, P[i])[:ANSWERED]]
        values = {k: session.ANSWER_VALUE["present" if T[i, model.concept_names_.index(k)] else "absent"] for k in asked}
        right = model.intervene_concepts(P[i:i + 1], values).argmax(1)[0] == y[i]
        assert right == bool(out["ask"][i, ANSWERED]), i
    s = paired_gain_summary(y, out["ask"][:, 0], out["ask"][:, ANSWERED], n_boot=200, images="PH2 held-out images")
    g = s["accuracy_gain"]
    assert g["gain"] == pytest.approx(s["accuracy_after"] - s["accuracy_before"], abs=1e-3)
    assert g["ci95"][0] <= g["gain"] <= g["ci95"][1]
    # a real outcome: five answers from the truth, asked in the app's order, lift these held-out cases
    assert g["gain"] > 0.02, s


def test_reviewer_answers_only_the_asked_concepts():
    assert ASKED == session.ASKED  # the benchmark's curve stops where the app stops asking
    T = np.array([[1, 0, 1, 0], [0, 0, 1, 1]], float)
    rank = np.array([[2, 0, 1, 3], [3, 1, 0, 2]])
    R = reviewer_answers(T, rank, 2)
    assert np.array_equal(np.isnan(R), [[False, True, False, True], [True, False, True, False]])
    assert R[0, 2] == 1 and R[0, 0] == 1 and R[1, 3] == 1 and R[1, 1] == 0


def test_adaptation_scores_only_cases_not_reviewed(ph2_cbm):
    model, P, T, y, X = ph2_cbm
    assert len(adaptation_draws(model, P, T, y, seed=0, draws=1, per_class=5)) == 3  # no features: no probe refit
    rows = adaptation_draws(model, P, T, y, seed=0, draws=2, per_class=5, X=X)
    assert [r["variant"] for r in rows[:5]] == list(VARIANTS) and len(rows) == 10
    base = model.predict_proba_from_concepts(P)
    for r in rows:
        reviewed = np.asarray(r["reviewed"])
        assert len(set(reviewed)) == 10 and np.bincount(y[reviewed]).tolist() == [5, 5]
        assert r["n_held_out"] == len(y) - 10
        held = np.setdiff1d(np.arange(len(y)), reviewed)
        assert r["base_balanced_acc"] == pytest.approx(
            np.mean([(base[held].argmax(1) == c)[y[held] == c].mean() for c in (0, 1)]))
        assert "error" not in r, r
        if r["variant"] == "corrections":  # answered concepts always shift: the model changes, no label step runs
            assert r["changed"] and not r["labelled_change_kept"]
    s = adaptation_summary(rows, n_boot=200)
    d = s["paired"]["labels_corrections_minus_labels"]
    gains = {(r["draw"], r["variant"]): r["gain"] for r in rows}
    assert d["gain"] == pytest.approx(np.mean([gains[k, "labels_corrections"] - gains[k, "labels"] for k in (0, 1)]), abs=1e-4)
    assert d["verdict"] in {"gain", "loss", "cannot tell"} and d["n"] == 2
    assert s["variants"]["corrections"]["changed_fraction"] == 1.0
    # the probe refit: the answered concepts' held-out activations move per image, and what it did is scored
    for r in rows:
        if r["variant"] in PROBE_VARIANTS:
            assert r["changed"] and r["mean_abs_activation_change"] > 0 and r["concept_auroc_held_out"], r
            assert all(0 <= v <= 1 for ba in r["concept_auroc_held_out"].values() for v in ba)
    pd = s["paired"]["labels_corrections_probes_minus_labels"]
    assert pd["gain"] == pytest.approx(np.mean([gains[k, "labels_corrections_probes"] - gains[k, "labels"]
                                                for k in (0, 1)]), abs=1e-4)
    pc = s["probe_refit_concepts"]
    assert set(pc["concepts"]) <= set(model.concept_names_) and pc["mean_auroc_change"]["n"] == 2


def test_probe_variant_reads_the_refitted_activations(ph2_cbm):
    """corrections_probes is the unchanged head on ProbeRefit's activations: its held-out score is theirs."""
    model, P, T, y, X = ph2_cbm
    R = reviewer_answers(T, answerable_first(concept_ranks(model, P, "ask"), T), ANSWERED)
    sel = np.arange(10)
    a, Pa = _variants(model, P, y, R, sel, X)["corrections_probes"]()
    Pn = ProbeRefit(model).fit(X[sel], R[sel]).predict_concepts(X)
    assert np.allclose(Pa, Pn) and not np.allclose(Pn, P)
    assert np.allclose(a.adapted_.predict_proba_from_concepts(Pa), model.predict_proba_from_concepts(Pn))
    unanswered = ~(~np.isnan(R[sel])).any(0)
    assert np.array_equal(Pn[:, unanswered], P[:, unanswered])


def test_recalibration_ceiling_is_the_shift_from_every_answer(ph2_cbm):
    model, P, T, y, _ = ph2_cbm
    c = recalibration_ceiling(model, P, T, y)
    base = model.predict_proba_from_concepts(P)
    assert c["balanced_acc_base"] == pytest.approx(np.mean([(base.argmax(1) == k)[y == k].mean() for k in (0, 1)]), abs=1e-4)
    assert c["n_images"] == len(y) and c["concepts_answered"] == int((~np.isnan(T)).any(0).sum())
    assert c["shift_gain"] == pytest.approx(c["balanced_acc_shifted"] - c["balanced_acc_base"], abs=2e-4)
    # answering every concept on every case is the truth throughout: the interventions' all-true accuracy
    answered = model.predict_proba_from_concepts(np.where(np.isnan(T), P, T)).argmax(1)
    assert c["balanced_acc_every_case_answered"] == pytest.approx(
        np.mean([(answered == k)[y == k].mean() for k in (0, 1)]), abs=1e-4)
    assert "in-sample" in c["scored_on"]
