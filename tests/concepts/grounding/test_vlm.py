"""Zero-shot VLM grounding mechanics with tiny randomly initialised CLIP models (no weights, no network)."""

import numpy as np
import pytest
import torch

from medcbm.backbones._registry import BackboneSpec
from medcbm.concepts.grounding.vlm import VLMConceptGrounder
from medcbm.data.transforms import PreprocessConfig
from medcbm.errors import ConfigError, DataError

TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CONCEPTS = ["consolidation", "pleural_effusion", "ground_glass_opacity"]


@pytest.fixture(scope="module")
def open_clip_backbone():
    open_clip = pytest.importorskip("open_clip")
    from open_clip import factory

    from medcbm.backbones.loaders import OpenClipFeatureExtractor

    factory._MODEL_CONFIGS["medcbm-tiny-test"] = TINY_OPEN_CLIP  # registered config: open_clip's "configs as data"
    torch.manual_seed(0)
    model = open_clip.create_model("medcbm-tiny-test", pretrained=None).eval()
    tok = open_clip.get_tokenizer("medcbm-tiny-test")
    spec = BackboneSpec(name="open_clip:medcbm-tiny-test", family="open_clip", model="medcbm-tiny-test",
                        weights="none", preprocess=PreprocessConfig(image_size=32))
    return OpenClipFeatureExtractor(model, tok, spec)


@pytest.fixture(scope="module")
def hf_clip():
    transformers = pytest.importorskip("transformers")
    open_clip = pytest.importorskip("open_clip")
    cfg = transformers.CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 16},
        projection_dim=16)
    torch.manual_seed(0)
    # the OpenAI CLIP BPE ships with open_clip: same ids as CLIPTokenizer, and nothing to download
    bpe = open_clip.tokenizer.SimpleTokenizer(context_length=16)
    return transformers.CLIPModel(cfg).eval(), bpe


def _images(bb, n=6):
    torch.manual_seed(1)
    with torch.no_grad():
        return bb.forward_features(torch.randn(n, 3, 32, 32)).numpy()


def test_open_clip_probabilities_shapes_and_contrast(open_clip_backbone):
    X = _images(open_clip_backbone)
    g = VLMConceptGrounder(open_clip_backbone, CONCEPTS, templates=("a chest x-ray showing {concept}",),
                           negative_templates=("a chest x-ray without {concept}",))
    P = g.predict_concepts(X)
    assert P.shape == (6, 3) and np.all((P >= 0) & (P <= 1))
    assert g.concept_names_ == CONCEPTS
    assert g.logit_scale_ == pytest.approx(float(open_clip_backbone.clip_model.logit_scale.detach().exp()))
    # the probability is the softmax over (positive, negative) prompt similarities
    pos = open_clip_backbone.encode_text(["a chest x-ray showing consolidation"]).numpy()[0]
    neg = open_clip_backbone.encode_text(["a chest x-ray without consolidation"]).numpy()[0]
    x = X[0] / np.linalg.norm(X[0])
    cos = np.array([x @ pos / np.linalg.norm(pos), x @ neg / np.linalg.norm(neg)]) * g.logit_scale_
    expect = np.exp(cos[0]) / np.exp(cos).sum()
    assert P[0, 0] == pytest.approx(expect, rel=1e-4)


def test_text_cache_and_invalidation(open_clip_backbone):
    X = _images(open_clip_backbone)
    g = VLMConceptGrounder(open_clip_backbone, CONCEPTS, negative_templates=None, neutral_prompt="a chest x-ray")
    P1 = g.predict_concepts(X)
    g.predict_concepts(X)
    assert g.n_text_encodes_ == 1  # second call used the cached embeddings
    g.set_concepts(CONCEPTS[:2] + ["cardiomegaly"])
    P2 = g.predict_concepts(X)
    assert g.n_text_encodes_ == 2 and P2.shape == (6, 3)
    np.testing.assert_allclose(P2[:, :2], P1[:, :2], rtol=1e-5)
    assert not np.allclose(P2[:, 2], P1[:, 2])


def test_platt_calibration_and_state_roundtrip(open_clip_backbone):
    X = _images(open_clip_backbone, 20)
    g = VLMConceptGrounder(open_clip_backbone, CONCEPTS)
    z = g.decision_function(X)
    C = (z > np.median(z, 0)).astype(float)  # labels that the similarity ranks perfectly
    C[:, 2] = np.nan  # unlabelled concept stays uncalibrated
    g.calibrate(X, C)
    assert g.calib_[0, 0] > 1.0 and tuple(g.calib_[2]) == (1.0, 0.0)
    P = g.predict_concepts(X)
    assert P[C[:, 0] == 1, 0].min() > P[C[:, 0] == 0, 0].max()
    tensors, meta = g.get_state()
    g2 = VLMConceptGrounder.from_state(tensors, meta)
    np.testing.assert_allclose(g2.predict_concepts(X), P, rtol=1e-5)
    with pytest.raises(DataError, match="both positive and negative"):
        g.calibrate(X, np.ones((20, 3)))


def test_hf_clip_model(hf_clip):
    from medcbm.backbones.loaders import HFVisionFeatureExtractor

    model, bpe = hf_clip
    bb = HFVisionFeatureExtractor(model, BackboneSpec(name="hf:tiny", family="hf", model="tiny", weights="tiny"))
    with torch.no_grad():
        X = bb.forward_features(torch.randn(4, 3, 32, 32)).numpy()
    assert X.shape == (4, 16)
    g = VLMConceptGrounder(bb, CONCEPTS, tokenizer=bpe)
    P = g.predict_concepts(X)
    assert P.shape == (4, 3) and np.all((P >= 0) & (P <= 1))
    with pytest.raises(DataError, match="dims"):
        g.predict_concepts(np.ones((2, 8), np.float32))


def test_clear_errors():
    import timm

    from medcbm.backbones.loaders import TimmFeatureExtractor

    cnn = TimmFeatureExtractor(timm.create_model("resnet10t", pretrained=False, num_classes=0),
                               BackboneSpec(name="timm:resnet10t", family="timm", model="resnet10t", weights="none"))
    with pytest.raises(ConfigError, match="no text tower"):
        VLMConceptGrounder(cnn, CONCEPTS)
    with pytest.raises(ConfigError, match="placeholder"):
        VLMConceptGrounder(None, CONCEPTS, templates=("a chest x-ray",))
