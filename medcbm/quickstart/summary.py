"""The quickstart's printed summary: plain text that fits a 100-column terminal, with the paths it wrote."""

from __future__ import annotations

import textwrap
from pathlib import Path

from medcbm.quickstart.results import AcceptResult, AdaptResult, Gain, QuickstartResult, Scores

WIDTH = 100


def _wrap(text: str, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ")


def _score_row(name: str, s: Scores) -> str:
    return f"  {name:<22}{s.id_acc:>8.3f}{s.ood_acc:>9.3f}{s.gap:>+9.3f}{s.ood_balanced_acc:>12.3f}{s.ood_auroc:>10.3f}"


def _gain(g: Gain) -> str:
    return f"{g.gain:+.3f} [95 % interval {g.ci95[0]:+.3f}, {g.ci95[1]:+.3f}] on {g.n} images"


def _adapt_lines(a: AdaptResult) -> list[str]:
    lines = [*_wrap(f"{a.n_support} labelled images ({a.k} per class) and {a.n_unlabelled} unlabelled ones from a site "
                    f"the model never saw; base and adapted model compared on {a.n_query} images of other patients:"),
             f"  {'':<22}{'acc':>8}{'bal.acc':>9}{'AUROC':>9}",
             f"  {'before':<22}{a.before.acc:>8.3f}{a.before.balanced_acc:>9.3f}{a.before.auroc:>9.3f}",
             f"  {'after (' + a.adapter + ')':<22}{a.after.acc:>8.3f}{a.after.balanced_acc:>9.3f}{a.after.auroc:>9.3f}"]
    if a.estimate is not None:
        lines += _wrap(f"estimated from the support: {_gain(a.estimate)} ({a.estimate.verdict})")
    lines += _wrap(f"measured on the held-out query: {_gain(a.heldout)} ({a.heldout.verdict})")
    lines += _wrap(("model left unchanged: " if not a.changed else "") + a.reason)
    shown = [c for c in a.changes if c.action != "shifted"] or a.changes
    for c in shown[:6]:
        q = f" — {c.question}" if c.question else ""
        factor = f" (x{c.factor:.2f})" if c.action == "amplified" else ""
        lines += _wrap(f"{c.action:<10} {c.concept}{factor}{q}", "    ")
    if len(shown) > 6:
        lines.append(f"    ... and {len(shown) - 6} more (all of them: the audit report)")
    return lines + _wrap("`medcbm bench adapt` repeats this over 5 seeds x 30 draws on two held-out sites")


def _accept_lines(c: AcceptResult) -> list[str]:
    lines = _wrap(f"verdict: {c.verdict.upper()} — balanced accuracy {c.balanced_acc:.3f} "
                  f"[{c.balanced_acc_ci95[0]:.3f}, {c.balanced_acc_ci95[1]:.3f}] on the held-out query")
    for r in c.reasons:
        lines += _wrap(f"- {r}", "    ")
    return lines


def _short(path: str, run_dir: str) -> str:
    """The path relative to the run directory when it is inside it (long temp paths would overflow a line)."""
    try:
        return str(Path(path).relative_to(run_dir))
    except ValueError:
        return path


def render_summary(res: QuickstartResult) -> str:
    """The journey's findings and the files it wrote, as lines of at most ``WIDTH`` characters."""
    d, t, a, c, au = res.data, res.train, res.adapt, res.accept, res.audit
    images = ", ".join(f"{k} {v}" for k, v in d.images.items())
    lines = ["medcbm quickstart", "",
             "1. Data",
             f"  imported {images} images",
             *_wrap("HAM10000 sites: " + ", ".join(f"{k} {v}" for k, v in d.sites.items())),
             *_wrap(f"protocol {d.protocol} (seed {d.seed}): trained at two acquisition sites, where the site "
                    "nearly gives the label away (almost every malignant image is from one of them); out of domain = "
                    "the third site, never seen in training; split "
                    + ", ".join(f"{k} {v}" for k, v in d.split_sizes.items())),
             "",
             f"2. Train: a black box and a concept bottleneck model ({t.n_concepts} clinical concepts)",
             f"  {'':<22}{'ID acc':>8}{'OOD acc':>9}{'gap':>9}{'OOD bal.acc':>12}{'OOD AUROC':>10}",
             _score_row("linear probe", t.probe), _score_row("CBM", t.cbm),
             "",
             f"3. Adapt the CBM to the new site (adaptation '{a.site}')",
             *_adapt_lines(a),
             "",
             "4. Accept: should the adapted model be used at the new site?",
             *_accept_lines(c),
             "",
             "5. Audit",
             *_wrap(f"{au.n_cases} out-of-domain cases explained ({au.n_correct} correct, {au.n_wrong} wrong) with "
                    f"cited concepts, plus the global view of {au.n_images} images"),
             "",
             f"Files in {res.run_dir}",
             *(f"  {name:<15}{_short(path, res.run_dir)}" for name, path in (
                 ("acceptance", c.html), ("audit report", au.html), ("model card", au.model_card), ("model", t.model_dir),
                 ("adaptation", a.adaptation_dir), ("metrics", res.metrics))),
             "",
             "Time  " + ", ".join(f"{s} {res.seconds[s]:.0f} s" + (" (cached)" if res.cached[s] else "")
                                  for s in res.seconds),
             *_wrap(f"Review the new site's cases concept by concept in your browser: medcbm review "
                    f"{a.adaptation_dir} {a.query_manifest} --cache-dir {res.run_dir}/features", ""),
             *_wrap("Every seed and ablation: make bench (medcbm bench shift, medcbm bench adapt). Your own data: "
                    "notebooks/.", "")]
    return "\n".join(lines)
