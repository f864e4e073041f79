"""``CBMConfig``: the one validated recipe for a concept bottleneck model (YAML; errors name the key).

A recipe says where concepts come from (grounding sources, combined into one concept layer), which
class–concept prior constrains the bottleneck, whether the training objective balances a nuisance
attribute, and the bottleneck's hyper-parameters. :func:`medcbm.bottleneck.recipe.fit_cbm` builds a
model from it; ``medcbm train``, the benchmark methods (``configs/methods/*.yaml``) and the quickstart
all go through that one builder.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medcbm.bottleneck.trainer import BottleneckConfig


class AnnotationSource(BaseModel):
    """Concept probes trained on a dataset's expert concept annotations (``concept_*`` columns, 0/1).

    The dataset is usually another hospital's (PH2, Derm7pt, your own annotated set); its probes are
    transferred to the images the bottleneck is trained on.

    Attributes:
        dataset: a bundled importer name (``ph2``, ``derm7pt``) or a manifest path with ``concept_*`` columns.
        concepts: which annotated concepts to use (default: every ``concept_*`` column).
        split_column, split_values: train the probes only on rows whose ``split_column`` is in
            ``split_values`` (e.g. keep Derm7pt's test images out of the probes).
        prior: a reviewed prior file for these concepts, used by ``prior: expert`` (default: the shipped
            ``knowledge/priors/<dataset>_*.yaml`` if there is exactly one).
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["annotations"] = "annotations"
    dataset: str
    concepts: list[str] | None = None
    split_column: str | None = None
    split_values: list[str] | None = None
    prior: str | None = None


class ReportSource(BaseModel):
    """Concept probes trained on pseudo-labels read from the training images' free-text notes or reports.

    Attributes:
        column: the manifest column holding the text.
        vocabulary: ``cxr_notes`` (the shipped chest X-ray findings) or a YAML file ``{concept: [synonyms]}``.
        unmentioned: how a finding a non-empty note does not name is labelled (``absent`` is KnoBo's rule).
        uncertain: how a finding named only with a hedge ("possible", "cannot exclude") is labelled:
            ``positive`` (as affirmed), ``negative``, or ``ignore`` (that image does not train its probe).
        pca_components: project features on the training split's top principal components first
            (regularises the probes when there are few training images); ``null`` to skip.
        bank_prefix: grounding-source prefix of the bank concepts that describe these findings.
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["reports"] = "reports"
    column: str = "clinical_notes"
    vocabulary: str = "cxr_notes"
    unmentioned: Literal["absent", "unknown"] = "absent"
    uncertain: Literal["positive", "negative", "ignore"] = "positive"
    pca_components: int | None = Field(64, gt=0)
    max_iter: int = Field(150, gt=0)
    bank_prefix: str = "cxr_notes"


class VLMSource(BaseModel):
    """Zero-shot concept scores from a vision–language model: the bank's concepts scored by image–text similarity.

    The grounding ``backbone`` must then be the VLM itself (``open_clip:local-dir:/path``, ``hf:/path``):
    the image features are its embeddings, and its text tower embeds the concepts.

    Attributes:
        concepts: concept ids of the bank to score (default: every bank concept).
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["vlm"] = "vlm"
    concepts: list[str] | None = None


Source = Annotated[Union[AnnotationSource, ReportSource, VLMSource], Field(discriminator="kind")]


class FinetuneStep(BaseModel):
    """Fine-tune the grounding backbone on the annotation sources' concept labels before fitting probes.

    The fine-tuned backbone is a cached artifact (``medcbm finetune``), named by the content of its inputs:
    the first fit trains it, later fits reuse it.

    Attributes:
        combine: ``ensemble`` (probes read the frozen and the fine-tuned features, concatenated) or
            ``replace`` (the fine-tuned features alone).
        config: :class:`~medcbm.backbones.concept_finetune.FinetuneConfig` fields (``epochs``,
            ``train_from_block``, ``views``, ...); ``base`` is the grounding backbone.
    """

    model_config = ConfigDict(extra="forbid")
    combine: Literal["ensemble", "replace"] = "ensemble"
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid_config(self) -> "FinetuneStep":
        from medcbm.backbones.concept_finetune import FinetuneConfig

        if "base" in self.config:
            raise ValueError("config.base: the fine-tuning base is grounding.backbone; set that instead")
        FinetuneConfig.model_validate(self.config)  # a bad key or value fails here, by name
        return self


class GroundingConfig(BaseModel):
    """How image features become concept probabilities.

    Attributes:
        backbone: feature extractor the probes read (the images are re-extracted with it when the data's
            own features come from another backbone).
        sources: one or more grounding sources, combined into one concept layer (annotation sources are
            pooled: a concept annotated in two datasets gets one probe trained on both).
        min_auc, drop_weak: probes below this cross-validated AUROC are flagged, and dropped if ``drop_weak``.
        concepts: keep only these concepts in the bottleneck (default: every kept probe).
        seed: the probes' cross-validation folds.
        finetune: fine-tune ``backbone`` on the annotation sources' concept labels first (``None``: frozen).
    """

    model_config = ConfigDict(extra="forbid")
    backbone: str = "efficientnet_lite0_lesion_cc"
    sources: list[Source] = Field(default_factory=lambda: [AnnotationSource(dataset="ph2")], min_length=1)
    min_auc: float = Field(0.6, ge=0.0, le=1.0)
    drop_weak: bool = True
    concepts: list[str] | None = None
    seed: int = 0
    finetune: FinetuneStep | None = None


class CBMConfig(BaseModel):
    """The recipe of a concept bottleneck model.

    Attributes:
        grounding: concept sources and the backbone they read.
        bank: the concept bank the concepts are linked to (``modality/task`` of a shipped bank or a path);
            each model concept keeps its bank entries (question, passage, reference) for audits.
        prior: ``expert`` (the sources' reviewed prior files), ``bank`` (mined from ``bank``), a prior YAML
            path or a list of them, or ``null`` for none.
        prior_class_map: model class -> bank class keys it stands for (``bank`` prior only).
        prior_rule: how ``bank`` priors merge several bank concepts/classes: ``contrastive`` (mean, centred
            across classes, then sign) or ``vote`` (+1 if some say +1 and none -1).
        balance: weight samples so the data's nuisance groups (e.g. site) are balanced within each class.
        nuisance_adjust: subtract each nuisance group's within-class concept offset, estimated on the training
            images, before the bottleneck and at prediction (from the images' site); see
            :mod:`medcbm.bottleneck.nuisance`.
        bottleneck: the linear layer's hyper-parameters.
    """

    model_config = ConfigDict(extra="forbid")
    grounding: GroundingConfig = Field(default_factory=GroundingConfig)
    bank: str | None = "dermoscopy/benign_malignant"
    prior: str | list[str] | None = "expert"
    prior_class_map: dict[str, list[str]] | None = None
    prior_rule: Literal["contrastive", "vote"] = "contrastive"
    balance: bool = True
    nuisance_adjust: bool = False
    bottleneck: BottleneckConfig = Field(default_factory=BottleneckConfig)

    def with_overrides(self, overrides: dict[str, Any]) -> "CBMConfig":
        """A copy with ``overrides`` deep-merged in (validated again; errors name the key)."""
        return CBMConfig.model_validate(deep_merge(self.model_dump(), overrides))


def deep_merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` merged in recursively (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out
