"""Charts as inline SVG strings (matplotlib, no pyplot state): offline, byte-identical across runs.

Text stays text (``svg.fonttype = none``), ids are salted with a fixed string and no date is written, so the same
data gives the same bytes. Every chart gets ``role="img"`` and an ``aria-label``; the report also shows its data
as a table.
"""

from __future__ import annotations

import io
import re
from typing import Sequence

import numpy as np

RC = {"svg.fonttype": "none", "svg.hashsalt": "medcbm-audit", "font.size": 9, "font.family": "DejaVu Sans"}
#: colour-blind-safe (Okabe–Ito) colours for the prior-agreement states
AGREEMENT_COLOURS = {"agrees": "#0072B2", "contradicts": "#D55E00", "no prior": "#7f7f7f", "unused": "#bbbbbb"}


def _svg(fig, label: str) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # drop the XML declaration and DOCTYPE: it is inlined in HTML
    safe = label.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return re.sub(r"<svg ", f'<svg role="img" aria-label="{safe}" focusable="false" ', text, count=1)


def _figure(w: float, h: float):
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(RC):
        return Figure(figsize=(w, h), dpi=72)


def weights_chart(concepts: Sequence[str], weights: Sequence[float], priors: Sequence[int | None],
                  agreement: Sequence[str], *, cls: str) -> str:
    """Horizontal bars of one class's weights, coloured by agreement with the prior (prior sign as a marker)."""
    import matplotlib

    with matplotlib.rc_context(RC):
        n = len(concepts)
        fig = _figure(6.0, 0.8 + 0.22 * n)
        ax = fig.add_subplot()
        ypos = np.arange(n)[::-1]
        ax.barh(ypos, weights, color=[AGREEMENT_COLOURS.get(a, "#7f7f7f") for a in agreement])
        lim = max(1e-3, float(np.max(np.abs(weights))) if n else 1.0)
        for yy, p in zip(ypos, priors):
            if p:
                ax.text(lim * 1.12, yy, "prior +" if p > 0 else "prior −", va="center", fontsize=7)
        ax.set_yticks(ypos, [c.replace("_", " ") for c in concepts])
        ax.set_xlim(-lim * 1.1, lim * 1.45)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlabel(f"weight on the '{cls}' logit (standardised concept)")
        ax.set_title(f"Concept weights for '{cls}' (blue: agrees with the prior, orange: contradicts)")
        return _svg(fig, f"Bar chart of concept weights for class {cls}, coloured by agreement with the clinical prior")


def reliability_chart(bins: Sequence[dict]) -> str:
    """Reliability diagram: accuracy against mean confidence per bin, with the diagonal and bin counts."""
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = _figure(4.2, 3.6)
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], ls="--", color="#7f7f7f", lw=1, label="perfect calibration")
        pts = [(b["confidence"], b["accuracy"], b["n"]) for b in bins if b["n"]]
        if pts:
            c, a, n = map(np.asarray, zip(*pts))
            ax.plot(c, a, marker="o", color="#0072B2", label="model")
            for ci, ai, ni in zip(c, a, n):
                ax.annotate(str(int(ni)), (ci, ai), textcoords="offset points", xytext=(3, -9), fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("mean confidence of the predicted class")
        ax.set_ylabel("accuracy")
        ax.legend(loc="upper left", fontsize=7)
        ax.set_title("Reliability (labels: images per bin)")
        return _svg(fig, "Reliability diagram: accuracy against confidence per bin")


def drift_chart(concepts: Sequence[str], groups: Sequence[str], smd: np.ndarray, *, threshold: float) -> str:
    """Heat map of the standardised mean difference of each concept (rows) per group (columns)."""
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = _figure(1.8 + 0.9 * len(groups), 0.9 + 0.22 * len(concepts))
        ax = fig.add_subplot()
        lim = max(1.0, float(np.nanmax(np.abs(smd))) if smd.size else 1.0)
        im = ax.imshow(np.nan_to_num(smd), cmap="PuOr_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_yticks(range(len(concepts)), [c.replace("_", " ") for c in concepts])
        ax.set_xticks(range(len(groups)), list(groups), rotation=30, ha="right")
        for i in range(len(concepts)):
            for j in range(len(groups)):
                v = smd[i, j]
                if np.isfinite(v) and abs(v) >= threshold:
                    ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, label="SMD vs other sites")
        ax.set_title(f"Concept activation drift per site (|SMD| ≥ {threshold} labelled)")
        return _svg(fig, "Heat map of concept activation drift per site")


def curves_chart(curves: dict[str, Sequence[float]]) -> str:
    """Accuracy against the number of concepts corrected, one line per order."""
    import matplotlib

    styles = {"random": ("#7f7f7f", "--"), "uncertainty": ("#0072B2", "-"), "contribution": ("#009E73", "-"),
              "oracle": ("#D55E00", ":")}
    with matplotlib.rc_context(RC):
        fig = _figure(4.6, 3.4)
        ax = fig.add_subplot()
        for name, c in curves.items():
            col, ls = styles.get(name, ("black", "-"))
            ax.plot(range(len(c)), c, color=col, ls=ls, label=name)
        ax.set_xlabel("concepts corrected per case")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
        ax.set_title("Intervention curves")
        return _svg(fig, "Line chart of accuracy against number of concepts corrected, per correction order")
