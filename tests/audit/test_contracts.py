"""Fast contract tests on a small synthetic CBM: explanations, interventions, curves, global view, privacy."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from medcbm.audit.explain import explain_from_concepts
from medcbm.audit.global_view import activation_view, calibration, concept_weights
from medcbm.audit.interventions import (concept_ablation, intervene, intervene_concepts, intervention_curves,
                                        normalised_auc, what_if)
from medcbm.audit.privacy import CaseIds, redacted_logs
from medcbm.errors import ConfigError, DataError

NAMES = ["veil", "streaks", "network", "noise"]


@pytest.fixture(scope="module")
def toy():
    """Features whose first three directions carry three concepts; malignant = veil or streaks, minus network."""
    from medcbm.bottleneck.estimator import KnowledgeCBM
    from medcbm.bottleneck.trainer import BottleneckConfig
    from medcbm.concepts.grounding.probes import ConceptProbes

    rng = np.random.default_rng(0)
    n = 400
    C = (rng.random((n, 4)) < 0.4).astype(float)
    X = (np.c_[C, rng.normal(size=(n, 4))] * 2 + rng.normal(size=(n, 8))).astype(np.float32)
    y = ((C[:, 0] + C[:, 1] - C[:, 2] + 0.3 * rng.normal(size=n)) > 0.5).astype(int)
    probes = ConceptProbes(C_grid=(0.1,), n_folds=3, min_auc=0.0).fit(X[:300], C[:300], NAMES)
    prior = {"malignant": {"veil": 1, "streaks": 1, "network": -1}, "benign": {"veil": -1, "streaks": -1, "network": 1}}
    model = KnowledgeCBM(probes, classes=["benign", "malignant"], prior=prior,
                         config=BottleneckConfig(max_epochs=400)).fit(X[:240], y[:240], X[240:300], y[240:300])
    return model, X[300:], C[300:], y[300:]


def test_intervene_moves_the_prediction_the_prior_way_and_rejects_bad_input(toy):
    model, X, C, y = toy
    on = intervene(model, X, {"veil": 1.0})[:, 1]
    off = intervene(model, X, {"veil": 0.0})[:, 1]
    assert (on > off).all()
    P = model.predict_concepts(X)
    P2 = P.copy()
    P2[:, 2] = 0.25
    assert np.allclose(intervene_concepts(model, P, {"network": 0.25}), model.predict_proba_from_concepts(P2))
    with pytest.raises(ConfigError, match=r"concepts \['vail'\] the model does not have"):
        intervene(model, X, {"vail": 1.0})
    with pytest.raises(DataError, match=r"in \[0, 1\].*'veil': 1.5"):
        intervene(model, X, {"veil": 1.5})
    with pytest.raises(DataError, match="network"):
        intervene(model, X, {"network": float("nan")})


def test_explanations_add_up_to_the_logits_and_survive_missing_bank_entries(toy):
    model, X, C, y = toy
    P = model.predict_concepts(X[:5])
    model.recipe_ = {"concept_links": {"veil": [{"bank": "b", "concept_id": "bwv", "name": "blue-whitish veil",
                                                "question": "Is there a blue-whitish veil?", "evidence": [
                                                    {"class": "mel", "prior": 1, "doc_id": "d1", "chunk_id": "d1#0",
                                                     "sentence": "A veil suggests melanoma."}]}],
                                       "streaks": [{"bank": "b"}]}}  # malformed: skipped, not raised
    try:
        exps = explain_from_concepts(model, P, case_ids=[f"c{i}" for i in range(5)], y=y[:5])
    finally:
        del model.recipe_
    logits = model.decision_function_from_concepts(P)
    for i, e in enumerate(exps):
        for a, cls in enumerate(model.classes):
            total = sum(k.contributions[cls] for k in e.concepts) + model.b_[a]
            assert total == pytest.approx(logits[i, a], abs=1e-4)
        assert e.predicted == model.classes[int(logits[i].argmax())]
        assert e.correct == (e.true_label == e.predicted)
        margins = [abs(k.margin_contribution) for k in e.concepts]
        assert margins == sorted(margins, reverse=True)
        by = {k.concept: k for k in e.concepts}
        assert by["veil"].has_bank_entry and by["veil"].question == "Is there a blue-whitish veil?"
        assert by["veil"].links[0].citations[0].doc_id == "d1" and by["veil"].display_name == "blue-whitish veil"
        assert not by["noise"].has_bank_entry and "has no concept-bank entry" in by["noise"].question
        assert not by["streaks"].has_bank_entry
        assert by["noise"].agreement == "no prior"
    with pytest.raises(DataError, match="2 case ids for 5 rows"):
        explain_from_concepts(model, P, case_ids=["a", "b"])


def test_intervention_curves_and_ablation(toy):
    model, X, C, y = toy
    P = model.predict_concepts(X)
    res = intervention_curves(model, P, C, y, n_random=3, seed=1)
    K = len(NAMES)
    assert set(res.curves) == {"random", "uncertainty", "contribution", "oracle"}
    assert all(len(c) == K + 1 for c in res.curves.values()) and len(res.random_trials) == 3
    for name, c in res.curves.items():
        assert (name, c[0], c[-1]) == (name, pytest.approx(res.base_accuracy), pytest.approx(res.all_true_accuracy))
    # one greedy step with the labels is at least as good as any other single correction (binary task)
    assert res.curves["oracle"][1] >= max(res.curves[o][1] for o in ("uncertainty", "contribution")) - 1e-12
    assert res.auc["oracle"] >= res.auc["random"]
    assert res.auc == {o: pytest.approx(normalised_auc(c)) for o, c in res.curves.items()}
    assert intervention_curves(model, P, C, y, n_random=3, seed=1).curves == res.curves  # seeded
    with pytest.raises(DataError, match="NaN"):
        intervention_curves(model, P, np.where(C > 0, np.nan, 0), y)
    with pytest.raises(ConfigError, match="unknown intervention orders"):
        intervention_curves(model, P, C, y, orders=["alphabetical"])
    ab = concept_ablation(model, P, y)
    assert ab.order[0] in ("veil", "streaks", "network") and ab.cumulative[0] == res.base_accuracy
    assert ab.single["veil"] < ab.base_accuracy  # the strongest concept matters
    assert normalised_auc([0.5, 0.5, 0.5]) == 0.5


def test_what_if_flips_concepts_one_at_a_time(toy):
    model, X, C, y = toy
    p = model.predict_concepts(X[:1])[0]
    rows = what_if(model, p, ["veil", "network"])
    assert [r.concept for r in rows] == ["veil", "network"]
    for r in rows:
        assert r.to_value == (0.0 if r.from_value >= 0.5 else 1.0)


def test_global_view_flags_an_injected_site_shift(toy):
    model, X, C, y = toy
    P = model.predict_concepts(X)
    site = np.where(np.arange(len(P)) % 2 == 0, "north", "south")
    P2 = P.copy()
    P2[site == "south", 1] = np.clip(P2[site == "south", 1] + 0.4, 0, 1)
    frame = pd.DataFrame({"site": site, "sex": "F", "age": 50.0})
    view = activation_view(model, P2, frame, y)
    flagged = {(f.value, f.concept) for f in view.flags}
    assert ("south", "streaks") in flagged and ("north", "streaks") in flagged
    assert not {c for _, c in flagged} - {"streaks"}
    assert view.columns == ["site"] and view.within_class
    cal = calibration(y, model.predict_proba_from_concepts(P))
    assert sum(b.n for b in cal.bins) == len(y) and 0 <= cal.ece <= 1
    w = concept_weights(model, P)
    assert {x.concept for x in w} == set(NAMES) and w[0].importance >= w[-1].importance
    assert {x.concept: x.agreement["malignant"] for x in w}["noise"] == "no prior"


def test_case_ids_are_salted_hashes_and_logs_are_redacted(caplog):
    a, b = CaseIds("a-secret-salt"), CaseIds("a-secret-salt")
    assert a("ISIC_0001") == b("ISIC_0001") != CaseIds("other-salt-x")("ISIC_0001")
    assert "ISIC" not in a("ISIC_0001") and a("ISIC_0001").startswith("case-")
    assert CaseIds()("x") != CaseIds()("x")  # random salt per report
    assert CaseIds(raw=True)("ISIC_0001") == "ISIC_0001"
    with pytest.raises(ConfigError, match="salt"):
        CaseIds("short")
    log = logging.getLogger("medcbm.data.manifest")
    with caplog.at_level(logging.INFO), redacted_logs(["/data/hospital/patient_7.jpg", "/data/hospital"]):
        log.warning("skipping row 3 %s: image file not found", "/data/hospital/patient_7.jpg")
        log.warning("folder %s", "/data/hospital")
    assert "hospital" not in caplog.text and caplog.text.count("<redacted>") == 2


def test_charts_are_deterministic_offline_svg():
    from medcbm.audit import charts

    a = charts.curves_chart({"random": [0.5, 0.6, 0.7], "oracle": [0.5, 0.9, 0.7]})
    b = charts.curves_chart({"random": [0.5, 0.6, 0.7], "oracle": [0.5, 0.9, 0.7]})
    assert a == b and a.startswith("<svg role=\"img\" aria-label=")
    assert "<image" not in a and "href=\"http" not in a


def test_each_case_cites_the_passage_its_weight_argues_for(toy):
    model, X, C, y = toy
    P = model.predict_concepts(X[:8])
    ev = [{"doc_id": "nv1", "sentence": "A veil-like blue is seen in blue nevi.", "stance": "nv",
           "support": {"benign": 1, "malignant": -1}},
          {"doc_id": "mel1", "sentence": "A veil is a major melanoma criterion.", "stance": "mel",
           "support": {"benign": -1, "malignant": 1}}]
    model.recipe_ = {"concept_links": {"veil": [{"bank": "b", "concept_id": "bwv", "name": "veil",
                                                 "question": "Is there a veil?", "evidence": ev}]}}
    try:
        exps = explain_from_concepts(model, P, case_ids=[f"c{i}" for i in range(8)])
    finally:
        del model.recipe_
    j = NAMES.index("veil")
    assert {e.predicted for e in exps} == {"benign", "malignant"}  # both directions are exercised
    for e in exps:
        veil = next(k for k in e.concepts if k.concept == "veil")
        sign = int(np.sign(model.W_[model.classes.index(e.predicted), j]))
        assert veil.citation.support[e.predicted] == sign
        assert veil.counter_citation.support[e.predicted] == -sign
