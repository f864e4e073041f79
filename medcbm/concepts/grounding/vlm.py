"""Zero-shot concept grounding by image-text similarity in a CLIP space (LaBo / Yan et al.).

For each concept, prompt templates give a *positive* text embedding ("a chest x-ray showing {concept}")
and a *reference* one: either the negated prompt ("a chest x-ray without {concept}") or one neutral
prompt ("a chest x-ray"). The concept probability is a two-way softmax of the scaled cosines,
``sigmoid(scale * (cos(img, pos) - cos(img, ref)))``, with ``scale`` the model's own logit scale unless
given. With a few labelled images, :meth:`VLMConceptGrounder.calibrate` fits per-concept Platt scaling.

Image features are what the backbone's ``forward_features`` returns (``medcbm.backbones.features``
caches them): for ``open_clip:`` backbones the projected image embedding, for ``hf:`` CLIP models
``get_image_features``; their width must equal the text embedding's.

Using real weights (nothing is downloaded unless you opt in)::

    # a Hugging Face hub open_clip model: downloads once, needs --allow-download / allow_download=True
    medcbm features --backbone open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 --allow-download
    # the same model from a local folder (open_clip_config.json + open_clip_pytorch_model.bin/.safetensors)
    medcbm features --backbone open_clip:local-dir:/models/biomedclip

    from medcbm.backbones import create_backbone
    bb = create_backbone("open_clip:local-dir:/models/biomedclip")          # offline
    g = VLMConceptGrounder(bb, ["consolidation", "pleural effusion"],
                           templates=("a chest x-ray showing {concept}",),
                           negative_templates=("a chest x-ray without {concept}",))
    P = g.predict_concepts(X)            # X: features of the same backbone, (n, embed_dim)

An ``hf:`` CLIP folder works the same way (``create_backbone("hf:/models/clip-vit-base-patch32")``);
its tokenizer is loaded from that folder, or pass ``tokenizer=``.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Sequence

import numpy as np

from medcbm.concepts.grounding.base import ConceptGrounder, register_grounder, apply_platt, check_features, fit_platt
from medcbm.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATES = ("a medical image showing {concept}",)
DEFAULT_NEGATIVE_TEMPLATES = ("a medical image without {concept}",)
TextEncoder = Callable[[list[str]], np.ndarray]


def _hf_text_encoder(model, tokenizer) -> TextEncoder:
    import torch

    if tokenizer is None:
        from transformers import CLIPTokenizer

        src = getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
        try:
            tokenizer = CLIPTokenizer.from_pretrained(src, local_files_only=True) if src else None
        except OSError:
            tokenizer = None
        if tokenizer is None:
            raise ConfigError("this Hugging Face CLIP model has no local tokenizer; pass tokenizer= "
                              "(a CLIPTokenizer or a callable texts -> input_ids tensor)")

    def encode(texts: list[str]) -> np.ndarray:
        if callable(tokenizer) and not hasattr(tokenizer, "pad_token"):
            ids = tokenizer(texts)
            inputs = {"input_ids": torch.as_tensor(ids)}
        else:
            inputs = dict(tokenizer(texts, padding=True, return_tensors="pt"))
        with torch.no_grad():
            out = model.get_text_features(**inputs)
        out = out if isinstance(out, torch.Tensor) else out.pooler_output
        return out.float().numpy()

    return encode


def text_encoder_for(backbone, tokenizer=None) -> tuple[TextEncoder, float | None]:
    """``(texts -> embeddings, model logit scale or None)`` for an open_clip or HF CLIP backbone.

    Accepts medcbm feature extractors (``OpenClipFeatureExtractor``, ``HFVisionFeatureExtractor``), a bare
    open_clip model (with ``tokenizer``) or a bare ``transformers.CLIPModel``.

    Raises:
        ConfigError: the backbone has no text tower (e.g. a timm CNN).
    """
    import torch

    inner = getattr(backbone, "clip_model", None) or getattr(backbone, "model", None) or backbone
    scale = getattr(inner, "logit_scale", None)
    scale = float(scale.detach().exp()) if isinstance(scale, torch.Tensor) else None
    if hasattr(backbone, "encode_text") and hasattr(backbone, "clip_model"):
        return (lambda texts: backbone.encode_text(texts).float().numpy()), scale
    if hasattr(inner, "get_text_features"):
        return _hf_text_encoder(inner, tokenizer), scale
    if hasattr(inner, "encode_text"):
        if tokenizer is None:
            raise ConfigError("a bare open_clip model needs tokenizer= (open_clip.get_tokenizer(model_name))")

        def encode(texts: list[str]) -> np.ndarray:
            with torch.no_grad():
                return inner.encode_text(tokenizer(texts)).float().numpy()

        return encode, scale
    name = getattr(getattr(backbone, "spec", None), "name", type(backbone).__name__)
    raise ConfigError(f"backbone '{name}' has no text tower, so it cannot ground concepts zero-shot; use an "
                      "open_clip:... or hf:<CLIP folder> backbone, or train concept probes instead")


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.clip(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12, None)


@register_grounder("vlm_similarity")
class VLMConceptGrounder(ConceptGrounder):
    """Concept probabilities from image-text cosine similarity.

    Args:
        backbone: a backbone with a text tower (see :func:`text_encoder_for`).
        concepts: concept names, or ``{name: phrase used in the prompts}``.
        templates: positive prompt templates with ``{concept}``; embeddings are averaged (prompt ensembling).
        negative_templates: reference prompts per concept; ``None`` uses ``neutral_prompt`` instead.
        neutral_prompt: one concept-free reference prompt (used when ``negative_templates`` is ``None``).
        logit_scale: temperature inverse; default the model's learned logit scale (else 100).
        tokenizer: for HF CLIP models without a local tokenizer.

    Attributes: ``concept_names_``, ``logit_scale_``, ``calib_`` (``(K, 2)`` Platt ``a, b``; identity until
    :meth:`calibrate`), ``n_text_encodes_`` (how often the text tower ran; embeddings are cached per
    concept list and templates).
    """

    def __init__(self, backbone, concepts: Sequence[str] | Mapping[str, str], *,
                 templates: Sequence[str] = DEFAULT_TEMPLATES,
                 negative_templates: Sequence[str] | None = DEFAULT_NEGATIVE_TEMPLATES,
                 neutral_prompt: str = "a medical image", logit_scale: float | None = None, tokenizer=None):
        for t in (*templates, *(negative_templates or ())):
            if "{concept}" not in t:
                raise ConfigError(f"prompt template {t!r} lacks the '{{concept}}' placeholder")
        if not templates:
            raise ConfigError("give at least one prompt template")
        self._encode, model_scale = (None, None) if backbone is None else text_encoder_for(backbone, tokenizer)
        self.templates, self.negative_templates = tuple(templates), negative_templates and tuple(negative_templates)
        self.neutral_prompt = neutral_prompt
        self.logit_scale_ = float(logit_scale or model_scale or 100.0)
        self.n_text_encodes_ = 0
        self._cache: tuple[tuple, np.ndarray, np.ndarray] | None = None
        self.set_concepts(concepts)

    def set_concepts(self, concepts: Sequence[str] | Mapping[str, str]) -> "VLMConceptGrounder":
        """Change the concept list (cached text embeddings are recomputed on next use; calibration reset)."""
        phrases = dict(concepts) if isinstance(concepts, Mapping) else {c: c.replace("_", " ") for c in concepts}
        if not phrases:
            raise ConfigError("the concept list is empty")
        self.concept_names_, self.phrases_ = list(phrases), list(phrases.values())
        self.calib_ = np.tile(np.array([1.0, 0.0], np.float32), (len(phrases), 1))
        return self

    def _key(self) -> tuple:
        return (tuple(self.phrases_), self.templates, self.negative_templates, self.neutral_prompt)

    def _embed(self, templates: Sequence[str]) -> np.ndarray:
        texts = [t.format(concept=p) for p in self.phrases_ for t in templates]
        E = _unit(np.asarray(self._encode(texts), np.float32)).reshape(len(self.phrases_), len(templates), -1)
        return _unit(E.mean(1))

    def text_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit ``(K, D)`` positive and reference embeddings (cached until the concepts or prompts change)."""
        if self._cache is not None and self._cache[0] == self._key():
            return self._cache[1], self._cache[2]
        if self._encode is None:
            raise ConfigError("this grounder was loaded without a backbone and its concepts or prompts changed; "
                              "rebuild it with a backbone to embed the new prompts")
        pos = self._embed(self.templates)
        if self.negative_templates:
            ref = self._embed(self.negative_templates)
        else:
            ref = np.repeat(_unit(np.asarray(self._encode([self.neutral_prompt]), np.float32)), len(pos), 0)
        self.n_text_encodes_ += 1
        self._cache = (self._key(), pos, ref)
        return pos, ref

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Scaled similarity contrast ``scale * (cos(x, pos) - cos(x, ref))``, ``(n, K)``."""
        pos, ref = self.text_embeddings()
        X = _unit(check_features(X, dim=pos.shape[1]))
        return self.logit_scale_ * (X @ pos.T - X @ ref.T)

    def predict_concepts(self, X: np.ndarray) -> np.ndarray:
        z = self.decision_function(X)
        return apply_platt(z, self.calib_)

    def calibrate(self, X: np.ndarray, C: np.ndarray) -> "VLMConceptGrounder":
        """Per-concept Platt scaling on a few labelled images (``C (n, K)`` 0/1, NaN = unknown)."""
        z = self.decision_function(X)
        C = np.asarray(C, float)
        if C.shape != z.shape:
            raise DataError(f"calibration labels have shape {C.shape}, expected {z.shape}")
        M = np.isfinite(C)
        for k, name in enumerate(self.concept_names_):
            if M[:, k].any() and len(np.unique(C[M[:, k], k])) < 2:
                raise DataError(f"concept '{name}' needs both positive and negative calibration examples "
                                "(or NaN for all of them to leave it uncalibrated)")
        cal = fit_platt(z, np.nan_to_num(C), M)
        unlabelled = ~M.any(0)
        cal[unlabelled] = (1.0, 0.0)
        self.calib_ = cal.astype(np.float32)
        return self

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        pos, ref = self.text_embeddings()
        meta = {"kind": "vlm_similarity", "concepts": dict(zip(self.concept_names_, self.phrases_)),
                "templates": list(self.templates), "negative_templates": self.negative_templates and
                list(self.negative_templates), "neutral_prompt": self.neutral_prompt, "logit_scale": self.logit_scale_}
        return {"text_pos": pos, "text_ref": ref, "calib": self.calib_}, meta

    @classmethod
    def from_state(cls, tensors: dict[str, np.ndarray], meta: dict) -> "VLMConceptGrounder":
        """Rebuild from saved text embeddings: predicting needs no text tower (nor weights)."""
        obj = cls(None, meta["concepts"], templates=meta["templates"], negative_templates=meta["negative_templates"],
                  neutral_prompt=meta["neutral_prompt"], logit_scale=meta["logit_scale"])
        obj._cache = (obj._key(), tensors["text_pos"], tensors["text_ref"])
        obj.calib_ = tensors["calib"]
        return obj
