"""Test-time augmentation as one backbone: ``tta:<name>`` averages a backbone's features over dihedral flips.

A dermoscopic lesion has no up, down, left or right, so a concept read from an image should not change
when it is mirrored. Averaging the pooled features of the four flips (identity, horizontal, vertical,
both) removes the orientation-specific part of an ImageNet layer's response at four times the encoding
cost. The result is an ordinary backbone: its features are cached under their own fingerprint, and it can
be an ensemble member or the ``grounding.backbone`` of a recipe.
"""

from __future__ import annotations

from medcbm._io import sha256_text
from medcbm.backbones._registry import BackboneSpec, get_backbone_spec, register_prefix
from medcbm.errors import RegistryError

PREFIX = "tta"
VIEWS = ("identity", "hflip", "vflip", "hvflip")
FLIP_DIMS: dict[str, tuple[int, ...]] = {"identity": (), "hflip": (3,), "vflip": (2,), "hvflip": (2, 3)}


def inner_spec(spec: BackboneSpec) -> BackboneSpec:
    """The backbone a ``tta:`` spec averages over flips."""
    return get_backbone_spec(spec.model)


@register_prefix(PREFIX)
def _tta(rest: str) -> BackboneSpec:
    """``tta:<name>``: the backbone's pooled features averaged over the four flips of each image."""
    if not rest:
        raise RegistryError("backbone 'tta:': name the backbone to average over flips, e.g. tta:efficientnet_lite0")
    inner = get_backbone_spec(rest)
    if inner.family == PREFIX:
        raise RegistryError(f"backbone 'tta:{rest}': already test-time augmented; use '{rest}'")
    return BackboneSpec(
        name=f"{PREFIX}:{rest}", family=PREFIX, model=inner.name, weights="inner",
        weights_sha256=sha256_text(inner.fingerprint(), *VIEWS), preprocess=inner.preprocess,
        num_features=inner.num_features, description=f"{inner.name} averaged over {len(VIEWS)} flips")
