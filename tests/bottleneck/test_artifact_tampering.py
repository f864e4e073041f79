"""A damaged or edited model artifact is refused with one line naming the file and key — never a traceback,
never a model that silently predicts something else."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest

from medcbm._io import sha256_file
from medcbm.backbones import get_backbone_spec
from medcbm.bottleneck import KnowledgeCBM
from medcbm.bottleneck.artifacts import load_cbm, save_cbm
from medcbm.concepts.grounding.probes import ConceptProbes
from medcbm.errors import ConfigError, DataError, MedcbmError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small real artifact (synthetic features: the contract is about files, not accuracy)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 16))
    C = (X[:, :4] + 0.3 * rng.normal(size=(120, 4)) > 0).astype(float)
    y = (C[:, 0] + C[:, 1] > 1).astype(int)
    probes = ConceptProbes(C_grid=(0.1,), n_folds=3).fit(X, C, ["a", "b", "c", "d"])
    model = KnowledgeCBM(probes, classes=["benign", "malignant"]).fit(X[:80], y[:80], X[80:], y[80:])
    d = tmp_path_factory.mktemp("artifact") / "model"
    save_cbm(model, d, backbone=get_backbone_spec("efficientnet_lite0"))
    return d, model, X


def _copy(saved, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(saved[0], d)
    return d


def _edit_json(d, fn):
    meta = json.loads((d / "model.json").read_text())
    fn(meta)
    (d / "model.json").write_text(json.dumps(meta))


def _resave_tensors(d, fn):
    """Rewrite the weights (keeping their saved identity) and the checksum, as a careful tamperer would."""
    from safetensors import safe_open
    from safetensors.numpy import save

    with safe_open(str(d / "model.safetensors"), framework="numpy") as fh:
        meta, t = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    fn(t)
    (d / "model.safetensors").write_bytes(save(t, metadata=meta))
    _edit_json(d, lambda m: m.update(weights_sha256=sha256_file(d / "model.safetensors")))


def _pickle_weights(d, *, fix_checksum: bool):
    (d / "model.safetensors").write_bytes(pickle.dumps({"bottleneck.W": np.zeros((2, 4))}))
    if fix_checksum:
        _edit_json(d, lambda m: m.update(weights_sha256=sha256_file(d / "model.safetensors")))


CASES = {
    "truncated json": (lambda d: (d / "model.json").write_text((d / "model.json").read_text()[:200]),
                       DataError, "not valid JSON"),
    "json is a list": (lambda d: (d / "model.json").write_text("[]"), ConfigError, "unsupported artifact format"),
    "other format": (lambda d: _edit_json(d, lambda m: m.update(format="x/9")), ConfigError, "unsupported"),
    "missing key": (lambda d: _edit_json(d, lambda m: m.pop("classes")), ConfigError, "key 'classes'"),
    "unknown key": (lambda d: _edit_json(d, lambda m: m.update(surprise=1)), ConfigError, "key 'surprise'"),
    "extra config key": (lambda d: _edit_json(d, lambda m: m["config"].update(bogus=1)), ConfigError,
                         "key 'config.bogus'"),
    "mistyped key": (lambda d: _edit_json(d, lambda m: m.update(concepts="a,b,c,d")), ConfigError, "key 'concepts'"),
    "duplicate classes": (lambda d: _edit_json(d, lambda m: m.update(classes=["x", "x"])), ConfigError, "duplicate"),
    "classes reversed": (lambda d: _edit_json(d, lambda m: m["classes"].reverse()), ConfigError,
                         "weights were saved with"),
    "concepts renamed": (lambda d: _edit_json(d, lambda m: m["concepts"].reverse()), ConfigError,
                         "weights were saved with"),
    "backbone edited": (lambda d: _edit_json(d, lambda m: m.update(
        backbone=get_backbone_spec("efficientnet_lite0_ml").model_dump(mode="json"))), ConfigError,
        "does not match backbone_fingerprint"),
    "backbone and fingerprint edited": (
        lambda d: _edit_json(d, lambda m: (m.update(backbone=get_backbone_spec("efficientnet_lite0_ml").model_dump(
            mode="json")), m.update(backbone_fingerprint=get_backbone_spec("efficientnet_lite0_ml").fingerprint()))),
        ConfigError, "another backbone than the weights"),
    "pickle renamed": (lambda d: _pickle_weights(d, fix_checksum=False), DataError, "checksum"),
    "pickle renamed, checksum fixed": (lambda d: _pickle_weights(d, fix_checksum=True), DataError,
                                       "not a readable safetensors"),
    "wrong-shape weights": (lambda d: _resave_tensors(d, lambda t: t.update({"bottleneck.W": t["bottleneck.W"].T.copy()})),
                            DataError, "has shape"),
    "NaN weights": (lambda d: _resave_tensors(d, lambda t: t["bottleneck.W"].__setitem__((0, 0), np.nan)),
                    DataError, "non-finite"),
    "missing tensor": (lambda d: _resave_tensors(d, lambda t: t.pop("bottleneck.b")), DataError, "missing"),
    "unknown grounder": (lambda d: _edit_json(d, lambda m: m["grounder"].update(kind="nope")), MedcbmError, "nope"),
    "weights file gone": (lambda d: (d / "model.safetensors").unlink(), DataError, "not a medcbm model folder"),
    "domain threshold edited": (lambda d: _edit_json(d, lambda m: m["feature_domain"].update(threshold=-1)),
                                ConfigError, "key 'feature_domain.threshold'"),
    "domain mean of another width": (lambda d: _resave_tensors(d, lambda t: t.update(
        {"domain.feature_mean": t["domain.feature_mean"][:8].copy()})), DataError, "has shape"),
    "domain mean gone": (lambda d: _resave_tensors(d, lambda t: t.pop("domain.feature_mean")), DataError,
                         "'domain.feature_mean' is missing"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_artifact_is_refused_with_one_line(saved, tmp_path, case):
    damage, error, message = CASES[case]
    d = _copy(saved, tmp_path)
    damage(d)
    with pytest.raises(error, match=message) as exc:
        load_cbm(d)
    assert "\n" not in str(exc.value)


def test_an_intact_artifact_still_loads_and_predicts_the_same(saved):
    d, model, X = saved
    again, meta = load_cbm(d)
    np.testing.assert_allclose(again.predict_proba(X), model.predict_proba(X), rtol=1e-6)
    assert meta["classes"] == ["benign", "malignant"]


def test_an_artifact_saved_before_the_domain_guard_loads_with_the_guard_off(saved, tmp_path, caplog):
    d = _copy(saved, tmp_path)
    _resave_tensors(d, lambda t: t.pop("domain.feature_mean"))
    _edit_json(d, lambda m: m.pop("feature_domain"))
    with caplog.at_level("DEBUG", logger="medcbm.bottleneck.domain"):
        old, _ = load_cbm(d)
        assert old.feature_domain_ is None
    assert "domain guard is off" in caplog.text and not [r for r in caplog.records if r.levelname == "WARNING"]
    np.testing.assert_allclose(old.predict_proba(saved[2]), saved[1].predict_proba(saved[2]), rtol=1e-6)
    assert load_cbm(saved[0])[0].feature_domain_.scores(saved[2]).shape == (120,)  # the intact artifact keeps its summary
