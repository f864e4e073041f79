"""``import medcbm``: the facade trains from Manifest objects, and a site-adjusted model never guesses a site."""

from __future__ import annotations

import numpy as np
import pytest

import medcbm
from medcbm.data.manifest import Manifest
from medcbm.errors import ConfigError

FAST = {"grounding": {"backbone": "efficientnet_lite0"}, "nuisance_adjust": True}


@pytest.fixture(scope="module")
def site_model(own_manifest, data_root, feature_cache, tmp_path_factory):
    path, df = own_manifest
    parts = {s: Manifest(df[df["split"] == s].drop(columns="split")) for s in ("train", "val")}
    out = tmp_path_factory.mktemp("api") / "m"
    model = medcbm.train(name="api-test", train=parts["train"], val=parts["val"], recipe="cbm_ph2_only",
                         overrides=FAST, out_dir=out, data_root=data_root, cache_dir=feature_cache)
    return model, df


def test_train_takes_manifest_objects_and_records_no_temporary_path(site_model):
    model, df = site_model
    assert isinstance(model, medcbm.Model) and model.site_adjusted and model.classes == ["benign", "malignant"]
    text = (model.path / "model.json").read_text()
    assert "medcbm-" not in text and "/tmp" not in text  # the temporary manifests lived only while training
    assert set(model._model.offsets_.groups) == set(df.loc[df["split"] == "train", "site"])


def test_a_site_adjusted_model_needs_the_site(site_model):
    model, df = site_model
    test = df[df["split"] == "test"]
    no_site = Manifest(test.drop(columns=["site", "split"]))
    with pytest.raises(ConfigError, match="adjusts concepts per site.*'unknown' for no adjustment"):
        model.predict(no_site)
    unknown = model.predict(no_site, site="unknown")
    site = sorted(model._model.offsets_.groups)[0]
    named = model.predict(no_site, site=site)
    with_column = model.predict(Manifest(test.drop(columns="split")))
    assert len(unknown) == len(named) == len(test)
    assert not np.allclose(unknown["p_malignant"], named["p_malignant"])  # the site's offset is applied
    same_site = (test["site"] == site).to_numpy()
    np.testing.assert_allclose(with_column["p_malignant"][same_site], named["p_malignant"][same_site], rtol=1e-6)
    # the estimator refuses to guess too
    from medcbm.backbones.features import extract_features
    from medcbm.bottleneck.artifacts import backbone_from_meta

    X = extract_features(no_site, backbone_from_meta(model._meta), cache_dir=model.cache_dir, progress=False).X
    with pytest.raises(ConfigError, match="groups='unknown'"):
        model._model.predict_proba(X)
    np.testing.assert_allclose(model._model.predict_proba(X, "unknown")[:, 1], unknown["p_malignant"], rtol=1e-6)
