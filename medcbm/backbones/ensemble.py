"""Backbone ensembles as one backbone: ``ensemble:<a>+<b>`` concatenates the members' pooled features.

A concept probe over the concatenation reads a frozen ImageNet layer and one fine-tuned on concept labels
at once: the fine-tuned features carry the concepts, the frozen ones what fine-tuning on a few hundred
dermoscopy images forgets (and they are less tied to those images' acquisition). Members must preprocess
images the same way, so one decoded tensor goes through each; the fingerprint hashes the members'
fingerprints, so an ensemble's cached features change when any member's weights do.
"""

from __future__ import annotations

from medcbm._io import sha256_text
from medcbm.backbones._registry import BackboneSpec, get_backbone_spec, register_prefix
from medcbm.errors import RegistryError

PREFIX, SEP = "ensemble", "+"


def ensemble_name(*members: str) -> str:
    """The backbone name that concatenates these members' features (``ensemble:<a>+<b>``)."""
    return f"{PREFIX}:" + SEP.join(members)


def member_specs(spec: BackboneSpec) -> list[BackboneSpec]:
    """The specs of an ensemble's members, in feature order (``[spec]`` for any other backbone)."""
    if spec.family != PREFIX:
        return [spec]
    return [get_backbone_spec(n) for n in spec.model.split(SEP)]


@register_prefix(PREFIX)
def _ensemble(rest: str) -> BackboneSpec:
    """``ensemble:<a>+<b>[+...]``: members' features concatenated (same preprocessing required)."""
    names = [n for n in rest.split(SEP) if n]
    if len(names) < 2:
        raise RegistryError(f"backbone 'ensemble:{rest}': give two or more members joined by '{SEP}', e.g. "
                            "ensemble:efficientnet_lite0_lesion_cc+finetuned:<name>")
    members = [get_backbone_spec(n) for n in names]
    for m in members:
        if m.family == PREFIX:
            raise RegistryError(f"backbone 'ensemble:{rest}': member '{m.name}' is itself an ensemble; list its "
                                "members instead")
        if m.preprocess != members[0].preprocess:
            raise RegistryError(f"backbone 'ensemble:{rest}': members '{members[0].name}' and '{m.name}' preprocess "
                                "images differently (size, crop or colour constancy); ensemble backbones that "
                                "share one preprocessing")
    dims = [m.num_features for m in members]
    return BackboneSpec(
        name=f"{PREFIX}:{rest}", family=PREFIX, model=SEP.join(names), weights="members",
        weights_sha256=sha256_text(*(m.fingerprint() for m in members)), preprocess=members[0].preprocess,
        num_features=sum(dims) if all(d is not None for d in dims) else None,
        description="features of " + ", ".join(m.name for m in members) + " concatenated")
