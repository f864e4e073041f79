"""A model card (Hugging Face ``ModelCard`` conventions: YAML front matter + markdown) from an audit report.

Only what the artifact and the audit know: classes, concepts, backbone, prior source, hashes, training and audit
metrics. No path, case id, site name or patient attribute is written.
"""

from __future__ import annotations

import html
import re

import yaml

from medcbm.audit.schema import AuditReport, ScopeRulesSummary
from medcbm.bottleneck.domain import conformal_rank
from medcbm.bottleneck.scope import DOMAIN_WORDS, check_counts
from medcbm.data.image_facts import NO_MODALITY

# Markdown that a renderer would turn into a link, image, emphasis or code span; HTML is escaped separately
_MD_ACTIVE = re.compile(r"([\\`*\[\]!|])")


def md(text: object) -> str:
    """User text (class, concept, model names) as inert Markdown: no HTML, no links, one line."""
    s = html.escape(" ".join(str(text).split()), quote=False)
    return _MD_ACTIVE.sub(r"\\\1", s)


def md_list(items) -> str:
    return ", ".join(md(x) for x in items)


def _metric_rows(report: AuditReport) -> list[dict]:
    rows = []
    for split, m in report.model.training_metrics.items():
        for k in ("acc", "balanced_acc", "auroc", "ece"):
            if isinstance(m.get(k), (int, float)):
                rows.append({"type": k, "value": round(float(m[k]), 4), "name": f"{k} ({split} split at training)"})
    if report.metrics:
        for k in ("acc", "balanced_acc", "auroc", "ece"):
            v = report.metrics.get(k)
            if isinstance(v, (int, float)) and v == v:
                rows.append({"type": k, "value": round(float(v), 4), "name": f"{k} (audit manifest)"})
    return rows


def head_training(info: dict) -> str:
    """One sentence on how the linear layer was fitted (solver, length, chosen strength, weight spread)."""
    if not info:
        return "not recorded"
    solver = info.get("solver", "adam")  # artifacts from before the solver key were trained by Adam
    if solver == "path":
        chosen = info.get("chosen", {})
        pen = info.get("path_penalty", "l2")
        how = (f"regularisation path over {len(info.get('path', []))} {pen.upper()} strengths fitted to convergence "
               f"({info.get('path_iterations', '?')} L-BFGS-B iterations), {pen.upper()} = {chosen.get(pen)} chosen by "
               f"the {str(info.get('select', '?')).replace('_', '-')} validation loss")
    elif solver == "prior_vote":
        how = "no training (prior vote)"
    else:
        how = f"Adam, early-stopped after {info.get('epochs', '?')} epoch(s)"
    spread = info.get("weight_spread")
    if spread:
        how += (f"; weights max |w| {spread['max_abs']}, mean |w| {spread['mean_abs']}, "
                f"{spread['fraction_zero']:.0%} zero")
    return how


def _prior(source: str | list[str] | None) -> str:
    if not source:
        return "none"
    return md("mined from the concept bank" if source == "bank" else
              ", ".join([source] if isinstance(source, str) else source))


def _percent(q: float) -> str:
    return f"{100 * q:g} %"


def _calibration(s: ScopeRulesSummary) -> str:
    """How the feature-distance limit was set, in words."""
    if s.calibration != "validation" or not s.n_calibration:
        return (f"the {_percent(s.quantile)} percentile of the training images' own distances (no validation images "
                "to calibrate it on, so more new in-domain images exceed it)")
    # with fewer than q / (1 - q) images the conformal rank falls past the last: say so, the guarantee still holds
    few = conformal_rank(s.n_calibration, s.quantile) == s.n_calibration
    largest = "; with this few, it is the largest of their distances" if few else ""
    return (f"the split-conformal {_percent(s.quantile)} limit on {s.n_calibration} validation images the mean was "
            f"not fitted on (a new in-domain image exceeds it with probability at most "
            f"{_percent(round(1 - s.quantile, 6))}{largest})")


def _scope(report: AuditReport) -> list[str]:
    """The "Scope" part: which images the model accepts (its scope rules and feature limit) and how many of the
    audit manifest's images it did not."""
    s = report.model.scope
    if s is None:  # a report written before the model card named the scope
        return []
    lines = ["## Scope", ""]
    if s.domain is None:
        lines.append("- **Images:** an imaging domain medcbm has no rules for (the model's own concept bank): only "
                     "the feature distance below is checked.")
    else:
        # a model trained on DICOMs without a Modality accepts them (scope.ScopeRules); say which way it is
        names = ["none (no Modality)" if k == NO_MODALITY else k for k in s.modalities]
        others = "any other DICOM" + ("" if NO_MODALITY in s.modalities else ", one without a Modality included,")
        lines.append(f"- **Images:** {md(DOMAIN_WORDS.get(s.domain, s.domain))} images. A DICOM file must declare one of the "
                     f"modalities {md_list(names)}; {others} is out of scope.")
    if s.needs_colour:
        lines.append("- **Colour:** colour photographs only; a greyscale image (a MONOCHROME DICOM, a greyscale "
                     "JPEG or PNG) is out of scope.")
    if s.feature_limit is None:
        lines.append("- **Feature distance:** not checked (the model was saved without a summary of its training "
                     "features).")
    else:
        lines.append(f"- **Feature distance:** an image whose {md(report.model.backbone)} features lie farther than "
                     f"cosine distance {s.feature_limit:.4g} from the mean of the {s.n_training} training images is "
                     f"out of scope; the limit is {_calibration(s)}.")
    d = report.data.scope
    if d is not None and d.out_of_scope:
        lines.append(f"- **Audit manifest:** {d.out_of_scope} of {d.n} scored images were out of scope "
                     f"({md(check_counts(d.by_check))}); the audit report marks each and says why.")
    elif d is not None:
        lines.append(f"- **Audit manifest:** all {d.n} scored images were in scope.")
    return [*lines, ""]


def model_card(report: AuditReport) -> str:
    """Markdown with YAML front matter (``library_name``, ``tags``, ``model-index`` metrics)."""
    m = report.model
    meta = {
        "library_name": "medcbm",
        "tags": ["concept-bottleneck-model", "medical-imaging", "interpretability", "knowledge-grounded"],
        "pipeline_tag": "image-classification",
        "model-index": [{"name": m.name or "medcbm-cbm", "results": [{
            "task": {"type": "image-classification"},
            "dataset": {"type": "custom", "name": "training and audit manifests (hashed)"},
            "metrics": _metric_rows(report)}]}],
    }
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    top = [w.concept for w in report.weights[:8]]
    contra = [w.concept for w in report.weights if any(a == "contradicts" for a in w.agreement.values())]
    lines = [
        "---", front.rstrip(), "---", "",
        f"# Model card: {md(m.name) if m.name else 'medcbm concept bottleneck model'}", "",
        "## Model details", "",
        f"- **Type:** knowledge-grounded concept bottleneck model (image features → {len(m.concepts)} clinical "
        f"concepts → linear layer constrained by a class–concept prior), artifact format `{m.format}`, "
        f"medcbm {m.medcbm_version or 'unknown'}.",
        f"- **Classes:** {md_list(m.classes)}.",
        f"- **Backbone:** {md(m.backbone)}; weights sha256 `{m.weights_sha256}`.",
        f"- **Prior:** {_prior(m.prior_source)}.",
        f"- **Site adjustment:** {'yes, ' + str(m.n_site_groups) + ' site group(s)' if m.site_adjusted else 'no'}.",
        f"- **Head training:** {head_training(m.head_training)}.",
        "",
        "## Intended use", "",
        "Research use: decision support whose every prediction is explained by clinical concepts a reader can "
        "check and correct. Not a medical device; not validated for diagnosis.", "",
        *_scope(report),
        "## Concepts", "",
        f"Most important on the audit data: {md_list(top) or '–'}.",
        f"Concepts without a concept-bank entry (no citable passage): "
        f"{md_list(m.concepts_without_bank_entry) or 'none'}.",
        f"Concepts whose learned weight contradicts the clinical prior: {md_list(contra) or 'none'}.", "",
        "## Evaluation", "",
    ]
    for r in _metric_rows(report):
        lines.append(f"- {md(r['name'])}: {r['value']}")
    lines += [f"- **{md(n)}**" for n in report.performance_notes]
    if report.calibration:
        lines.append(f"- expected calibration error on the audit manifest: {report.calibration.ece:.4f}")
    if report.interventions:
        iv = report.interventions
        lines.append(f"- concept interventions: accuracy {iv.base_accuracy:.3f} → {iv.all_true_accuracy:.3f} with every "
                     f"concept corrected; normalised AUC {', '.join(f'{k} {v:.3f}' for k, v in iv.auc.items())}")
    lines += ["", "## Limitations and shift", "",
              f"{len(report.activations.flags)} (group, concept) activation shift(s) with |SMD| ≥ "
              f"{report.activations.threshold} on the audit data (see the audit report). Concept probes transferred "
              "from other hospitals read differently on new sites; check the drift table before deploying to a new site.",
              "", "## Provenance", "",
              "Training data, split and concept bank are recorded as hashes in the artifact's `model.json`; this card "
              f"was generated by `medcbm audit` (report schema {report.schema_version}).", ""]
    return "\n".join(lines)
