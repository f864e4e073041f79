"""The one CBM builder: a :class:`CBMConfig` plus labelled train/val splits -> a fitted :class:`KnowledgeCBM`.

``medcbm train``, every concept-bottleneck benchmark method and the quickstart call :func:`fit_cbm`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from medcbm._io import sha256_file
from medcbm._resources import public_name
from medcbm.bottleneck.config import AnnotationSource, CBMConfig
from medcbm.bottleneck.estimator import KnowledgeCBM
from medcbm.bottleneck.grounders import (GroundingContext, bank_prefixes, build_grounder, concept_backbone,
                                         load_recipe_bank, split_features)
from medcbm.bottleneck.priors import bank_prior, grounded_targets, merge_prior_files, shipped_prior_file
from medcbm.bottleneck.weights import balance_weights
from medcbm.data.samples import LabelledSplit
from medcbm.errors import ConfigError

logger = logging.getLogger(__name__)
_WARNED: set[tuple] = set()  # say once per process which concepts lack a bank entry (benchmarks refit per seed)


def expert_prior_files(cfg: CBMConfig) -> list[Path]:
    """The reviewed prior file of every annotation source (its ``prior`` key, else the shipped one)."""
    files = []
    for s in cfg.grounding.sources:
        if not isinstance(s, AnnotationSource):
            continue
        f = Path(s.prior) if s.prior else shipped_prior_file(Path(s.dataset).stem)
        if f is None:
            raise ConfigError(f"prior: 'expert' needs a reviewed prior for grounding source '{s.dataset}', and none "
                              "is shipped; give its `prior` file, or use prior: bank / a file / null")
        files.append(f)
    if not files:
        raise ConfigError("prior: 'expert' needs an annotation grounding source with a reviewed prior; for report or "
                          "VLM sources use prior: bank, a prior file, or null")
    return files


def resolve_prior(cfg: CBMConfig, classes: Sequence[str]) -> tuple[dict | None, dict]:
    """The class–concept prior the recipe asks for, and its provenance."""
    if cfg.prior is None:
        return None, {"prior_source": None}
    if cfg.prior == "bank":
        bank = load_recipe_bank(cfg)
        if bank is None:
            raise ConfigError("prior: 'bank' needs a `bank` to mine the prior from")
        prior, prov = bank_prior(bank, list(classes), prefixes=bank_prefixes(cfg), class_map=cfg.prior_class_map,
                                 rule=cfg.prior_rule)
        return prior, {"prior_source": "bank", **prov}
    files = expert_prior_files(cfg) if cfg.prior == "expert" else [Path(p) for p in
                                                                     ([cfg.prior] if isinstance(cfg.prior, str) else cfg.prior)]
    prior, refs = merge_prior_files(files)
    unknown = sorted(set(prior) - set(classes))
    if unknown:
        raise ConfigError(f"prior {[str(f) for f in files]} names classes {unknown}; the model's classes are "
                          f"{list(classes)} (map your labels onto the prior's classes with a label map)")
    # named, not located: the model card and audit must not carry this machine's paths (the hash identifies it)
    return prior, {"prior_source": [public_name(f) for f in files], "prior_sha256": [sha256_file(f) for f in files],
                   "prior_references": refs}


def check_prior_concepts(cfg: CBMConfig, prior: dict | None, grounder) -> None:
    """A prior file the user names must only name concepts some grounding source provides (typos, stale files)."""
    if prior is None or cfg.prior in ("expert", "bank"):
        return  # shipped priors cover a dataset's whole vocabulary, of which a recipe may use a subset
    known = {c for p in grounder.leaves() for c in getattr(p, "all_concepts_", p.concept_names_)}
    unknown = sorted({k for entries in prior.values() for k in entries} - known)
    if unknown:
        raise ConfigError(f"prior {cfg.prior} names concepts {unknown} that no grounding source provides "
                          f"(they provide {sorted(known)}); fix the names or the sources")


def concept_links(cfg: CBMConfig, concepts: Sequence[str], classes: Sequence[str] = ()) -> dict[str, list[dict]]:
    """Per model concept, the bank entries grounded to it (id, question, evidence passages) — for audits.

    A bank entry's stance-labelled citations come first, each with ``support``: for every model class, +1 when
    the passage argues for it, −1 when for another class, 0 for ``depends`` (model classes stand for the bank
    classes of ``cfg.prior_class_map``). Without citations the entry keeps its prior's evidence sentences.
    """
    from medcbm.knowledge.stance import stance_sign

    bank = load_recipe_bank(cfg)
    links: dict[str, list[dict]] = {c: [] for c in concepts}
    if bank is None:
        return links
    members = {c: list((cfg.prior_class_map or {}).get(c, [c])) for c in classes}
    prefixes = bank_prefixes(cfg)
    for bc in bank.concepts:
        evidence = [{"class": a.class_key, "prior": a.prior, "doc_id": e.doc_id, "chunk_id": e.chunk_id,
                     "sentence": e.sentence} for a in bc.classes for e in a.evidence][:3]
        for target in grounded_targets(bc, prefixes):
            if target not in links:
                continue
            cites = [{"doc_id": c.doc_id, "chunk_id": c.chunk_id, "sentence": c.sentence, "stance": c.stance,
                      "qualifier": c.qualifier, "reference": c.reference,
                      "support": {k: stance_sign(c.stance, m) for k, m in members.items()}}
                     for c in bc.citations if c.concept == target]
            links[target].append({"bank": bank.name, "concept_id": bc.id, "name": bc.name,
                                  "question": bc.question, "evidence": cites or evidence})
    unlinked = [c for c, v in links.items() if not v]
    if unlinked and (bank.name, tuple(unlinked)) not in _WARNED:
        _WARNED.add((bank.name, tuple(unlinked)))
        logger.warning("concepts %s have no entry in bank '%s': their explanations cannot cite a passage "
                       "(give them entries: medcbm concepts cite)", unlinked, bank.name)
    return links


def fit_cbm(cfg: CBMConfig, train: LabelledSplit, val: LabelledSplit, *, classes: Sequence[str],
            ctx: GroundingContext | None = None, seed: int = 0) -> KnowledgeCBM:
    """Build and fit the recipe's CBM on labelled train/val splits.

    Args:
        cfg: the recipe.
        train, val: labelled splits (features of any backbone; the grounding backbone's are extracted as needed).
        classes: class names in label-index order.
        ctx: where grounding datasets/features live, and a memo of fitted probes.
        seed: the data seed (report probes' folds and PCA).

    Returns:
        The fitted model; ``backbone_`` names its feature extractor and ``recipe_`` records what was built.
    """
    ctx = ctx or GroundingContext()
    backbone = concept_backbone(cfg, ctx)
    X_train, X_val = split_features(train, backbone, ctx), split_features(val, backbone, ctx)
    grounder = build_grounder(cfg, train, X_train, ctx, seed)
    prior, prior_prov = resolve_prior(cfg, classes)
    check_prior_concepts(cfg, prior, grounder)
    if cfg.grounding.concepts is not None:
        missing = [c for c in cfg.grounding.concepts if c not in grounder.concept_names_]
        if missing:
            logger.info("concepts %s are not in the concept layer (weak or absent); the bottleneck uses the rest", missing)
    concepts = None if cfg.grounding.concepts is None else [c for c in cfg.grounding.concepts if c in grounder.concept_names_]
    weights = balance_weights(train, val) if cfg.balance else {}
    model = KnowledgeCBM(grounder, classes=list(classes), prior=prior, config=cfg.bottleneck, concepts=concepts,
                         nuisance_adjust=cfg.nuisance_adjust)
    model.fit(X_train, train.y, X_val, val.y, groups=train.groups, val_groups=val.groups, **weights)
    model.backbone_ = backbone
    model.recipe_ = {"config": cfg.model_dump(mode="json"), **prior_prov,
                     "concept_links": concept_links(cfg, model.concept_names_, list(classes))}
    return model
