"""Adapter contracts on a toy CBM whose 'features' are its concept probabilities (fast, synthetic)."""

import numpy as np
import pytest
from sklearn.base import clone

from medcbm.adapt import ADAPTERS, AdaptedCBM, ConceptEdit, create_adapter, list_adapters
from medcbm.adapt.selection import shot_folds
from medcbm.errors import ConfigError, DataError


class ToyCBM:
    """Just enough of a fitted KnowledgeCBM: features are concept probabilities, 2 classes, 6 concepts.

    Concept 0 is a site artefact the source model learned to read as malignant; concepts 1-3 are real
    malignant evidence, 4-5 benign evidence.
    """

    classes = ["benign", "malignant"]
    concept_names_ = [f"c{j}" for j in range(6)]

    def __init__(self):
        sign = np.array([1, 1, 1, 1, -1, -1], np.float32)
        self.W_ = np.stack([-sign, sign]) * np.array([1.5, 1, 1, 1, 1, 1], np.float32)
        self.b_ = np.zeros(2, np.float32)
        self.p_mean_ = np.full(6, 0.5, np.float32)
        self.p_scale_ = np.full(6, 0.2, np.float32)
        self.prior_ = np.stack([-sign, sign])
        self.class_means_ = np.array([[0.4, 0.4, 0.4, 0.4, 0.6, 0.6], [0.6, 0.6, 0.6, 0.6, 0.4, 0.4]], np.float32)
        self.offsets_ = None

    def predict_concepts(self, X, groups=None):
        return np.asarray(X, np.float32)

    def concept_inputs(self, P):
        # The toy head has no clipping range: inputs are plain standardised probabilities.
        return (np.asarray(P, np.float32) - self.p_mean_) / self.p_scale_


def new_site(n_per_class: int, seed: int):
    """Target images: the artefact concept fires on benign images, real evidence a little weaker."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n_per_class)
    P = np.empty((len(y), 6), np.float32)
    P[:, 0] = np.where(y == 0, 0.75, 0.35) + rng.normal(0, 0.05, len(y))
    P[:, 1:4] = np.where(y[:, None] == 1, 0.56, 0.44) + rng.normal(0, 0.08, (len(y), 3))
    P[:, 4:6] = np.where(y[:, None] == 0, 0.56, 0.44) + rng.normal(0, 0.08, (len(y), 2))
    return np.clip(P, 0, 1), y


def bal_acc(proba, y):
    pred = proba.argmax(1)
    return np.mean([(pred[y == c] == c).mean() for c in (0, 1)])


@pytest.mark.parametrize("name", [n for n in list_adapters()  # site and recentre: tests/adapt/test_site.py
                                  if not getattr(ADAPTERS.get(n), "uses_unlabelled", False)])
def test_every_adapter_fits_returns_self_and_leaves_the_base_alone(name):
    model = ToyCBM()
    W, b = model.W_.copy(), model.b_.copy()
    P, y = new_site(6, 0)
    a = create_adapter(name, model)
    params = a.get_params()
    assert a.fit(P, y) is a
    assert a.get_params() == params and clone(a).get_params().keys() == params.keys()
    assert np.array_equal(model.W_, W) and np.array_equal(model.b_, b)
    proba = a.predict_proba(P)
    assert proba.shape == (12, 2) and np.allclose(proba.sum(1), 1)
    assert isinstance(a.adapted_, AdaptedCBM) and a.fit_seconds_ < 1.0
    assert a.selection_.table and (a.selection_.changed or "no leave-one-out gain" in a.selection_.reason)
    if not a.selection_.changed:  # the guard returns the model unchanged
        assert not a.edit_.changed(ConceptEdit.identity(model)) and not a.changes_


def test_masking_finds_the_site_artefact_and_helps():
    model = ToyCBM()
    P, y = new_site(8, 1)
    Pq, yq = new_site(200, 2)
    a = create_adapter("mask", model).fit(P, y)
    assert a.selection_.changed and a.selection_.gain > 0
    assert [c.concept for c in a.changes_ if c.action == "masked"][0] == "c0"
    unadapted = AdaptedCBM(model, ConceptEdit.identity(model)).predict_proba(Pq)
    assert bal_acc(a.predict_proba(Pq), yq) > bal_acc(unadapted, yq) + 0.05


def test_source_mean_fill_is_zeroing_the_weight():
    model = ToyCBM()
    P, y = new_site(8, 1)
    a = create_adapter("mask", model, n_mask=1, guard=False).fit(P, y)
    j = model.concept_names_.index(a.changes_[0].concept)
    Z = (P - model.p_mean_) / model.p_scale_
    W = model.W_.copy()
    W[:, j] = 0
    assert np.allclose(a.adapted_.decision_function_from_concepts(P), Z @ W.T + model.b_, atol=1e-5)
    z0 = create_adapter("prune", model, n_mask=1, guard=False).fit(P, y).adapted_.decision_function_from_concepts(P)
    assert not np.allclose(z0, Z @ W.T + model.b_)  # PCBM pruning (raw score 0) is a different edit


def test_guard_keeps_a_model_that_needs_nothing():
    model = ToyCBM()
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 4)
    P = np.where(y[:, None] == 1, model.class_means_[1], model.class_means_[0]) + rng.normal(0, 0.01, (8, 6))
    a = create_adapter("tfti", model).fit(P, y)
    assert not a.selection_.changed and "left unchanged" in a.selection_.reason
    assert np.allclose(a.predict_proba(P), AdaptedCBM(model, ConceptEdit.identity(model)).predict_proba(P))


def test_amplify_scales_a_weak_discriminative_concept_about_the_site_centre():
    model = ToyCBM()
    P, y = new_site(8, 4)
    a = create_adapter("amplify", model, n_amplify=1, factor=2.0, guard=False).fit(P, y)
    (c,) = a.changes_
    assert c.action == "amplified" and c.factor == 2.0 and c.statistic > 0 and c.concept != "c0"


def test_signed_refit_respects_the_prior():
    model = ToyCBM()
    P, y = new_site(8, 1)
    a = create_adapter("refit_signed", model, strength=0.01, guard=False).fit(P, y)
    assert np.all(a.edit_.W * model.prior_ >= -1e-6)
    u = create_adapter("refit", model, strength=0.01, guard=False).fit(P, y)
    assert (u.edit_.W * model.prior_ < 0).any()  # unconstrained: the artefact's sign flips


def test_bad_support_sets_get_one_line_errors():
    model = ToyCBM()
    P, y = new_site(4, 0)
    with pytest.raises(DataError, match="single class"):
        create_adapter("mask", model).fit(P[:4], y[:4])
    with pytest.raises(DataError, match=r"support labels \['melanoma'\] are not classes of the model"):
        create_adapter("mask", model).fit(P, ["benign"] * 4 + ["melanoma"] * 4)
    with pytest.raises(DataError, match="backbone fingerprint"):
        a = create_adapter("mask", model)
        model.backbone_fingerprint_ = "aaa"
        a.fit(P, y, backbone_fingerprint="bbb")
    with pytest.raises(ConfigError, match="adapter 'mask'"):
        create_adapter("mask", model, n_amplify=2)
    with pytest.raises(ConfigError, match="fill 'mean' is not one of"):
        create_adapter("mask", model, fill="mean").fit(P, y)


def test_shot_folds():
    y = np.array([0, 0, 0, 1, 1, 1])
    assert shot_folds(y).tolist() == [0, 1, 2, 0, 1, 2]
    assert shot_folds(np.array([0, 1])).tolist() == [0, 1]
    assert len(np.unique(shot_folds(np.repeat([0, 1], 16)))) == 8


def test_registry_lists_every_adapter_with_a_description():
    assert {"mask", "amplify", "tfti", "bias", "prune", "refit", "refit_signed", "restandardise"} <= set(list_adapters())
    assert all(ADAPTERS.meta(n)["description"] for n in list_adapters())
