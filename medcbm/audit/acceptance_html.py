"""The site acceptance report as files: one self-contained HTML page (no script, nothing loaded from outside)
and its JSON, written atomically into a fresh folder."""

from __future__ import annotations

import os
from pathlib import Path

from medcbm._io import atomic_write_json, atomic_write_text
from medcbm.audit import charts
from medcbm.audit.acceptance import SiteAcceptance, build_acceptance
from medcbm.audit.render import CSP, HEAD
from medcbm.data.manifest import Manifest
from medcbm.errors import ConfigError

HEADLINE = {"ready": "Ready for use at this site", "adapt and re-check": "Adapt and re-check before use",
            "do not deploy": "Do not deploy at this site"}

TEMPLATE = HEAD + r"""<title>Site acceptance: {{ headline }}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1a1a1a;background:#fff;line-height:1.45}
header,main,footer{max-width:960px;margin:0 auto;padding:0 1rem}
h1{font-size:1.45rem;color:#0b3a66}h2{font-size:1.15rem;color:#0b3a66;border-bottom:1px solid #ccc;margin-top:1.8rem}
.verdict{border-radius:6px;padding:.7rem 1rem;margin:1rem 0;border:2px solid}
.verdict.ready{background:#e8f5ec;border-color:#1b6e3a}.verdict.adapt{background:#fff6de;border-color:#8a6100}
.verdict.stop{background:#fde8e6;border-color:#a3241b}
.verdict p.big{font-size:1.3rem;font-weight:700;margin:.2rem 0}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem;max-width:100%}
th,td{border:1px solid #bbb;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#eef3f8}caption{text-align:left;font-weight:600;padding:.2rem 0}
.wrap{overflow-x:auto}.muted{color:#4d4d4d}figure{margin:.5rem 0}svg{max-width:100%;height:auto}
</style>
</head>
<body>
<header>
<h1>Site acceptance report: {{ r.site }}</h1>
<p class="muted">{{ r.n }} labelled images of the site ({% for c, n in r.per_class.items() %}{{ n }} {{ c }}{% if not loop.last %}, {% endif %}{% endfor %}), none of them used to adapt or choose anything. Intervals are 95 %.</p>
</header>
<main>
<section aria-labelledby="h-verdict">
<h2 id="h-verdict">Verdict</h2>
<div class="verdict {{ tone }}" role="status"><p class="big">{{ headline }}</p>
<p>Why:</p><ul>{% for reason in r.reasons %}<li>{{ reason }}</li>{% endfor %}</ul></div>
<p class="muted">This is a statement about the model on these images, not about any patient. It does not replace clinical judgement.</p>
</section>
<section aria-labelledby="h-perf">
<h2 id="h-perf">How well it does here</h2>
<div class="wrap"><table><caption>Performance on the site's labelled images</caption>
<tr><th scope="col">measure</th><th scope="col">value</th><th scope="col">95 % interval</th><th scope="col">what it means</th></tr>
<tr><th scope="row">balanced accuracy</th><td>{{ "%.3f"|format(r.balanced_accuracy.value) }}</td><td>{{ "%.3f"|format(r.balanced_accuracy.ci95[0]) }} – {{ "%.3f"|format(r.balanced_accuracy.ci95[1]) }}</td><td>the average of the share of each diagnosis recognised; {{ "%.2f"|format(1 / r.classes|length) }} is guessing</td></tr>
<tr><th scope="row">accuracy</th><td>{{ "%.3f"|format(r.accuracy.value) }}</td><td>{{ "%.3f"|format(r.accuracy.ci95[0]) }} – {{ "%.3f"|format(r.accuracy.ci95[1]) }}</td><td>the share of images classified correctly (depends on the case mix)</td></tr>
<tr><th scope="row">AUROC</th><td>{{ fmt(r.auroc.value) }}</td><td>{{ fmt(r.auroc.ci95[0]) }} – {{ fmt(r.auroc.ci95[1]) }}</td><td>how often a {{ r.classes[-1] }} image is ranked above a {{ r.classes[0] }} one; 0.5 is guessing</td></tr>
{% if r.home_balanced_accuracy is not none %}<tr><th scope="row">at the training sites</th><td>{{ "%.3f"|format(r.home_balanced_accuracy) }}</td><td>–</td><td>balanced accuracy on held-out images of the sites it was trained at ({{ r.home_split }})</td></tr>{% endif %}
</table></div>
</section>
<section aria-labelledby="h-cal">
<h2 id="h-cal">Can its probabilities be read as stated?</h2>
<p>Expected calibration error {{ "%.3f"|format(r.calibration.ece) }} (0 would mean that of the images called with 80 % confidence, 80 % are right).</p>
<figure>{{ reliability|safe }}</figure>
</section>
<section aria-labelledby="h-drift">
<h2 id="h-drift">Concepts that read differently here</h2>
<p>How far each concept's activation lies from the training images of the same diagnosis, in training standard deviations (largest first). Large values mean the concept detector sees this site's images differently; explanations that rest on it deserve a second look.</p>
<div class="wrap"><table><caption>Concept drift at this site</caption>
<tr><th scope="col">concept</th><th scope="col">shift (SD)</th><th scope="col">clinical question</th></tr>
{% for d in r.drift %}<tr><th scope="row">{{ d.concept.replace("_", " ") }}</th><td>{{ "%+.2f"|format(d.shift_sd) }}</td><td>{{ d.question or "–" }}</td></tr>{% endfor %}
</table></div>
</section>
<section aria-labelledby="h-adapt">
<h2 id="h-adapt">Effect of the adaptation</h2>
{% if r.adaptation %}<p>Compared with the unadapted model on the same images: balanced accuracy {{ "%.3f"|format(r.adaptation.baseline_balanced_acc) }} before, {{ "%.3f"|format(r.balanced_accuracy.value) }} after; gain {{ "%+.3f"|format(r.adaptation.gain) }} (95 % interval {{ "%+.3f"|format(r.adaptation.ci95[0]) }} to {{ "%+.3f"|format(r.adaptation.ci95[1]) }}): {{ {"gain": "a gain", "loss": "a loss", "cannot tell": "these images cannot tell it from no change"}[r.adaptation.verdict] }}. {{ r.adaptation.changed_predictions }} of {{ r.n }} predictions differ.</p>
{% else %}<p>No adaptation was assessed: this is the model as trained.</p>{% endif %}
</section>
</main>
<footer><p class="muted">Written by medcbm {{ r.medcbm_version }} (report schema {{ r.schema_version }}). Thresholds: near chance below {{ "%.2f"|format(r.criteria.near_chance) }}; ready from {{ "%.2f"|format(r.criteria.ready_floor) }}; home tolerance {{ "%.2f"|format(r.criteria.home_tolerance) }}; calibration error at most {{ "%.2f"|format(r.criteria.max_ece) }}; at least {{ r.criteria.min_images }} images. This file loads nothing from outside itself.</p></footer>
</body>
</html>
"""


def render_acceptance(report: SiteAcceptance) -> str:
    """The report as one HTML page."""
    from jinja2 import Environment

    tone = {"ready": "ready", "adapt and re-check": "adapt", "do not deploy": "stop"}[report.verdict]
    tpl = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string(TEMPLATE)
    return tpl.render(r=report, csp=CSP, tone=tone, headline=HEADLINE[report.verdict],
                      reliability=charts.reliability_chart([b.model_dump() for b in report.calibration.bins]),
                      fmt=lambda v: "–" if v != v else f"{v:.3f}")


def write_acceptance_report(model_dir: str | os.PathLike, manifest: Manifest, out_dir: str | os.PathLike, *,
                            force: bool = False, **kwargs) -> dict[str, Path]:
    """Build the report (:func:`~medcbm.audit.acceptance.build_acceptance` arguments) and write
    ``acceptance.html`` and ``acceptance.json`` into ``out_dir`` (new, empty, or replaced with ``force``)."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ConfigError(f"output folder {out} already exists and is not empty; choose another or pass --force")
    report = build_acceptance(model_dir, manifest, **kwargs)
    files = {"html": out / "acceptance.html", "json": out / "acceptance.json"}
    atomic_write_text(files["html"], render_acceptance(report))
    atomic_write_json(files["json"], report.model_dump(mode="json"))
    return files
