"""Leave-one-shot-out choice of an adapter's hyper-parameters on the support set, with a guard.

A *shot* is one image of every class (a k-shot support set has k of them). Every candidate setting is
fitted on the support set minus one shot and scored on the held-out shot's images; the identity (no
adaptation) is scored the same way. With one image per class there is no shot to spare, so each image
is held out alone; above ``MAX_FOLDS`` shots, shots are pooled into that many folds (cost stays flat). The best candidate is kept only if its leave-one-out
balanced accuracy is higher than the identity's and its log-loss is not worse: with a handful of
images a change that leave-one-out cannot tell from noise is not made, and the adapter says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from medcbm.adapt.edit import ConceptEdit
from medcbm.bottleneck.estimator import softmax

MAX_FOLDS = 8


def shot_folds(y: np.ndarray, max_folds: int = MAX_FOLDS) -> np.ndarray:
    """Fold index per support image: the i-th image of every class belongs to shot i."""
    shot = np.zeros(len(y), int)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        shot[idx] = np.arange(len(idx))
    k = min(np.bincount(y)[np.unique(y)])
    if k < 2:  # no shot to spare: leave each image out alone
        return np.arange(len(y))
    return shot % min(k, max_folds)


@dataclass(frozen=True)
class LooScore:
    balanced_acc: float
    log_loss: float

    def better_than(self, other: "LooScore") -> bool:
        return (self.balanced_acc, -self.log_loss) > (other.balanced_acc, -other.log_loss)

    def to_json(self) -> dict:
        return {"balanced_acc": round(self.balanced_acc, 4), "log_loss": round(self.log_loss, 4)}


@dataclass(frozen=True)
class Selection:
    """What leave-one-out found: the chosen parameters (``None`` = unchanged) and why."""

    params: dict[str, Any] | None
    identity: LooScore
    best: LooScore
    best_params: dict[str, Any] | None
    reason: str
    table: list[dict] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.params is not None

    @property
    def gain(self) -> float:
        """Leave-one-out balanced-accuracy gain of the chosen setting over no adaptation."""
        return self.best.balanced_acc - self.identity.balanced_acc if self.changed else 0.0


def loo_score(logits: np.ndarray, y: np.ndarray, n_classes: int) -> LooScore:
    p = softmax(logits)
    pred = p.argmax(1)
    present = np.unique(y)
    bal = float(np.mean([(pred[y == c] == c).mean() for c in present]))
    ll = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
    return LooScore(bal, ll)


def leave_one_out(prepare: Callable[[np.ndarray, np.ndarray], Any],
                  make_edit: Callable[[Any, dict], ConceptEdit], candidates: list[dict],
                  Z: np.ndarray, y: np.ndarray, identity: ConceptEdit, *, guard: bool = True) -> Selection:
    """Choose among ``candidates`` by leave-one-shot-out on ``(Z, y)``.

    Args:
        prepare: ``(Z, y) -> state`` (the statistics of a fitting subset, computed once per held-out image).
        make_edit: ``(state, params) -> ConceptEdit``.
        candidates: hyper-parameter settings, mildest first (ties keep the earlier one).
        identity: the unadapted model's edit.
        guard: keep the model unchanged when no candidate beats it.
    """
    n, C = len(y), identity.W.shape[0]
    out = np.zeros((len(candidates), n, C), np.float32)
    folds = shot_folds(y)
    for f in np.unique(folds):
        held = folds == f
        state = prepare(Z[~held], y[~held])
        for h, params in enumerate(candidates):
            out[h, held] = make_edit(state, params).logits(Z[held])
    base = loo_score(identity.logits(Z), y, C)
    scores = [loo_score(out[h], y, C) for h in range(len(candidates))]
    table = [{"params": p, **s.to_json()} for p, s in zip(candidates, scores)]
    if not candidates:
        return Selection(None, base, base, None, "no candidate settings", table)
    h = 0
    for j in range(1, len(scores)):
        if scores[j].better_than(scores[h]):
            h = j
    best, params = scores[h], candidates[h]
    if not guard:
        return Selection(params, base, best, params, "guard off: best leave-one-out setting", table)
    if best.balanced_acc > base.balanced_acc and best.log_loss <= base.log_loss:
        return Selection(params, base, best, params, "leave-one-out gain", table)
    reason = (f"model left unchanged: no leave-one-out gain (best balanced accuracy {best.balanced_acc:.3f} vs "
              f"{base.balanced_acc:.3f} unadapted, log-loss {best.log_loss:.3f} vs {base.log_loss:.3f})")
    return Selection(None, base, best, params, reason, table)
