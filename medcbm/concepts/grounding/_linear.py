"""Batched L2-regularised, class-weighted logistic regression in torch.

Many independent problems (concepts x regularisation strengths x CV folds) share one design matrix.
Objective per problem ``p`` (the same optimum as scikit-learn's ``C``-parameterised form with
``C = 1 / (lam * n_p)``, ``n_p`` the problem's training-set size)::

    sum_i w_ip * BCE(x_i . v_p + b_p, y_ip) / n_p + lam_p / 2 * ||v_p||^2        (bias unregularised)

By the representer theorem the optimal ``v_p`` lies in the row space of ``X``; with ``X = U S V^T`` we
solve exactly in the ``r = rank(X) <= n`` coordinates ``Z = U S`` and map back with ``v = V beta``.
There, :func:`fit_batched_logistic` runs accelerated majorisation-minimisation whose curvature matrix
depends only on each problem's fold, so one eigendecomposition per fold serves every concept and C.
Problems are packed per fold into ``(fold, problem, ·)`` tensors so a step is a handful of batched
products for all folds at once; converged problems are dropped between short rounds.
"""

from __future__ import annotations

import numpy as np
import torch

from medcbm._torch import single_threaded


def balanced_weights(Y: np.ndarray, M: np.ndarray | None = None) -> np.ndarray:
    """Per-sample, per-problem weights ``n / (2 * n_class)`` (scikit-learn's ``class_weight='balanced'``).

    Args:
        Y: ``(n, P)`` binary targets.
        M: optional ``(n, P)`` mask of samples that belong to each problem (e.g. training fold).
    """
    M = np.ones_like(Y, dtype=float) if M is None else M.astype(float)
    n = M.sum(0, keepdims=True)
    pos = (Y * M).sum(0, keepdims=True)
    neg = n - pos
    w_pos = n / (2 * np.clip(pos, 1, None))
    w_neg = n / (2 * np.clip(neg, 1, None))
    return M * np.where(Y > 0.5, w_pos, w_neg)


def _row_space(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Z = U S`` and ``V`` of the thin SVD ``X = U S V^T`` (numerically null directions dropped).

    Taken from the eigendecomposition of the smaller Gram matrix (``X X^T`` or ``X^T X``): several times
    cheaper than an SVD, and the squared conditioning only affects directions the L2 penalty dominates.
    """
    n, d = X.shape
    if n <= d:
        ev, U = torch.linalg.eigh(X @ X.T)
        keep = ev > ev.max() * 1e-12
        S = ev[keep].sqrt()
        return U[:, keep] * S, (X.T @ U[:, keep]) / S
    ev, V = torch.linalg.eigh(X.T @ X)
    keep = ev > ev.max() * 1e-12
    return X @ V[:, keep], V[:, keep]


def fit_batched_logistic(
    X: np.ndarray,
    Y: np.ndarray,
    W: np.ndarray,
    lam: np.ndarray,
    *,
    max_iter: int = 400,
    tol: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``P`` logistic problems that share the design matrix ``X``.

    Majorisation-minimisation with Böhning's bound ``sigma'(z) <= 1/4``: each step minimises a quadratic
    upper bound whose curvature is ``a_p * Gram(fold) + lam_p * I``. The Gram matrix (weighted-centred, so
    the unregularised bias drops out exactly) depends only on the problem's sample mask, so one
    eigendecomposition per fold serves every concept and every C; each step is then a few matrix
    products. Nesterov momentum with adaptive restart makes the bound's linear rate fast in practice.

    Args:
        X: ``(n, d)`` standardised features.
        Y: ``(n, P)`` binary targets per problem.
        W: ``(n, P)`` sample weights per problem (0 excludes a sample, e.g. a held-out fold).
        lam: ``(P,)`` L2 strengths.
        max_iter: iterations at most.
        tol: stop when the largest relative objective change falls below this.

    Returns:
        ``coef (d, P)`` and ``intercept (P,)``.
    """
    f64, f32 = torch.float64, torch.float32
    Z64, V = _row_space(torch.as_tensor(X, dtype=f64))
    Z = Z64.to(f32)
    Yt, Wt = torch.as_tensor(Y, dtype=f32), torch.as_tensor(W, dtype=f32)
    lam_t = torch.as_tensor(lam, dtype=f32)
    M = torch.as_tensor(W) > 0
    n_in = M.sum(0).clamp_min(1).to(f32)
    a = Wt.max(0).values / (4 * n_in)  # curvature bound per problem
    # one spectral decomposition per distinct sample mask (fold), in float64, used in float32
    masks, group = torch.unique(M.T, dim=0, return_inverse=True)
    spectra = []
    for m in masks.to(f64):
        g0 = m.sum()
        gz = Z64.T @ m
        lc, Q = torch.linalg.eigh((Z64.T * m) @ Z64 - torch.outer(gz, gz) / g0)
        spectra.append((g0, gz, lc.clamp_min(0), Q))
    spec = tuple(torch.stack(t).to(f32) for t in zip(*spectra))  # (G,), (G, r), (G, r), (G, r, r)

    P = Y.shape[1]
    beta = torch.zeros(Z.shape[1], P, dtype=f32)
    bias = torch.zeros(P, dtype=f32)
    # warm start along the regularisation path: solve the strongest penalties first and start each weaker
    # one from the solution of the same (fold, concept) problem -- same targets and weights -- one level up
    sig = [hash((Y[:, p].tobytes(), W[:, p].tobytes())) for p in range(P)]
    levels = torch.unique(lam_t).flip(0)  # strongest penalty first
    stages = [torch.nonzero(lam_t == lv).squeeze(1) for lv in levels] if len(levels) <= 32 else [torch.arange(P)]
    # each MM step is a few small products: iterate single-threaded; the decompositions above use all threads
    with single_threaded():
        _solve_stages(stages, sig, Z, Yt, Wt, n_in, lam_t, a, group, spec, beta, bias, max_iter, tol)
    return (V @ beta.to(f64)).numpy(), bias.to(f64).numpy()


def _solve_stages(stages, sig, Z, Yt, Wt, n_in, lam_t, a, group, spec, beta, bias, max_iter, tol):
    """Solve each penalty level in turn, warm-starting from the same problem one level up (in place)."""
    last_for: dict = {}
    for idx in stages:
        for p in idx.tolist():
            q = last_for.get(sig[p])
            if q is not None:
                beta[:, p], bias[p] = beta[:, q], bias[q]
        b, c = _mm_solve(Z, Yt[:, idx], Wt[:, idx], n_in[idx], lam_t[idx], a[idx], group[idx], spec,
                         beta[:, idx], bias[idx], max_iter, tol)
        beta[:, idx], bias[idx] = b, c
        for p in idx.tolist():
            last_for[sig[p]] = p


def _pack(group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Slot each problem into a ``(groups used, K)`` grid so every step is one batched op over all folds."""
    used, local = torch.unique(group, return_inverse=True)
    slot = torch.empty_like(group)
    for g in range(len(used)):
        sel = (local == g).nonzero().squeeze(1)
        slot[sel] = torch.arange(sel.numel())
    return used, local, slot, int(slot.max()) + 1


def _mm_solve(Z, Yt, Wt, n_in, lam, a, group, spec, beta, bias, max_iter, tol, round_iters: int = 16):
    """Accelerated MM iterations on a batch of problems; converged problems leave the batch.

    Active problems are packed per fold into ``(fold, ..., slot)`` tensors (padding slots carry zero
    weight and stay at zero), so each step is a handful of batched products over all folds at once. Every
    ``round_iters`` steps the problems that have converged are dropped and the rest repacked, so slow
    (weakly regularised) problems do not keep the whole batch iterating.
    """
    P = beta.shape[1]
    beta, bias = beta.clone(), bias.clone()
    yb, yc = beta.clone(), bias.clone()
    k = torch.ones(P)
    active = torch.arange(P)
    done = 0
    while active.numel() and done < max_iter:
        n_steps = min(round_iters, max_iter - done)
        A = active
        out = _mm_round(Z, Yt[:, A], Wt[:, A], n_in[A], lam[A], a[A], group[A], spec,
                        beta[:, A], bias[A], yb[:, A], yc[A], k[A], n_steps, tol)
        beta[:, A], bias[A], yb[:, A], yc[A], k[A], rel = out
        done += n_steps
        active = A[rel >= tol]
    return beta, bias


def _mm_round(Z, Yt, Wt, n_in, lam, a, group, spec, beta, bias, yb, yc, k, n_steps, tol):
    """Up to ``n_steps`` momentum-MM steps on packed problems; returns the unpacked state and last change.

    Tensors are problem-major, ``(fold, slot, n or r)``: with few problems per fold, products shaped
    ``(slots x r) @ (r x n)`` run several times faster on CPU than ``(n x r) @ (r x slots)``.
    """
    used, gi, si, K = _pack(group)
    G, n, r = len(used), Z.shape[0], Z.shape[1]

    def grid(v, fill, cols=1):  # (cols, P) -> (G, K, cols)
        out = torch.full((G, K, cols), fill, dtype=v.dtype)
        out[gi, si] = v.reshape(cols, -1).T
        return out

    def ungrid(t):  # (G, K, cols) -> (cols, P)
        return t[gi, si].T

    ZT = Z.T.contiguous()
    Y, W = grid(Yt, 0.0, n), grid(Wt, 0.0, n)
    nn_, ll, aa = grid(n_in, 1.0), grid(lam, 1.0), grid(a, 1.0)
    g0, gz, lc, Q = (t[used] for t in spec)
    g0, gzr, lcr, QT = g0[:, None, None], gz[:, None, :], lc[:, None, :], Q.transpose(1, 2).contiguous()
    denom = aa * lcr + ll

    # logits are linear in (b, c), so the momentum point's logits are combined from cached ones instead of
    # recomputed: one (slots x r) @ (r x n) product per step instead of two
    def objective(z, b):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, Y, reduction="none")
        return (W * loss).sum(-1, keepdim=True) / nn_ + 0.5 * ll * (b**2).sum(-1, keepdim=True)

    def step(z, b):
        """Minimiser of the quadratic upper bound at the point with logits ``z``, as a displacement."""
        res = W * (torch.sigmoid(z) - Y) / nn_
        gb, gc = res @ Z + ll * b, res.sum(-1, keepdim=True)
        xz = (((gb - gzr * gc / g0) @ Q) / denom) @ QT
        xc = (gc - aa * (xz * gzr).sum(-1, keepdim=True)) / (aa * g0)
        return xz, xc

    b, c, yb, yc, kk = grid(beta, 0.0, r), grid(bias, 0.0), grid(yb, 0.0, r), grid(yc, 0.0), grid(k, 1.0)
    zb, zy = b @ ZT + c, yb @ ZT + yc
    f = objective(zb, b)
    rel = torch.zeros_like(f)
    for _ in range(n_steps):
        xz, xc = step(zy, yb)
        nb, nc = yb - xz, yc - xc
        zn = nb @ ZT + nc
        f_new = objective(zn, nb)
        worse = f_new > f
        if bool(worse.any()):
            # adaptive restart: where momentum overshot, take a plain (monotone) MM step from the iterate
            xz0, xc0 = step(zb, b)
            nb, nc = torch.where(worse, b - xz0, nb), torch.where(worse, c - xc0, nc)
            zn = torch.where(worse, nb @ ZT + nc, zn)
            f_new = torch.where(worse, objective(zn, nb), f_new)
            kk = torch.where(worse, torch.ones_like(kk), kk)
        rel = (f - f_new).abs() / f.abs().clamp_min(1e-12)
        mom = (kk - 1) / (kk + 2)
        yb, yc, zy = nb + mom * (nb - b), nc + mom * (nc - c), zn + mom * (zn - zb)
        b, c, zb, f, kk = nb, nc, zn, f_new, kk + 1
        if float(rel.max()) < tol:
            break
    return ungrid(b), ungrid(c)[0], ungrid(yb), ungrid(yc)[0], ungrid(kk)[0], ungrid(rel)[0]
