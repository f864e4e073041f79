"""Build a fitted concept grounder from a recipe's grounding sources.

- annotation sources are pooled into one :class:`ConceptProbes` fit: each dataset's images, its
  ``concept_*`` columns, NaN where a dataset does not annotate a concept (a concept annotated in two
  datasets gets one probe trained on both);
- a report source pseudo-labels the *training* images' notes and fits probes on them (after a PCA
  fitted on the training images, when configured);
- a VLM source scores the bank's questions by image–text similarity and calibrates on the training split.

Several sources become one :class:`ConceptUnion`. Fitted annotation probes are memoised in the
context: a benchmark fits them once for all seeds.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcbm.bottleneck.config import AnnotationSource, CBMConfig, ReportSource, VLMSource
from medcbm.bottleneck.probe_cache import load_probes, probe_key, save_probes
from medcbm.concepts.grounding.base import ConceptGrounder
from medcbm.concepts.grounding.compose import ConceptUnion, ProjectedGrounder
from medcbm.concepts.grounding.probes import ConceptProbes
from medcbm.data.concept_labels import CONCEPT_PREFIX, annotated_concepts, concept_matrix, union_names
from medcbm.data.manifest import Manifest
from medcbm.data.samples import LabelledSplit
from medcbm.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


@dataclass
class GroundingContext:
    """Where grounding datasets and features come from, plus a memo of fitted probes."""

    data_root: Any = None
    cache_dir: Any = None
    progress: bool = False
    memo: dict = field(default_factory=dict)


def features_for(manifest: Manifest, backbone: str, ctx: GroundingContext) -> np.ndarray:
    """Features of every manifest row under ``backbone`` (cached on disk)."""
    from medcbm.backbones.features import extract_features

    return extract_features(manifest, backbone, cache_dir=ctx.cache_dir, progress=ctx.progress).X


def split_features(split, backbone: str, ctx: GroundingContext) -> np.ndarray:
    """A split's features under ``backbone``: its own ``X`` if it matches, else re-extracted from its images."""
    if split.backbone == backbone:
        return split.X
    frame = split.frame if "label" in split.frame.columns else split.frame.assign(label="unlabelled")  # manifest format
    return features_for(Manifest(frame, source=f"split ({len(frame)} images)"), backbone, ctx)


def load_annotation_dataset(source: AnnotationSource, ctx: GroundingContext) -> tuple[Manifest, list[str]]:
    """The source's manifest (rows restricted to ``split_values``) and its concept names, checked."""
    from medcbm.data.importers import import_dataset, list_datasets
    from medcbm.data.manifest import load_manifest

    m = import_dataset(source.dataset, ctx.data_root) if source.dataset in list_datasets() else \
        load_manifest(source.dataset).check_files()
    where = f"grounding source '{source.dataset}'"
    if source.split_column:
        if source.split_column not in m.frame.columns:
            raise ConfigError(f"{where}: split_column '{source.split_column}' is not a column of {m.source}")
        keep = m.frame[source.split_column].astype(str).isin(source.split_values or []).to_numpy()
        if not keep.any():
            raise ConfigError(f"{where}: no row has {source.split_column} in {source.split_values}")
        m = m.subset(np.flatnonzero(keep))
    have = annotated_concepts(m)
    names = list(source.concepts) if source.concepts is not None else have
    unknown = [n for n in names if n not in have]
    if unknown or not names:
        raise ConfigError(f"{where}: concepts {unknown or names} have no '{CONCEPT_PREFIX}<name>' column in "
                          f"{m.source} (it annotates {have})")
    for n in names:
        col = m.frame[CONCEPT_PREFIX + n]
        vals = pd.to_numeric(col, errors="coerce")
        bad = (vals.isna() & col.notna()) | ~(vals.isna() | vals.isin([0, 1]))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"concept column must hold 0/1 (or be empty for not annotated), got {str(col.iloc[i])!r}",
                            path=m.source, row=i + 1, field=CONCEPT_PREFIX + n)
        if vals.dropna().nunique() < 2:
            raise DataError(f"concept column is {'empty' if vals.isna().all() else 'all one value'}: a probe "
                            "needs positive and negative examples; drop it from `concepts` or annotate both",
                            path=m.source, field=CONCEPT_PREFIX + n)
    return m, names


def _unseen_by_backbone(m: Manifest, backbone: str) -> Manifest:
    """``m`` without the images a fine-tuned backbone was trained on.

    Its features of those images are fitted to their labels: probes trained on them would learn a separation
    the backbone does not show on new images (and their CV AUROC would be inflated).
    """
    from medcbm._io import sha256_file
    from medcbm.backbones.finetuned import trained_image_hashes

    seen = trained_image_hashes(backbone)
    if not seen:
        return m
    keep = [i for i, p in enumerate(m.image_paths()) if sha256_file(p)[:16] not in seen]
    logger.info("%s: %d of %d images were used to fine-tune %s; probes are fitted on the other %d", m.source,
                len(m) - len(keep), len(m), backbone, len(keep))
    return m.subset(keep)


def concept_backbone(cfg: CBMConfig, ctx: GroundingContext) -> str:
    """The backbone the probes read: ``grounding.backbone``, or the fine-tuned layer ``grounding.finetune`` asks
    for (trained on the annotation sources' first use, then reused from the fine-tuned store).

    Fine-tuning splits each dataset by its own rule (:mod:`medcbm.data.concept_splits`; Derm7pt: the official
    split); the probes are then fitted on the images it did not train on.
    """
    g = cfg.grounding
    if g.finetune is None:
        return g.backbone
    key = ("concept_backbone", g.model_dump_json())
    if key not in ctx.memo:
        from medcbm.backbones.concept_finetune import FinetuneConfig
        from medcbm.backbones.ensemble import ensemble_name
        from medcbm.backbones.finetuned import create_finetuned_backbone
        from medcbm.data.importers import list_datasets

        ann = [s.dataset for s in g.sources if isinstance(s, AnnotationSource)]
        if not ann:
            raise ConfigError("grounding.finetune: fine-tuning needs an annotation source (concept labels to train on)")
        builtin = set(list_datasets())
        name = create_finetuned_backbone(
            datasets=tuple(d for d in ann if d in builtin), manifests=tuple(d for d in ann if d not in builtin),
            config=FinetuneConfig(base=g.backbone, **g.finetune.config), data_root=ctx.data_root,
            progress=ctx.progress)
        ctx.memo[key] = name if g.finetune.combine == "replace" else ensemble_name(g.backbone, name)
    return ctx.memo[key]


def annotation_probes(sources: list[AnnotationSource], cfg: CBMConfig, ctx: GroundingContext) -> ConceptProbes:
    """One probe layer over every annotation source (pooled images; NaN where a dataset lacks a concept)."""
    g = cfg.grounding
    backbone = concept_backbone(cfg, ctx)
    key = ("annotation_probes", tuple(s.model_dump_json() for s in sources), backbone, g.min_auc, g.drop_weak, g.seed)
    if key in ctx.memo:
        return ctx.memo[key]
    loaded = [load_annotation_dataset(s, ctx) for s in sources]
    names = union_names([n for _, n in loaded])
    loaded = [(_unseen_by_backbone(m, backbone), n) for m, n in loaded]
    X = np.concatenate([features_for(m, backbone, ctx) for m, _ in loaded])
    C = np.concatenate([concept_matrix(m, names, only=n) for m, n in loaded])
    disk_key = probe_key(repr(key), X, C, names)
    probes = load_probes(ctx.cache_dir, disk_key)
    if probes is None:
        probes = ConceptProbes(min_auc=g.min_auc, drop_weak=g.drop_weak, seed=g.seed).fit(X, C, names)
        save_probes(ctx.cache_dir, disk_key, probes)
    probes.sources_ = {s.dataset: n for s, (_, n) in zip(sources, loaded)}
    logger.info("annotation probes (%s on %s): kept %d/%d concepts, mean CV AUROC %.3f", backbone,
                "+".join(s.dataset for s in sources), len(probes.concept_names_), len(names),
                np.mean(list(probes.cv_auc_.values())))
    ctx.memo[key] = probes
    return probes


def report_vocabulary(source: ReportSource) -> dict:
    """The finding vocabulary of a report source: the shipped chest X-ray findings or a YAML file."""
    from medcbm._config import load_yaml_mapping
    from medcbm.concepts.alignment import cxr_notes_vocab

    if source.vocabulary == "cxr_notes":
        return cxr_notes_vocab()
    return load_yaml_mapping(Path(source.vocabulary), what="report vocabulary")


def report_probes(source: ReportSource, train: LabelledSplit, X: np.ndarray, cfg: CBMConfig,
                  seed: int) -> ConceptGrounder:
    """Probes on the training images' features, labelled from their notes (only training notes are read)."""
    from sklearn.decomposition import PCA

    from medcbm.concepts.grounding.reports import fit_report_probes

    if source.column not in train.frame.columns:
        raise DataError(f"the training data has no '{source.column}' column: report-derived concepts need notes "
                        "(set grounding.sources[*].column)")
    texts = train.frame[source.column].tolist()
    if not any(isinstance(t, str) and t.strip() for t in texts):
        raise DataError(f"column '{source.column}' is empty for every training image: no note to label concepts from")
    pca = None
    if source.pca_components:
        pca = PCA(n_components=min(source.pca_components, *X.shape), random_state=seed).fit(X)
        X = pca.transform(X).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # rare findings are recorded in probes.flagged_ instead
        probes = ConceptProbes(min_auc=cfg.grounding.min_auc, drop_weak=cfg.grounding.drop_weak, seed=seed,
                               max_iter=source.max_iter)
        probes = fit_report_probes(X, texts, report_vocabulary(source), unmentioned=source.unmentioned,
                                   uncertain=source.uncertain, probes=probes)
    if not probes.concept_names_:
        raise DataError(f"no report-derived concept reached CV AUROC {cfg.grounding.min_auc} on these training images "
                        f"(flagged: {probes.flagged_}); lower grounding.min_auc or set drop_weak: false")
    return ProjectedGrounder.from_pca(probes, pca) if pca is not None else probes


def vlm_grounder(source: VLMSource, cfg: CBMConfig) -> ConceptGrounder:
    """Zero-shot scores for the bank's questions; the grounding backbone must be the VLM itself."""
    from medcbm.backbones import create_backbone
    from medcbm.concepts.grounding.vlm import VLMConceptGrounder

    bank = load_recipe_bank(cfg)
    if bank is None:
        raise ConfigError("a vlm grounding source needs a `bank` whose concepts it scores")
    concepts = [c for c in bank.concepts if source.concepts is None or c.id in source.concepts]
    if not concepts:
        raise ConfigError(f"grounding.sources[vlm].concepts {source.concepts} match no concept of bank '{bank.name}'")
    model = create_backbone(cfg.grounding.backbone)
    return VLMConceptGrounder(model, {c.id: c.name for c in concepts})


def load_recipe_bank(cfg: CBMConfig):
    """The recipe's concept bank (``modality/task`` of a shipped bank or a JSON path), or ``None``."""
    from medcbm.concepts.schema import default_bank_path, load_bank

    if not cfg.bank:
        return None
    p = Path(cfg.bank)
    return load_bank(p if p.suffix == ".json" else default_bank_path(*cfg.bank.partition("/")[::2]))


def build_grounder(cfg: CBMConfig, train: LabelledSplit, X_train: np.ndarray, ctx: GroundingContext,
                   seed: int) -> ConceptGrounder:
    """The recipe's concept layer, fitted (annotation sources pooled, then report and VLM sources)."""
    sources = cfg.grounding.sources
    parts: list[ConceptGrounder] = []
    ann = [s for s in sources if isinstance(s, AnnotationSource)]
    if ann:
        parts.append(annotation_probes(ann, cfg, ctx))
    for s in sources:
        if isinstance(s, ReportSource):
            parts.append(report_probes(s, train, X_train, cfg, seed))
        elif isinstance(s, VLMSource):
            parts.append(vlm_grounder(s, cfg))
    return parts[0] if len(parts) == 1 else ConceptUnion(parts)


def bank_prefixes(cfg: CBMConfig) -> list[str]:
    """Grounding-source prefixes (``ph2:``, ``cxr_notes:``) of the bank concepts behind the recipe's concepts."""
    out = []
    for s in cfg.grounding.sources:
        if isinstance(s, AnnotationSource):
            out.append(f"{Path(s.dataset).stem}:")
        elif isinstance(s, ReportSource):
            out.append(f"{s.bank_prefix}:")
    return out
