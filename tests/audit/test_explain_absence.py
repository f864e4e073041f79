"""A concept that pushes the decision because it reads less present than usual is labelled "by its absence", in
the explanation, the audit page and the review page."""

from __future__ import annotations

import numpy as np


def test_by_absence_marks_concepts_that_push_by_reading_below_the_mean(audit_model, ham_own, feature_cache):
    from medcbm.adapt.store import load_model
    from medcbm.audit.explain import explain_from_concepts
    from medcbm.audit.render import TEMPLATE
    from medcbm.backbones.features import extract_features
    from medcbm.bottleneck.artifacts import backbone_from_meta
    from medcbm.bottleneck.metadata import model_groups
    from medcbm.data.manifest import load_manifest

    path, df = ham_own
    model, meta = load_model(audit_model)
    m = load_manifest(path)
    feats = extract_features(m.subset(range(12)), backbone_from_meta(meta), cache_dir=feature_cache, progress=False)
    P = model.predict_concepts(feats.X, model_groups(model, feats.manifest.frame, meta))
    Z = model.concept_inputs(P.astype(np.float32))
    cases = explain_from_concepts(model, P, case_ids=[str(i) for i in range(len(P))])
    names = list(model.concept_names_)
    seen = {True: 0, False: 0}
    for i, case in enumerate(cases):
        c = model.classes.index(case.predicted)
        s = 1 - c
        for e in case.concepts:
            j = names.index(e.concept)
            dw = model.W_[c, j] - model.W_[s, j]
            if abs(dw) < 1e-9 or abs(Z[i, j]) < 1e-9:
                assert not e.by_absence
                continue
            assert e.by_absence == bool(Z[i, j] < 0), (e.concept, Z[i, j], dw)  # below the training mean
            seen[e.by_absence] += 1
    assert seen[True] and seen[False]
    assert "(by its absence)" in TEMPLATE
