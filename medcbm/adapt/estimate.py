"""How much an adaptation gains, with an interval that is honest about a handful of images.

The gain is the difference in balanced accuracy between two models scored on the *same* labelled images
(paired). Per class, every image is one of three outcomes — only the adapted model right (+1), both or
neither (0), only the base model right (-1) — and the class's gain is ``P(+1) - P(-1)``. The interval is
the posterior of the class-averaged gain under a Dirichlet(1/2) (Jeffreys) prior on each class's three
outcomes: with hundreds of images it matches a paired bootstrap; with four images per class it is as wide
as four images warrant, where a plain bootstrap of a support on which no prediction changed would claim
``[0, 0]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRIOR = 0.5  # Jeffreys


@dataclass(frozen=True)
class GainEstimate:
    """A paired balanced-accuracy gain with its 95 % interval and what it was measured on."""

    gain: float
    ci95: tuple[float, float]
    n: int
    measured_on: str

    @property
    def verdict(self) -> str:
        """``gain`` (interval above 0), ``loss`` (below 0) or ``cannot tell``."""
        lo, hi = self.ci95
        return "gain" if lo > 0 else "loss" if hi < 0 else "cannot tell"

    def describe(self) -> str:
        lo, hi = self.ci95
        return f"{self.gain:+.3f} [95 % interval {lo:+.3f}, {hi:+.3f}] on {self.n} images ({self.measured_on})"

    def to_json(self) -> dict:
        return {"gain": round(self.gain, 4), "ci95": [round(self.ci95[0], 4), round(self.ci95[1], 4)], "n": self.n,
                "measured_on": self.measured_on, "verdict": self.verdict}


def paired_gain(y: np.ndarray, base_correct: np.ndarray, new_correct: np.ndarray, *, measured_on: str,
                draws: int = 4000, seed: int = 0) -> GainEstimate:
    """Balanced-accuracy gain of ``new`` over ``base`` on the same images, with a 95 % interval.

    Args:
        y: class index per image.
        base_correct, new_correct: whether each model got each image right.
        measured_on: which images these are (goes into reports: e.g. "held-out query").
    """
    y = np.asarray(y, int)
    d = np.asarray(new_correct, int) - np.asarray(base_correct, int)
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    point, post = [], np.zeros((draws, len(classes)))
    for j, c in enumerate(classes):
        dc = d[y == c]
        counts = np.array([(dc == 1).sum(), (dc == 0).sum(), (dc == -1).sum()], float)
        point.append((counts[0] - counts[2]) / counts.sum())
        p = rng.dirichlet(counts + PRIOR, draws)
        post[:, j] = p[:, 0] - p[:, 2]
    g = post.mean(1)
    return GainEstimate(float(np.mean(point)), (float(np.quantile(g, 0.025)), float(np.quantile(g, 0.975))),
                        int(len(y)), measured_on)


def correct(logits_or_proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.asarray(logits_or_proba).argmax(1) == np.asarray(y)
