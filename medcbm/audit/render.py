"""Render an audit as one self-contained HTML file (Jinja2; inline SVG charts, data-URI images, a CSP that forbids
every outside load, no script)."""

from __future__ import annotations

import numpy as np

from medcbm.audit import charts
from medcbm.audit.schema import AuditReport

#: nothing may load from outside the file: images only as data URIs, styles only inline, no script at all
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'none'; font-src 'none'; "
       "connect-src 'none'; frame-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'")


def render_charts(report: AuditReport) -> dict[str, str]:
    """The report's SVG charts by name (weights per class, reliability, site drift, intervention curves)."""
    out: dict[str, str] = {}
    classes = report.model.classes
    shown = classes[1:] if len(classes) == 2 else classes  # binary: the second class's weights say it all
    top = report.weights[:25]
    for cls in shown:
        out[f"weights_{cls}"] = charts.weights_chart([w.concept for w in top], [w.weights[cls] for w in top],
                                                     [w.prior[cls] if w.prior else None for w in top],
                                                     [w.agreement[cls] for w in top], cls=cls)
    if report.calibration is not None:
        out["reliability"] = charts.reliability_chart([b.model_dump() for b in report.calibration.bins])
    sites = [g for g in report.activations.groups if g.column == "site"]
    if len(sites) >= 2 and any(v is not None for g in sites for v in g.drift.values()):
        concepts = [w.concept for w in report.weights[:20]]
        smd = np.array([[np.nan if g.drift[k] is None else g.drift[k] for g in sites] for k in concepts], float)
        out["drift"] = charts.drift_chart(concepts, [g.value for g in sites], smd, threshold=report.activations.threshold)
    if report.interventions is not None:
        out["curves"] = charts.curves_chart(report.interventions.curves)
    return out


#: a concept's cited passage and counter-passage (``k``: a ConceptExplanation), shared by the audit report and
#: the review app
CITATION_MACRO = r"""{% macro passages(k) %}{% for label, ci in [("cited passage", k.citation), ("counter-passage", k.counter_citation)] if ci %}<details><summary>{{ label }} ({{ k.links[0].bank }}, {{ ci.doc_id }}{% if ci.stance %}; argues for {{ ci.stance }}{% endif %})</summary>
<blockquote>{{ ci.sentence }}</blockquote>{% if ci.qualifier %}<p class="muted">depends on: {{ ci.qualifier }}</p>{% endif %}{% if ci.reference %}<p class="muted">{{ ci.reference }}</p>{% endif %}<p class="muted">chunk {{ ci.chunk_id }}</p></details>{% endfor %}{% endmacro %}
"""

#: the opening of every report page: the CSP, a phone-width viewport, no referrer (templates fill ``csp``)
HEAD = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
"""

TEMPLATE = HEAD + r"""<title>Concept audit: {{ r.model.name or "medcbm model" }}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1a1a1a;background:#fff;line-height:1.45}
header,nav,main,footer{max-width:1100px;margin:0 auto;padding:0 1rem}
header{border-bottom:2px solid #0b4f8a;padding-bottom:.5rem}
h1{font-size:1.5rem;color:#0b3a66}h2{font-size:1.25rem;color:#0b3a66;border-bottom:1px solid #ccc;margin-top:2rem}
h3{font-size:1.05rem;margin-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.88rem}
th,td{border:1px solid #bbb;padding:.2rem .45rem;text-align:left;vertical-align:top}
th{background:#eef3f8}caption{text-align:left;font-weight:600;padding:.2rem 0}
.case{border:1px solid #bbb;border-radius:6px;padding:.6rem .9rem;margin:1rem 0}
.case.wrong{border-left:6px solid #b3261e}.case.right{border-left:6px solid #1b6e3a}
.flex{display:flex;gap:1rem;flex-wrap:wrap;align-items:flex-start}
.bar{display:inline-block;height:.7rem;vertical-align:middle}
.pos{background:#0b5394}.neg{background:#b45309}
.agrees{color:#0b5394}.contradicts{color:#a3330b;font-weight:600}
.note{background:#fff8e1;border:1px solid #d9b44a;padding:.4rem .6rem}
.scope{background:#fdecea;border:1px solid #b3261e;color:#5f1410;padding:.4rem .6rem;overflow-wrap:anywhere}
.muted{color:#4d4d4d}
figure{margin:.5rem 0}figcaption{font-size:.8rem;max-width:160px}svg{max-width:100%;height:auto}
details{margin:.2rem 0}summary{cursor:pointer}
nav ul{columns:2;font-size:.9rem}
img{max-width:100%;height:auto}blockquote{margin:.3rem .5rem;overflow-wrap:anywhere}
/* a phone: tables share the card's width and wrap their cells rather than widening the page */
@media (max-width:760px){table{width:100%;table-layout:fixed}th,td{overflow-wrap:anywhere;padding:.15rem .25rem;
font-size:.8rem}nav ul{columns:1}.case{padding:.5rem}header,nav,main,footer{padding:0 .5rem}}
@media print{nav{display:none}.case{break-inside:avoid;border-width:1px}a{color:inherit}body{font-size:10pt}}
</style>
</head>
<body>
<header>
<h1>Concept audit of {{ r.model.name or "a medcbm model" }}</h1>
<p>Classes {{ r.model.classes | join(", ") }}; {{ r.model.concepts | length }} concepts; backbone {{ r.model.backbone }};
weights sha256 {{ r.model.weights_sha256[:16] }}. {{ r.data.n_scored }} of {{ r.data.n_rows }} images scored.
Case ids: {{ r.data.case_ids }}; site labels: {{ r.data.site_labels }}.</p>
</header>
<nav aria-label="Contents"><ul>
<li><a href="#summary">Summary</a></li><li><a href="#weights">Concept weights and the prior</a></li>
<li><a href="#calibration">Calibration</a></li><li><a href="#drift">Concept drift by site and subgroup</a></li>
<li><a href="#interventions">Interventions</a></li><li><a href="#cases">Cases ({{ r.cases | length }})</a></li>
</ul></nav>
<main>
<section id="summary" aria-labelledby="h-summary"><h2 id="h-summary">Summary</h2>
{% if r.metrics %}<table><caption>Performance on this manifest</caption>
<tr><th scope="col">images</th><th scope="col">accuracy (95% CI)</th><th scope="col">balanced accuracy</th><th scope="col">AUROC</th><th scope="col">ECE</th></tr>
<tr><td>{{ r.metrics.n }}</td><td>{{ "%.3f"|format(r.metrics.acc) }} ({{ "%.3f"|format(r.metrics.acc_ci95[0]) }}–{{ "%.3f"|format(r.metrics.acc_ci95[1]) }})</td>
<td>{{ "%.3f"|format(r.metrics.balanced_acc) }}</td><td>{{ fmt(r.metrics.auroc) }}</td><td>{{ "%.3f"|format(r.metrics.ece) }}</td></tr></table>
{% else %}<p>The manifest is not labelled with the model's classes: no accuracy or calibration.</p>{% endif %}
{% for n in r.performance_notes %}<p class="note" role="note"><strong>{{ n }}</strong></p>{% endfor %}
{% if r.data.scope and r.data.scope.out_of_scope %}<div class="scope" role="note"><strong>{{ r.data.scope.out_of_scope }} of {{ r.data.scope.n }}
image(s) are outside this model's scope</strong> ({{ check_counts(r.data.scope.by_check) }}).
Their predictions, concepts and citations below are not to be trusted; each such case says why.</div>
{% elif r.data.scope %}<p class="muted">Every scored image passed the model's scope checks (modality, colour, distance to the training images).</p>{% endif %}
{% if r.data.image_issues %}<div class="note" role="note"><strong>{{ r.data.image_issues|length }} image(s) could not be audited</strong>
<ul>{% for i in r.data.image_issues[:50] %}<li>{{ i.case }}: {{ i.reason }}</li>{% endfor %}</ul></div>{% endif %}
{% if r.model.concepts_without_bank_entry %}<p class="muted">{{ r.model.concepts_without_bank_entry|length }} concept(s) have no concept-bank
entry, so no clinical question or passage can be cited for them: {{ r.model.concepts_without_bank_entry|join(", ") }}.</p>{% endif %}
</section>

<section id="weights" aria-labelledby="h-weights"><h2 id="h-weights">Concept weights and the prior</h2>
{% for name, svg in charts.items() if name.startswith("weights_") %}<figure>{{ svg|safe }}</figure>{% endfor %}
<table><caption>Weights per class beside the clinical prior (importance: mean |contribution| on this manifest)</caption>
<tr><th scope="col">concept</th><th scope="col">importance</th>{% for c in r.model.classes %}<th scope="col">weight {{ c }}</th><th scope="col">prior {{ c }}</th>{% endfor %}<th scope="col">agreement ({{ r.model.classes[-1] }})</th></tr>
{% for w in r.weights %}<tr><th scope="row">{{ w.concept }}</th><td>{{ "%.3f"|format(w.importance) }}</td>
{% for c in r.model.classes %}<td>{{ "%+.3f"|format(w.weights[c]) }}</td><td>{{ sign(w.prior[c]) if w.prior else "–" }}</td>{% endfor %}
<td class="{{ w.agreement[r.model.classes[-1]] }}">{{ w.agreement[r.model.classes[-1]] }}</td></tr>{% endfor %}</table>
</section>
{% if r.adaptations %}<section id="adaptations" aria-labelledby="h-adapt"><h2 id="h-adapt">Site adaptations</h2>
<table><caption>Adaptations of this model to new sites (masked: the concept no longer counts; amplified: it counts more)</caption>
<tr><th scope="col">site</th><th scope="col">adapter</th><th scope="col">used in this report</th><th scope="col">masked</th><th scope="col">amplified</th><th scope="col">estimated gain (balanced accuracy)</th><th scope="col">support images</th></tr>
{% for a in r.adaptations %}<tr><th scope="row">{{ a.site }}</th><td>{{ a.adapter }}</td><td>{{ "yes" if a.applied else "no" }}</td>
<td>{% for c in a.concepts if c.action == "masked" %}{{ names.get(c.concept, c.concept) }} ({{ "%+.3f"|format(c.statistic) }}){% if not loop.last %}, {% endif %}{% else %}–{% endfor %}</td>
<td>{% for c in a.concepts if c.action == "amplified" %}{{ names.get(c.concept, c.concept) }} (×{{ "%.1f"|format(c.factor) }}){% if not loop.last %}, {% endif %}{% else %}–{% endfor %}</td>
<td>{% if a.estimated_gain is none %}not estimated (no labelled images){% else %}{{ "%+.3f"|format(a.estimated_gain) }}{% if a.estimate_ci95 %} [95 % interval {{ "%+.3f"|format(a.estimate_ci95[0]) }}, {{ "%+.3f"|format(a.estimate_ci95[1]) }}]{% endif %}{% if a.estimate_kind %} ({{ a.estimate_kind }}){% endif %}{% endif %}{% if not a.changed %} (model left unchanged){% endif %}</td><td>{{ a.n_support }}</td></tr>{% endfor %}</table></section>{% endif %}

<section id="calibration" aria-labelledby="h-cal"><h2 id="h-cal">Calibration</h2>
{% if r.calibration %}<p>Expected calibration error {{ "%.3f"|format(r.calibration.ece) }} over {{ r.calibration.n }} images.</p>
<div class="flex"><figure>{{ charts.reliability|safe }}</figure>
<table><caption>Reliability diagram data</caption><tr><th scope="col">confidence bin</th><th scope="col">images</th><th scope="col">mean confidence</th><th scope="col">accuracy</th></tr>
{% for b in r.calibration.bins if b.n %}<tr><td>{{ "%.1f"|format(b.lower) }}–{{ "%.1f"|format(b.upper) }}</td><td>{{ b.n }}</td><td>{{ "%.3f"|format(b.confidence) }}</td><td>{{ "%.3f"|format(b.accuracy) }}</td></tr>{% endfor %}</table></div>
{% else %}<p>No labels: calibration needs them.</p>{% endif %}
</section>

<section id="drift" aria-labelledby="h-drift"><h2 id="h-drift">Concept drift by site and subgroup</h2>
<p>Standardised mean difference (SMD) of each concept's activation in a group against all other images{% if r.activations.within_class %}, averaged within each class{% endif %};
|SMD| ≥ {{ r.activations.threshold }} is flagged. Look here before adapting the model to a new site.</p>
{% if charts.drift %}<figure>{{ charts.drift|safe }}</figure>{% endif %}
{% if r.activations.flags %}<table><caption>Flagged concepts (largest shift first)</caption><tr><th scope="col">column</th><th scope="col">group</th><th scope="col">concept</th><th scope="col">SMD</th></tr>
{% for f in r.activations.flags[:40] %}<tr><td>{{ f.column }}</td><td>{{ f.value }}</td><td>{{ f.concept }}</td><td>{{ "%+.2f"|format(f.smd) }}</td></tr>{% endfor %}</table>
{% else %}<p>No concept shifts by |SMD| ≥ {{ r.activations.threshold }} between groups{% if not r.activations.columns %} (the manifest has a single site, sex and age band){% endif %}.</p>{% endif %}
<table><caption>Images per group</caption><tr><th scope="col">column</th><th scope="col">group</th><th scope="col">images</th></tr>
{% for g in r.activations.groups %}<tr><td>{{ g.column }}</td><td>{{ g.value }}</td><td>{{ g.n }}</td></tr>{% endfor %}</table>
</section>

<section id="interventions" aria-labelledby="h-int"><h2 id="h-int">Interventions</h2>
{% if r.interventions %}<p>Accuracy when a reader corrects concepts to their annotated value: {{ "%.3f"|format(r.interventions.base_accuracy) }} with none,
{{ "%.3f"|format(r.interventions.all_true_accuracy) }} with all {{ r.interventions.concepts|length }}.</p>
<div class="flex"><figure>{{ charts.curves|safe }}</figure>
<table><caption>Area under each curve (normalised by the number of concepts)</caption><tr><th scope="col">order</th><th scope="col">AUC</th></tr>
{% for o, a in r.interventions.auc.items() %}<tr><td>{{ o }}</td><td>{{ "%.3f"|format(a) }}</td></tr>{% endfor %}</table></div>
{% else %}<p>{{ r.interventions_note }}</p>{% endif %}
{% if r.ablation %}<p>Concept ablation: accuracy {{ "%.3f"|format(r.ablation.base_accuracy) }} with every concept,
majority-class rate {{ "%.3f"|format(r.ablation.majority_accuracy) }};
{% if r.ablation.concepts_for_half_drop is not none %}removing the {{ r.ablation.concepts_for_half_drop }} most important concept(s) loses half of the margin over it.
{% else %}removing concepts never loses half of the margin over it.{% endif %}</p>{% endif %}
</section>

<section id="cases" aria-labelledby="h-cases"><h2 id="h-cases">Cases</h2>
<p class="muted">Each case: the prediction, the concepts that moved it most, whether the model uses each concept the way the clinical prior says,
the concept's clinical question and cited passage, and what the model would say if a concept were flipped.
Activation: the concept probe's probability{% if r.model.site_adjusted %} minus the site's learned offset (so it can fall slightly outside 0–1){% endif %}.
Contribution: how far the concept moves the predicted class against the runner-up, relative to an average training image
(a rare finding that is slightly more present than usual can still push; "by its absence": the concept reads less
present than usual, so it pushes the opposite way to its cited passage's class).</p>
{% for c in r.cases %}{% set e = c.explanation %}
<article class="case {{ 'wrong' if e.correct == false else ('right' if e.correct else '') }}" aria-labelledby="case-{{ loop.index }}">
<h3 id="case-{{ loop.index }}">{{ e.case }}: {{ e.predicted }} ({{ "%.0f"|format(100 * e.probability) }}%)
{% if e.true_label %} — true label {{ e.true_label }}, {{ "correct" if e.correct else "wrong" }}{% endif %}{% if e.uncertain %} — uncertain{% endif %}</h3>
{% if c.scope and not c.scope.in_scope %}<p class="scope" role="note"><strong>Outside the model's scope:</strong> {{ c.scope.reason }}. Do not act on this prediction.</p>{% endif %}
<div class="flex">
{% if thumbs.get(e.case) %}<img src="{{ thumbs[e.case] }}" alt="Image of {{ e.case }}" width="160">{% endif %}
{% for concept, uri in occlusion.get(e.case, {}).items() %}<figure><img src="{{ uri }}" width="160"
alt="Occlusion map of {{ names.get(concept, concept) }} on {{ e.case }}: red cells support the concept, blue cells count against it">
<figcaption>{{ names.get(concept, concept) }} (largest change {{ "%.3f"|format(peak(c.occlusion[concept])) }})</figcaption></figure>{% endfor %}
<div><p>{% for k, p in e.class_probabilities.items() %}{{ k }} {{ "%.3f"|format(p) }}{% if not loop.last %}; {% endif %}{% endfor %}{% if c.group %}; {{ c.group }}{% endif %}.
{% set nb = e.concepts | selectattr("near_boundary") | list %}{% if nb %} {{ nb|length }} concept(s) near their decision boundary (0.4–0.6).{% endif %}</p>
<table><caption>Top concepts</caption><tr><th scope="col">concept</th><th scope="col">activation</th><th scope="col">contribution</th><th scope="col">weight vs prior</th><th scope="col">clinical question</th></tr>
{% for k in e.concepts[:top_rows] %}<tr><th scope="row">{{ k.display_name }}</th><td>{{ "%.2f"|format(k.probability) }}{% if k.near_boundary %} (uncertain){% endif %}</td>
<td><span class="bar {{ 'pos' if k.margin_contribution > 0 else 'neg' }}" style="width:{{ (60 * (k.margin_contribution|abs) / scale)|round(1) }}px" aria-hidden="true"></span> {{ "%+.2f"|format(k.margin_contribution) }}{% if k.by_absence %} (by its absence){% endif %}</td>
<td class="{{ k.agreement }}">{{ k.agreement }}</td>
<td>{% if k.links %}{{ k.links[0].question }}{{ passages(k) }}
{% else %}<span class="muted">“{{ k.concept }}” has no concept-bank entry: no question or passage to cite.</span>{% endif %}</td></tr>{% endfor %}</table>
{% if c.what_if %}<table><caption>What if a concept were flipped</caption><tr><th scope="col">concept</th><th scope="col">from → to</th><th scope="col">prediction</th></tr>
{% for w in c.what_if %}<tr><td>{{ names.get(w.concept, w.concept) }}</td><td>{{ "%.2f"|format(w.from_value) }} → {{ "%.0f"|format(w.to_value) }}</td>
<td>{{ w.predicted }} ({{ "%.0f"|format(100 * w.probability) }}%){% if w.changes_prediction %} <strong>changes the prediction</strong>{% endif %}</td></tr>{% endfor %}</table>{% endif %}
</div></div></article>{% endfor %}
</section>
</main>
<footer><p class="muted">Written by medcbm {{ r.medcbm_version }} (report schema {{ r.schema_version }}). This file loads nothing from outside itself.</p></footer>
</body>
</html>
"""


def render_html(art, *, top_rows: int = 6) -> str:
    """The audit as one HTML page (``art``: :class:`~medcbm.audit.report.AuditArtifacts` with charts set)."""
    from jinja2 import Environment

    from medcbm.bottleneck.scope import check_counts

    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    tpl = env.from_string(CITATION_MACRO + TEMPLATE)
    contribs = [abs(k.margin_contribution) for c in art.report.cases for k in c.explanation.concepts[:top_rows]]
    names = {k: v[0].name if v else k.replace("_", " ") for k, v in art.report.concept_links.items()}
    return tpl.render(r=art.report, charts=art.charts, thumbs=art.thumbnails, csp=CSP, top_rows=top_rows, names=names,
                      occlusion=art.occlusion, check_counts=check_counts,
                      peak=lambda m: max((abs(v) for row in m for v in row), default=0.0),
                      scale=max(contribs) if contribs else 1.0,
                      fmt=lambda v: "–" if v is None or v != v else f"{v:.3f}",
                      sign=lambda v: {1: "+", -1: "−", 0: "0"}.get(v, "–"))
