"""``write_audit_report``: a saved model + a manifest -> ``audit.html`` (self-contained), ``audit.json`` (versioned
schema), ``audit.schema.json`` and ``MODEL_CARD.md``.

Privacy by default (see :mod:`medcbm.audit.privacy`): salted case ids, pseudonymous site labels, thumbnails only
for photographs (DICOM opt-in), no file path in any output or log line. A missing or unreadable image is
recorded (by its salted id) and the rest of the report is still written.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from medcbm import __version__
from medcbm._resources import public_name
from medcbm.audit.explain import bank_links, explain_from_concepts
from medcbm.audit.global_view import activation_view, calibration, concept_weights
from medcbm.audit.interventions import concept_ablation, intervention_curves, what_if
from medcbm.audit.privacy import CaseIds, redacted_logs, write_id_map
from medcbm.audit.schema import (JSON_EXCLUDE, AdaptationSummary, AdaptedConcept, AuditReport, CaseReport, DataSummary,
                                 ImageIssue, ModelSummary, ScopeRulesSummary, ScopeSummary)
from medcbm.bottleneck.metadata import label_indices, model_groups
from medcbm.data.filetypes import is_dicom_file
from medcbm.data.manifest import Manifest, SkipLog
from medcbm.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

THUMB_PX = 160
CONCEPT_PREFIX = "concept_"


@dataclass
class AuditArtifacts:
    """The report plus what only the HTML shows (thumbnails by case, charts)."""

    report: AuditReport
    thumbnails: dict[str, str] = field(default_factory=dict)
    charts: dict[str, str] = field(default_factory=dict)
    occlusion: dict[str, dict[str, str]] = field(default_factory=dict)


def _check_image(path: Path) -> str | None:
    """Why an image cannot be used (``None`` when it opens)."""
    if not path.is_file():
        return "image file missing"
    try:
        if is_dicom_file(path):
            import pydicom

            pydicom.dcmread(str(path)).pixel_array  # noqa: B018 - decoding is the check
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.verify()
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
        logger.debug("unreadable image: %s", type(exc).__name__)
        return "image unreadable (corrupt or not an image)"
    return None


def thumbnail_uri(path: Path, *, dicom: bool, px: int = THUMB_PX) -> str | None:
    """A JPEG data URI of the image at most ``px`` wide and high, without metadata (``None`` on failure)."""
    from PIL import Image

    try:
        if dicom:
            import pydicom

            from medcbm.data.readers import dicom_to_array

            arr = np.asarray(dicom_to_array(pydicom.dcmread(str(path)), "<dicom>"), float)
            arr = (255 * (arr - arr.min()) / max(1e-9, float(np.ptp(arr)))).astype(np.uint8)
            im = Image.fromarray(arr.squeeze())
        else:
            im = Image.open(path)
        im = im.convert("RGB")
        im.thumbnail((px, px))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)  # no EXIF or other metadata is copied
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    except Exception as exc:  # noqa: BLE001
        logger.info("no thumbnail for one image (%s)", type(exc).__name__)
        return None


def _select(frame, cases: Sequence[str] | None, max_cases: int) -> list[int]:
    ids = frame["id"].astype(str).tolist()
    if cases is None:
        return list(range(min(max_cases, len(ids))))
    where = {v: i for i, v in enumerate(ids)}
    unknown = [c for c in cases if c not in where]
    if unknown:
        raise DataError(f"{len(unknown)} requested case(s) are not in the manifest: {unknown[:5]}"
                        + (" ..." if len(unknown) > 5 else ""), field="id")
    return [where[c] for c in dict.fromkeys(cases)]


def _model_summary(model, meta: dict) -> ModelSummary:
    prov, recipe = meta.get("provenance") or {}, meta.get("recipe") or {}
    links = recipe.get("concept_links") or {}
    metrics = {s: {k: v for k, v in m.items() if k in ("n", "acc", "balanced_acc", "auroc", "ece")}
               for s, m in (prov.get("metrics") or {}).items() if isinstance(m, dict)}
    offsets = getattr(model, "offsets_", None)
    return ModelSummary(name=prov.get("name"), format=meta.get("format", "?"), medcbm_version=meta.get("medcbm_version"),
                        classes=list(model.classes), concepts=list(model.concept_names_),
                        concepts_without_bank_entry=[k for k in model.concept_names_ if not links.get(k)],
                        backbone=meta["backbone"]["name"], weights_sha256=meta.get("weights_sha256", ""),
                        prior_source=_prior_names(recipe.get("prior_source")), site_adjusted=offsets is not None,
                        n_site_groups=len(offsets.groups) if offsets is not None else 0, training_metrics=metrics,
                        head_training=meta.get("fit_info") or {}, scope=_scope_rules(model, meta))


def _scope_rules(model, meta: dict) -> ScopeRulesSummary:
    """The rules the audit's scope verdicts applied, and the feature limit with how it was calibrated."""
    from medcbm.bottleneck.scope import ScopeRules

    rules = ScopeRules.of(model, meta)
    fd = getattr(model, "feature_domain_", None)
    limit = {} if fd is None else {"feature_limit": fd.summary.threshold, "quantile": fd.summary.quantile,
                                   "calibration": fd.summary.calibration, "n_calibration": fd.summary.n_calibration,
                                   "n_training": fd.summary.n}
    return ScopeRulesSummary(domain=rules.domain, modalities=sorted(rules.modalities), needs_colour=rules.needs_colour,
                             **limit)


def _prior_names(source: str | list[str] | None) -> str | list[str] | None:
    """Prior files by name only: models saved before medcbm named them recorded where they lay on disk."""
    if source is None or source == "bank":
        return source
    return [public_name(s) if Path(s).is_absolute() else s for s in ([source] if isinstance(source, str) else source)]


def _adaptations(model_dir, meta: dict, *, raw_sites: bool) -> list[AdaptationSummary]:
    """The adaptation the audit applies, or else every adaptation saved beside the model."""
    from medcbm.adapt.store import read_adaptations

    applied = "adaptation" in meta
    docs = [meta["adaptation"]] if applied else read_adaptations(model_dir)
    return [AdaptationSummary(
        site=d["site"] if raw_sites else f"adapted site {i + 1}", applied=applied, adapter=d["adapter"],
        changed=d["changed"], reason=d["reason"], estimated_gain=d.get("estimated_gain"),
        estimate_ci95=(d.get("estimate") or {}).get("ci95"), estimate_kind=d.get("estimate_kind"),
        n_support=d["support"].get("n"),
        concepts=[AdaptedConcept(**c) for c in d["changes"] if c["action"] in ("masked", "amplified")])
        for i, d in enumerate(docs)]


def build_audit(model_dir: str | os.PathLike, manifest: Manifest, *, cases: Sequence[str] | None = None,
                max_cases: int = 100, cache_dir: str | os.PathLike | None = "runs/cache/features",
                salt: str | None = None, raw_ids: bool = False, raw_sites: bool = False,
                thumbnails: bool = True, dicom_thumbnails: bool = False, top_k: int = 3,
                occlusion_cases: int = 10, occlusion_grid: int = 4, progress: bool = True) -> AuditArtifacts:
    """Audit a saved model on a manifest: explanations of the selected cases, the global view, interventions.

    Args:
        model_dir: a saved model (``model.json`` + ``model.safetensors``) or one of its adaptation folders.
        manifest: the images (labelled for calibration, drift within class and interventions).
        cases: ids to explain (default: the first ``max_cases`` rows); unknown ids are an error.
        cache_dir: feature cache.
        salt, raw_ids: case ids are ``HMAC(salt, id)`` unless ``raw_ids``.
        raw_sites: show site values as they are (default: "site A", "site B", ...).
        thumbnails, dicom_thumbnails: image thumbnails for photographs; DICOM only when asked.
        top_k: concepts per case in the "what if" table and the occlusion maps.
        occlusion_cases: draw occlusion maps of the top concepts for this many of the explained cases (each costs
            ``occlusion_grid**2 + 1`` backbone passes; 0: none). Same privacy rule as thumbnails.
    """
    from medcbm.backbones.features import extract_features
    from medcbm.adapt.store import load_model
    from medcbm.bottleneck.artifacts import backbone_from_meta
    from medcbm.bottleneck.scope import assess_scope, scope_counts

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model, meta = load_model(model_dir)
    ids = CaseIds(salt, raw=raw_ids)
    frame = manifest.frame
    selected = _select(frame, cases, max_cases)
    paths = manifest.image_paths()
    issues, good = [], []
    for i in range(len(frame)):
        why = _check_image(paths[i])
        if why:
            issues.append(ImageIssue(case=ids(frame["id"].iloc[i]), reason=why))
        else:
            good.append(i)
    secrets = {str(p) for p in paths} | {str(p.parent) for p in paths} | {str(manifest.root), manifest.source}
    skips = SkipLog()
    sub = manifest.subset(good)
    with redacted_logs(secrets):
        feats = extract_features(sub, backbone_from_meta(meta), cache_dir=cache_dir, skips=skips, progress=progress)
    failed = {s.row - 1 for s in skips.items if s.row is not None}
    issues += [ImageIssue(case=ids(sub.frame["id"].iloc[r]), reason="image could not be preprocessed") for r in sorted(failed)]
    scored = [good[r] for r in range(len(good)) if r not in failed]
    if issues:
        logger.warning("%d of %d images could not be audited (recorded in the report by case id)", len(issues), len(frame))
    timings["features"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    sframe = frame.iloc[scored].reset_index(drop=True)
    X = feats.X
    scope = assess_scope(model, meta, [paths[i] for i in scored], X)
    groups = model_groups(model, sframe, meta)
    P = model.predict_concepts(X, groups)
    proba = model.predict_proba_from_concepts(P)
    y = label_indices(sframe, meta)
    lab = y >= 0  # rows the model's label map (or class names) covers are scored; the others are counted
    labelled = bool(lab.any())
    if labelled and not lab.all():
        logger.warning("%d of %d rows have labels outside the model's label map (%s): scoring the other %d",
                       int((~lab).sum()), len(y), ", ".join(f"{k!r}: {v}" for k, v in
                                                           sframe["label"][~lab].astype(str).value_counts().items()),
                       int(lab.sum()))
    site_names = sorted(sframe["site"].astype(str).unique()) if "site" in sframe.columns else []
    site_label = {v: (v if raw_sites else f"site {chr(65 + i) if i < 26 else i + 1}") for i, v in enumerate(site_names)}
    row_of = {i: r for r, i in enumerate(scored)}
    explained = [row_of[i] for i in selected if i in row_of]
    exps = explain_from_concepts(model, P[explained], case_ids=[ids(sframe["id"].iloc[r]) for r in explained],
                                 y=y[explained] if labelled else None)
    case_reports, thumbs = [], {}
    for r, e in zip(explained, exps):
        path = paths[scored[r]]
        dicom = is_dicom_file(path)
        if thumbnails and (not dicom or dicom_thumbnails):
            uri = thumbnail_uri(path, dicom=dicom)
            if uri:
                thumbs[e.case] = uri
        case_reports.append(CaseReport(explanation=e, what_if=what_if(model, P[r], [c.concept for c in e.top(top_k)]),
                                       group=site_label.get(str(sframe["site"].iloc[r])) if site_label else None,
                                       has_thumbnail=e.case in thumbs, scope=scope[r]))
    timings["explanations"] = time.perf_counter() - t1
    t3 = time.perf_counter()
    occ: dict[str, dict[str, str]] = {}
    todo = [(k, r, e) for k, (r, e) in enumerate(zip(explained, exps))
            if thumbnails and (not is_dicom_file(paths[scored[r]]) or dicom_thumbnails)][:max(0, occlusion_cases)]
    if todo:
        from medcbm.audit.occlusion import Occluder, overlay_uri

        occluder = Occluder(model, backbone_from_meta(meta), grid=occlusion_grid)
        for k, r, e in _progress(todo, progress, "occlusion maps"):
            try:
                img, maps = occluder.maps(paths[scored[r]], [c.concept for c in e.top(top_k)],
                                          groups=None if groups is None else groups[r])
            except DataError as exc:
                logger.warning("%s: no occlusion map (%s)", e.case, exc)
                continue
            occ[e.case] = {c: overlay_uri(img, m) for c, m in maps.items()}
            case_reports[k] = case_reports[k].model_copy(update={"occlusion": {c: m.round(4).tolist()
                                                                               for c, m in maps.items()}})
    timings["occlusion"] = time.perf_counter() - t3
    t2 = time.perf_counter()
    from medcbm.metrics import chance_sentence, split_metrics

    P_all = P
    if labelled:  # the labelled views (metrics, calibration, drift within class, interventions) read mapped rows
        P, sframe, y, proba = P[lab], sframe[lab].reset_index(drop=True), y[lab], proba[lab]
    metrics = split_metrics(y, proba, n_boot=200) if labelled and len(np.unique(y)) > 1 else None
    notes = [n for s_, m_ in (meta.get("provenance") or {}).get("metrics", {}).items()
             if (n := chance_sentence(m_, f"{s_} split at training"))]
    notes += [n] if metrics and (n := chance_sentence(metrics, "this manifest")) else []
    acts = activation_view(model, P, sframe, y if labelled else None,
                           label_for=lambda col, v: site_label.get(v, v) if col == "site" else v)
    curves, note = None, None
    cols = [CONCEPT_PREFIX + k for k in model.concept_names_]
    if labelled and all(c in sframe.columns for c in cols):
        T = sframe[cols].apply(lambda s: s.astype(float)).to_numpy()
        if np.isnan(T).any():
            note = "some concept annotations are empty: intervention curves need every concept annotated"
        else:
            curves = intervention_curves(model, P, T, y, n_random=3)
    else:
        note = ("the manifest has no concept annotations for this model's concepts (concept_<name> columns): "
                "no intervention curves") if labelled else "the manifest is not labelled with the model's classes"
    report = AuditReport(
        medcbm_version=__version__, model=_model_summary(model, meta),
        data=DataSummary(n_rows=len(frame), n_scored=len(scored), labelled=labelled,
                         n_labelled=int(lab.sum()), n_unmapped=int((~lab).sum()), image_issues=issues,
                         case_ids="raw" if raw_ids else "salted hash", site_labels="raw" if raw_sites else "pseudonymous",
                         thumbnails="none" if not thumbnails else ("photographs and DICOM" if dicom_thumbnails else "photographs"),
                         scope=ScopeSummary(**scope_counts(scope))),
        metrics=metrics, performance_notes=notes, calibration=calibration(y, proba) if labelled else None,
        weights=concept_weights(model, P_all), activations=acts, interventions=curves, interventions_note=note,
        ablation=concept_ablation(model, P, y) if labelled else None, cases=case_reports,
        concept_links={k: bank_links(model, k) for k in model.concept_names_},
        adaptations=_adaptations(model_dir, meta, raw_sites=raw_sites))
    timings["global_view"] = time.perf_counter() - t2
    return AuditArtifacts(report=report.model_copy(update={"timings_s": {k: round(v, 3) for k, v in timings.items()}}),
                          thumbnails=thumbs, occlusion=occ)


def _progress(items: list, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="case")


def write_audit_report(model_dir: str | os.PathLike, manifest: Manifest | str | os.PathLike, out_dir: str | os.PathLike,
                       *, cases: Sequence[str] | None = None, force: bool = False,
                       id_map: str | os.PathLike | None = None, **kwargs) -> dict[str, Path]:
    """Audit ``model_dir`` on ``manifest`` and write the report files into ``out_dir``.

    Args:
        manifest: a :class:`Manifest` or a manifest file.
        out_dir: must not exist (or be empty) unless ``force``.
        id_map: also write ``case,row,id`` (the salted case id as shown, the manifest row, the raw id) to this
            CSV, so an authorised user can find the patient again; never inside ``out_dir`` (which is shared).
        **kwargs: see :func:`build_audit`.

    Returns:
        ``{"html", "json", "schema", "model_card"}`` (and ``"id_map"``) -> written paths.
    """
    from medcbm._io import atomic_write_json, atomic_write_text
    from medcbm.audit.modelcard import model_card
    from medcbm.audit.render import render_charts, render_html
    from medcbm.data.manifest import load_manifest

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise ConfigError(f"output folder {out} already exists and is not empty; choose another or pass --force")
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    if id_map is not None and Path(id_map).resolve().is_relative_to(out.resolve()):
        raise ConfigError(f"--id-map {id_map} is inside the report folder {out}, which is meant to be shared; "
                          "write it elsewhere")
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    if id_map is not None and kwargs.get("salt") is None and not kwargs.get("raw_ids"):
        kwargs["salt"] = secrets.token_hex(16)  # the map needs the salt the report used; it is not kept
    art = build_audit(model_dir, m, cases=cases, **kwargs)
    t0 = time.perf_counter()
    art.charts = render_charts(art.report)
    html = render_html(art)
    render_s = round(time.perf_counter() - t0, 3)
    report = art.report.model_copy(update={"timings_s": {**art.report.timings_s, "render": render_s}})
    files = {"html": out / "audit.html", "json": out / "audit.json", "schema": out / "audit.schema.json",
             "model_card": out / "MODEL_CARD.md"}
    atomic_write_text(files["html"], html)
    atomic_write_json(files["json"], report.model_dump(mode="json", exclude=JSON_EXCLUDE))
    atomic_write_json(files["schema"], type(report).model_json_schema())
    atomic_write_text(files["model_card"], model_card(report))
    if id_map is not None:
        files["id_map"] = write_id_map(id_map, CaseIds(kwargs.get("salt"), raw=bool(kwargs.get("raw_ids"))),
                                       m.frame["id"].tolist())
    logger.info("audit of %d cases written (html %.1f kB)", len(report.cases), files["html"].stat().st_size / 1e3)
    return files
