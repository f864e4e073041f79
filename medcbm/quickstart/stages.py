"""The five stages of the quickstart journey: data, train, adapt, accept, audit. Each reads what the previous one wrote
in the run directory and returns a record of what it found (:mod:`medcbm.quickstart.results`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcbm.data.manifest import Manifest, load_manifest, save_manifest
from medcbm.quickstart.results import (AcceptResult, AdaptResult, AuditResult, ChangedConcept, DataResult, Gain,
                                       QueryScores, Scores, TrainResult)

logger = logging.getLogger(__name__)

PROTOCOL = "ham10000-vidir-modern-holdout"  # train at two acquisition sites, deploy at the third
SITE = "new-site"  # the adaptation's name (the real site name stays out of the artifacts)
ADAPTER = "site"
GROUNDING_DATASETS = ("ph2", "derm7pt")  # the shipped CBM grounds its concepts on their expert annotations


@dataclass(frozen=True)
class JourneyContext:
    """Where the journey reads and writes, and its few knobs.

    Attributes:
        run_dir: everything the journey writes goes here.
        data_root: the shared datasets folder (resolved).
        cache_dir: the feature cache.
        seed: the protocol split seed (and the support draw).
        k: labelled new-site images per class for adaptation.
        n_cases: out-of-domain cases explained in the audit report.
        occlusion_cases: of those, how many get occlusion maps (each costs 17 backbone passes).
    """

    run_dir: Path
    data_root: Path
    cache_dir: Path
    seed: int = 0
    k: int = 4
    n_cases: int = 6
    occlusion_cases: int = 2
    progress: bool = True

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "models" / "cbm"

    def split_path(self, split: str) -> Path:
        return self.run_dir / "splits" / f"{split}.csv"


def data_stage(ctx: JourneyContext) -> DataResult:
    """Import HAM10000 (and check the grounding datasets), cut the protocol's split, write the manifests."""
    from medcbm.data.importers import import_dataset
    from medcbm.protocols import build_splits, load_protocol

    ham = import_dataset("ham10000", ctx.data_root)
    images = {"ham10000": len(ham)}
    for name in GROUNDING_DATASETS:
        images[name] = len(import_dataset(name, ctx.data_root))
    manifest = save_manifest(ham, ctx.run_dir / "manifest.csv")
    proto = load_protocol(PROTOCOL)
    sp = build_splits(ham, proto, ctx.seed)
    for split, idx in sp.index.items():
        save_manifest(sp.manifest.subset(idx), ctx.split_path(split))
    sites = ham.frame["site"].value_counts().sort_index()
    return DataResult(images=images, sites={str(k): int(v) for k, v in sites.items()}, protocol=PROTOCOL,
                      seed=ctx.seed, split_sizes={s: int(len(i)) for s, i in sp.index.items()}, manifest=str(manifest))


def _scores(metrics: dict[str, dict]) -> Scores:
    """ID/OOD scores from per-split :func:`~medcbm.metrics.split_metrics` results."""
    ood = metrics["test_ood"]
    return Scores(id_acc=metrics["test_id"]["acc"], ood_acc=ood["acc"], ood_balanced_acc=ood["balanced_acc"],
                  ood_auroc=ood["auroc"])


def train_stage(ctx: JourneyContext) -> TrainResult:
    """Train the shipped CBM and the linear probe (the black box) on the same confounded split."""
    from medcbm.benchmarks.bench_shift import load_protocol_data
    from medcbm.methods.linear_probe import linear_probe
    from medcbm.metrics import split_metrics
    from medcbm.workflows.config import DataConfig, TrainConfig
    from medcbm.workflows.train import train_cbm

    cfg = TrainConfig(name="cbm", out_dir=str(ctx.model_dir), data=DataConfig(protocol=PROTOCOL, seed=ctx.seed))
    # the quickstart's workspace is its own: each run retrains it from scratch
    model, prov = train_cbm(cfg, data_root=ctx.data_root, cache_dir=ctx.cache_dir, progress=ctx.progress, force=True)
    cbm = _scores(prov["metrics"])
    pdata = load_protocol_data(PROTOCOL, seeds=[ctx.seed], data_root=ctx.data_root, cache_dir=ctx.cache_dir,
                               progress=ctx.progress)
    _, y, _, data = pdata.seed_data(ctx.seed)
    proba = linear_probe(data).proba
    probe = _scores({s: split_metrics(y[s], proba[s], n_boot=200) for s in ("test_id", "test_ood")})
    logger.info("OOD accuracy: linear probe %.3f, CBM %.3f", probe.ood_acc, cbm.ood_acc)
    return TrainResult(probe=probe, cbm=cbm, n_concepts=len(model.concept_names_), model_dir=str(ctx.model_dir))


def _query_scores(m: dict) -> QueryScores:
    return QueryScores(acc=m["acc"], balanced_acc=m["balanced_acc"], auroc=m["auroc"])


def adapt_stage(ctx: JourneyContext) -> AdaptResult:
    """Adapt the CBM to the held-out site: ``k`` labelled images per class and the pool's other images unlabelled;
    compare base and adapted model, paired, on a query of other patients that nothing was adapted on."""
    from medcbm.adapt import ConceptEdit
    from medcbm.audit.explain import bank_links
    from medcbm.bottleneck.artifacts import load_cbm
    from medcbm.bottleneck.metadata import mapped_labels
    from medcbm.data.site_split import split_site
    from medcbm.workflows.adapt import adapt_cbm
    from medcbm.workflows.compare import compare_models

    model, meta = load_cbm(ctx.model_dir)
    site, y = mapped_labels(load_manifest(ctx.split_path("test_ood")), meta)
    parts = split_site(site, y, k=ctx.k, seed=ctx.seed, classes=list(model.classes)).manifests(site)
    paths = {name: save_manifest(m, ctx.run_dir / "adapt" / f"{name}.csv") for name, m in parts.items()}
    fitted, path = adapt_cbm(ctx.model_dir, parts["support"], site=SITE, adapter=ADAPTER, k=ctx.k,
                             unlabelled=parts["unlabelled"], force=True, cache_dir=ctx.cache_dir, progress=ctx.progress)
    cmp = compare_models(path, ctx.model_dir, parts["query"], cache_dir=ctx.cache_dir, progress=False,
                         measured_on="held-out query of the new site")
    changes = []
    for c in fitted.changes_:
        links = bank_links(model, c.concept)
        changes.append(ChangedConcept(concept=c.concept, action=c.action, statistic=c.statistic, factor=c.factor,
                                      question=links[0].question if links else None))
    est = getattr(fitted, "estimate_", None)
    return AdaptResult(adapter=ADAPTER, site=SITE, k=ctx.k, n_support=len(parts["support"].frame),
                       n_unlabelled=len(parts["unlabelled"].frame), n_query=len(parts["query"].frame),
                       before=_query_scores(cmp["baseline"]), after=_query_scores(cmp["model"]),
                       changed=fitted.edit_.changed(ConceptEdit.identity(model)),
                       reason="; ".join(r for r in fitted.reasons_ if not r.startswith("estimated gain")),
                       estimate=None if est is None else Gain(**est.to_json()),
                       heldout=Gain(**cmp["balanced_acc_gain"]), changes=changes, adaptation_dir=str(path),
                       support_manifest=str(paths["support"]), unlabelled_manifest=str(paths["unlabelled"]),
                       query_manifest=str(paths["query"]))


def accept_stage(ctx: JourneyContext, adaptation_dir: Path) -> AcceptResult:
    """The site acceptance report of the adapted model on the held-out query (the base model as baseline)."""
    import json

    from medcbm.audit.acceptance_html import write_acceptance_report

    files = write_acceptance_report(adaptation_dir, load_manifest(ctx.run_dir / "adapt" / "query.csv"),
                                    ctx.run_dir / "acceptance", force=True, site="the held-out site",
                                    cache_dir=ctx.cache_dir, progress=False)
    doc = json.loads(files["json"].read_text())
    bal = doc["balanced_accuracy"]
    return AcceptResult(verdict=doc["verdict"], reasons=doc["reasons"], balanced_acc=bal["value"],
                        balanced_acc_ci95=tuple(bal["ci95"]), html=str(files["html"]), json_path=str(files["json"]))


def pick_cases(frame, truth: list[str], classes: list[str], n: int) -> list[int]:
    """Rows worth explaining: the most confident correct case of each class, the most confident mistake, then
    the least confident cases (where a clinician would look twice).

    Args:
        frame: :func:`~medcbm.workflows.train.predict_cbm` output (``prediction``, ``p_<class>``).
        truth: the true class of each row.
    """
    pred = frame["prediction"].tolist()
    conf = frame[[f"p_{c}" for c in classes]].max(axis=1).to_numpy()
    right = np.array([p == t for p, t in zip(pred, truth)])
    picked: list[int] = []

    def add(rows: np.ndarray, most_confident: bool) -> None:
        rows = [int(i) for i in rows if int(i) not in picked]
        if rows and len(picked) < n:
            picked.append(max(rows, key=lambda i: conf[i]) if most_confident else min(rows, key=lambda i: conf[i]))

    for c in classes:
        add(np.flatnonzero(right & (np.array(truth) == c)), True)
    add(np.flatnonzero(~right), True)
    for i in np.argsort(conf):
        add(np.array([i]), False)
    return picked


def audit_stage(ctx: JourneyContext, adaptation_dir: Path) -> AuditResult:
    """Write the audit report of a handful of out-of-domain cases (correct and wrong) and the global view."""
    from medcbm.audit import write_audit_report
    from medcbm.bottleneck.artifacts import read_model_meta
    from medcbm.bottleneck.metadata import mapped_labels
    from medcbm.workflows.train import predict_cbm

    meta = read_model_meta(ctx.model_dir)  # labels only: the weights are loaded by predict and the report
    query, y = mapped_labels(load_manifest(ctx.run_dir / "adapt" / "query.csv"), meta)
    pred = predict_cbm(adaptation_dir, query, cache_dir=ctx.cache_dir, progress=False)
    truth = [meta["classes"][i] for i in y]
    rows = pick_cases(pred, truth, meta["classes"], ctx.n_cases)
    n_correct = sum(pred["prediction"].iloc[i] == truth[i] for i in rows)
    files = write_audit_report(adaptation_dir, query, ctx.run_dir / "audit", force=True,
                               cases=[query.frame["id"].iloc[i] for i in rows], cache_dir=ctx.cache_dir,
                               occlusion_cases=ctx.occlusion_cases, progress=ctx.progress)
    return AuditResult(n_cases=len(rows), n_correct=int(n_correct), n_wrong=len(rows) - int(n_correct),
                       n_images=len(query), html=str(files["html"]), json_path=str(files["json"]),
                       model_card=str(files["model_card"]))
