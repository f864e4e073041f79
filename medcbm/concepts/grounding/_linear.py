"""Batched L2-regularised, class-weighted logistic regression in torch.

Many independent problems (concepts x regularisation strengths x CV folds) share one design matrix.
Objective per problem ``p`` (the same optimum as scikit-learn's ``C``-parameterised form with
``C = 1 / (lam * n_p)``, ``n_p`` the problem's training-set size)::

    sum_i w_ip * BCE(x_i . v_p + b_p, y_ip) / n_p + lam_p / 2 * ||v_p||^2        (bias unregularised)

By the representer theorem the optimal ``v_p`` lies in the row space of ``X``; with ``X = U S V^T`` we
solve exactly in the ``r = rank(X) <= n`` coordinates ``Z = U S`` and map back with ``v = V beta``.
There, :func:`fit_batched_logistic` runs accelerated majorisation-minimisation whose curvature matrix
depends only on each problem's fold, so one eigendecomposition per fold serves every concept and C.
"""

from __future__ import annotations

import numpy as np
import torch


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


def _objective(Z, beta, bias, Yt, Wt, n_in, lam):
    z = Z @ beta + bias
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, Yt, reduction="none")
    return (Wt * loss).sum(0) / n_in + 0.5 * lam * (beta**2).sum(0)


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
    U, S, Vh = torch.linalg.svd(torch.as_tensor(X, dtype=f64), full_matrices=False)
    keep = S > S.max() * 1e-10
    Z64, V = U[:, keep] * S[keep], Vh[keep].T
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
        spectra.append((g0.to(f32), gz.to(f32), lc.clamp_min(0).to(f32), Q.to(f32)))

    P = Y.shape[1]
    beta = torch.zeros(Z.shape[1], P, dtype=f32)
    bias = torch.zeros(P, dtype=f32)
    # warm start along the regularisation path: solve the strongest penalties first and start each weaker
    # one from the solution of the same (fold, concept) problem -- same targets and weights -- one level up
    sig = [hash((Y[:, p].tobytes(), W[:, p].tobytes())) for p in range(P)]
    levels = torch.unique(lam_t).flip(0)  # strongest penalty first
    stages = [torch.nonzero(lam_t == lv).squeeze(1) for lv in levels] if len(levels) <= 32 else [torch.arange(P)]
    last_for: dict = {}
    for idx in stages:
        for p in idx.tolist():
            q = last_for.get(sig[p])
            if q is not None:
                beta[:, p], bias[p] = beta[:, q], bias[q]
        b, c = _mm_solve(Z, Yt[:, idx], Wt[:, idx], n_in[idx], lam_t[idx], a[idx], group[idx], spectra,
                         beta[:, idx].clone(), bias[idx].clone(), max_iter, tol)
        beta[:, idx], bias[idx] = b, c
        for p in idx.tolist():
            last_for[sig[p]] = p
    return (V @ beta.to(f64)).numpy(), bias.to(f64).numpy()


def _mm_solve(Z, Yt, Wt, n_in, lam, a, group, spectra, beta, bias, max_iter, tol):
    """Accelerated MM iterations on a batch of problems; converged problems leave the active set."""

    def precond(gz_grad, gb_grad, grp, ak, lk):
        xz = torch.empty_like(gz_grad)
        xb = torch.empty_like(gb_grad)
        for k, (g0, gz, lc, Q) in enumerate(spectra):
            sel = (grp == k).nonzero().squeeze(1)
            if sel.numel() == 0:
                continue
            rhs = gz_grad[:, sel] - torch.outer(gz, gb_grad[sel]) / g0
            x = Q @ ((Q.T @ rhs) / (ak[sel][None] * lc[:, None] + lk[sel][None]))
            xz[:, sel] = x
            xb[sel] = (gb_grad[sel] - ak[sel] * (gz @ x)) / (ak[sel] * g0)
        return xz, xb

    def grad(b, c, y, w, n, lk):
        r = w * (torch.sigmoid(Z @ b + c) - y) / n
        return Z.T @ r + lk * b, r.sum(0)

    f = _objective(Z, beta, bias, Yt, Wt, n_in, lam)
    yb, yc = beta.clone(), bias.clone()
    k = torch.ones_like(bias)
    active = torch.arange(beta.shape[1])
    for _ in range(max_iter):
        if active.numel() == 0:
            break
        A = active
        y_, w_, n_, l_, a_, g_ = Yt[:, A], Wt[:, A], n_in[A], lam[A], a[A], group[A]
        xz, xb = precond(*grad(yb[:, A], yc[A], y_, w_, n_, l_), g_, a_, l_)
        nb, nc = yb[:, A] - xz, yc[A] - xb
        f_new = _objective(Z, nb, nc, y_, w_, n_, l_)
        worse = f_new > f[A]
        if bool(worse.any()):
            # adaptive restart: where momentum overshot, take a plain (monotone) MM step from the iterate
            xz0, xb0 = precond(*grad(beta[:, A], bias[A], y_, w_, n_, l_), g_, a_, l_)
            nb = torch.where(worse[None], beta[:, A] - xz0, nb)
            nc = torch.where(worse, bias[A] - xb0, nc)
            f_new = torch.where(worse, _objective(Z, nb, nc, y_, w_, n_, l_), f_new)
            k[A] = torch.where(worse, torch.ones_like(f_new), k[A])
        rel = (f[A] - f_new).abs() / f[A].abs().clamp_min(1e-12)
        mom = (k[A] - 1) / (k[A] + 2)
        yb[:, A], yc[A] = nb + mom * (nb - beta[:, A]), nc + mom * (nc - bias[A])
        beta[:, A], bias[A], f[A], k[A] = nb, nc, f_new, k[A] + 1
        active = A[rel >= tol]
    return beta, bias
