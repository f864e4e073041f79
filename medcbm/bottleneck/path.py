"""A regularisation path for the bottleneck: every strength fitted to convergence, one chosen on validation.

Each strength of the grid is a full-batch L-BFGS-B fit of the same objective the Adam trainer uses
(class/sample-weighted cross-entropy + KnoBo prior term + elastic net), warm-started from the stronger
neighbour. ``sign_constraint`` becomes box bounds (``W[c, k]`` on the prior's side of 0), so the constraint
holds exactly instead of by projection after each step. The strength is chosen on the validation split by
a criterion that does not reward leaning on a nuisance: the mean (``group_balanced``) or worst
(``worst_group``) validation loss over (class × nuisance group) cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medcbm.bottleneck.estimator_math import softmax

EPS = 1e-4  # smoothing of |x| in the prior and L1 terms: L-BFGS needs a gradient at 0
MIN_CELL = 5  # a validation cell this small gives a noisy loss: it is pooled into the class's others


@dataclass(frozen=True)
class Penalty:
    """One point of the path and the fixed parts of the objective."""

    l2: float
    l1: float
    prior_weight: float


@dataclass
class PathPoint:
    """A converged fit at one strength and its validation criterion."""

    penalty: Penalty
    W: np.ndarray
    b: np.ndarray
    criterion: float
    iterations: int
    converged: bool


def sample_weights(y: np.ndarray, n_classes: int, class_balanced: bool, sw: np.ndarray | None) -> np.ndarray:
    """Per-sample loss weights normalised to sum 1 (inverse class frequency times ``sw``)."""
    w = np.ones(len(y)) if sw is None else np.asarray(sw, float).copy()
    if class_balanced:
        counts = np.bincount(y, minlength=n_classes).astype(float)
        w = w * (len(y) / (n_classes * np.clip(counts, 1, None)))[y]
    return w / w.sum()


def _smooth_abs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.sqrt(x * x + EPS * EPS)
    return r, x / r


def objective(theta: np.ndarray, Z: np.ndarray, Y: np.ndarray, a: np.ndarray, prior: np.ndarray | None,
              pen: Penalty) -> tuple[float, np.ndarray]:
    """Loss and gradient over ``theta = [W.ravel(), b]`` (``Y`` one-hot, ``a`` weights summing to 1)."""
    C, K = Y.shape[1], Z.shape[1]
    W, b = theta[:C * K].reshape(C, K), theta[C * K:]
    logits = Z @ W.T + b
    logits -= logits.max(1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    loss = float(-(a * (Y * logp).sum(1)).sum())
    G = a[:, None] * (np.exp(logp) - Y)
    gW, gb = G.T @ Z, G.sum(0)
    if prior is not None and pen.prior_weight > 0:
        t = np.tanh(W)
        r, dr = _smooth_abs(t - prior)
        loss += pen.prior_weight * float(r.mean())
        gW = gW + pen.prior_weight / W.size * dr * (1 - t * t)
    if pen.l1 > 0:
        r, dr = _smooth_abs(W)
        loss += pen.l1 * float(r.sum()) / W.size
        gW = gW + pen.l1 / W.size * dr
    loss += pen.l2 * float((W * W).sum())
    gW = gW + 2 * pen.l2 * W
    return loss, np.concatenate([gW.ravel(), gb])


def bounds(prior: np.ndarray | None, C: int, K: int, sign_constraint: bool) -> list[tuple]:
    """L-BFGS-B box bounds: with ``sign_constraint`` each weight stays on its non-zero prior's side of 0."""
    free = [(None, None)] * (C * K + C)
    if prior is None or not sign_constraint:
        return free
    box = [(0.0, None) if p > 0 else (None, 0.0) if p < 0 else (None, None) for p in np.asarray(prior).ravel()]
    return box + [(None, None)] * C


def fit_one(Z: np.ndarray, Y: np.ndarray, a: np.ndarray, prior: np.ndarray | None, pen: Penalty, *,
            box: list[tuple], init: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, int, bool]:
    """Minimise :func:`objective` to convergence; returns ``(theta, iterations, converged)``."""
    from scipy.optimize import minimize

    res = minimize(objective, init, args=(Z, Y, a, prior, pen), jac=True, method="L-BFGS-B", bounds=box,
                   options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-12})
    return res.x, int(res.nit), bool(res.success)


def cell_losses(logits: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Mean cross-entropy per (class × nuisance group) cell with at least :data:`MIN_CELL` images.

    Smaller cells are pooled per class (a class is always one cell at least), so a three-image cell
    cannot decide the strength on its own.
    """
    ce = -np.log(np.clip(softmax(logits)[np.arange(len(y)), y], 1e-12, None))
    g = np.zeros(len(y), dtype=object) if groups is None else np.asarray(groups).astype(str)
    out = []
    for c in np.unique(y):
        in_c = y == c
        pooled = np.zeros(len(y), bool)
        for v in np.unique(g[in_c]):
            m = in_c & (g == v)
            if m.sum() >= MIN_CELL:
                out.append(ce[m].mean())
            else:
                pooled |= m
        if pooled.any():
            out.append(ce[pooled].mean())
    return np.array(out)


def criterion(kind: str, logits: np.ndarray, y: np.ndarray, groups, weight: np.ndarray | None) -> float:
    """Validation criterion: ``group_balanced`` / ``worst_group`` over cells, or the ``weighted`` mean loss."""
    if kind == "weighted":
        ce = -np.log(np.clip(softmax(logits)[np.arange(len(y)), y], 1e-12, None))
        w = sample_weights(y, logits.shape[1], True, weight)
        return float((w * ce).sum())
    cells = cell_losses(logits, y, groups)
    return float(cells.max() if kind == "worst_group" else cells.mean())


def regularisation_path(Z: np.ndarray, y: np.ndarray, Zv: np.ndarray, yv: np.ndarray, *, n_classes: int,
                        prior: np.ndarray | None, penalties: list[Penalty], a: np.ndarray, sign_constraint: bool,
                        select: str, val_groups=None, val_weight: np.ndarray | None = None, tol: float = 1e-6,
                        max_iter: int = 2000) -> tuple[PathPoint, list[PathPoint]]:
    """Fit every penalty (strongest first, warm-started) and return the chosen point and the whole path.

    Ties go to the stronger penalty (the earlier point).
    """
    C, K = n_classes, Z.shape[1]
    Y = np.eye(C)[y]
    box = bounds(prior, C, K, sign_constraint)
    theta = np.zeros(C * K + C)
    path: list[PathPoint] = []
    for pen in sorted(penalties, key=lambda p: (-p.l2, -p.l1)):
        theta, nit, ok = fit_one(Z, Y, a, prior, pen, box=box, init=theta, tol=tol, max_iter=max_iter)
        W, b = theta[:C * K].reshape(C, K).copy(), theta[C * K:].copy()
        crit = criterion(select, Zv @ W.T + b, yv, val_groups, val_weight)
        path.append(PathPoint(pen, W, b, crit, nit, ok))
    best = min(path, key=lambda p: p.criterion)
    return best, path
