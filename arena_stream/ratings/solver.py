"""Newton's method for Bradley-Terry on counted outcome cells, many weightings at once.

A leaderboard fit and every bootstrap round solve the same small problem:
a few thousand unique ``(model_a, model_b, outcome)`` cells, each with a
weight (its count, or a resampled count), and one log-strength per model.
The objective is smooth and convex with an ``n x n`` Hessian that is a
weighted graph Laplacian, so a damped Newton step converges in a handful of
iterations where a first-order method (L-BFGS) needs dozens of function
evaluations per fit. All weightings (bootstrap rounds) are solved together:
each iteration is two sparse products over the cells for the whole batch
and one batched ``n x n`` linear solve.

Objective, in natural log-odds ``theta`` (sum over cells, not the mean, so a
virtual battle of the prior weighs what a real one does)::

    f(theta) = sum_r w_r [log(1 + e^d_r) - o_r d_r]          d_r = theta_a - theta_b
             + ties * sum_i log(2 cosh(theta_i / 2))          the prior (see below)
             + ridge / 2 * |theta|^2

``ties * log(2 cosh(theta/2))`` is exactly the negative log-likelihood of
``ties`` virtual ties against a virtual opponent at strength 0: its
curvature is ``ties / 4`` at 0 and it grows only linearly, so it keeps every
strength finite without pulling hard on models that have real evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.special import expit

# A batch of Hessians costs B * n^2 floats; above this many, rounds are solved in chunks.
MAX_HESSIAN_FLOATS = 20_000_000


@dataclass(frozen=True)
class Cells:
    """The fixed structure of a problem: which two models each cell compares."""

    a: np.ndarray  # int64 (R,)
    b: np.ndarray  # int64 (R,)
    outcome: np.ndarray  # float64 (R,): 1 a won, 0.5 tie, 0 b won
    n: int
    incidence: csr_matrix  # (n, R): +1 at a, -1 at b; gradient = incidence @ residual
    laplacian: csr_matrix  # (n*n, R): cell weights -> flattened weighted Laplacian

    @classmethod
    def build(cls, a: np.ndarray, b: np.ndarray, outcome: np.ndarray, n: int) -> Cells:
        r = len(a)
        cols = np.arange(r)
        incidence = csr_matrix(
            (np.concatenate([np.ones(r), -np.ones(r)]),
             (np.concatenate([a, b]), np.concatenate([cols, cols]))),
            shape=(n, r),
        )
        rows = np.concatenate([a * n + a, b * n + b, a * n + b, b * n + a])
        vals = np.concatenate([np.ones(2 * r), -np.ones(2 * r)])
        laplacian = csr_matrix((vals, (rows, np.tile(cols, 4))), shape=(n * n, r))
        return cls(a=a, b=b, outcome=outcome, n=n, incidence=incidence, laplacian=laplacian)


def _prior_terms(theta: np.ndarray, ties: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Value, gradient and curvature of ``ties * log(2 cosh(theta/2))``, elementwise."""
    half = 0.5 * theta
    value = ties * np.logaddexp(half, -half)
    t = np.tanh(half)
    return value, 0.5 * ties * t, 0.25 * ties * (1.0 - t * t)


def objective(
    cells: Cells, weight: np.ndarray, theta: np.ndarray, *, ties: float, ridge: float
) -> np.ndarray:
    """``f(theta)`` for each row of a batch: ``weight`` (B, R), ``theta`` (B, n) -> (B,)."""
    d = theta[:, cells.a] - theta[:, cells.b]
    data = (weight * (np.logaddexp(0.0, d) - cells.outcome * d)).sum(axis=1)
    prior = _prior_terms(theta, ties)[0].sum(axis=1) if ties else 0.0
    return data + prior + 0.5 * ridge * (theta * theta).sum(axis=1)


def gradient_and_hessian(
    cells: Cells, weight: np.ndarray, theta: np.ndarray, *, ties: float, ridge: float
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient (B, n) and Hessian (B, n, n) of :func:`objective`."""
    batch, n = theta.shape
    d = theta[:, cells.a] - theta[:, cells.b]
    p = expit(d)
    grad = np.asarray(cells.incidence @ (weight * (p - cells.outcome)).T).T
    hess = np.asarray(cells.laplacian @ (weight * p * (1.0 - p)).T).T.reshape(batch, n, n)
    diag = np.full((batch, n), ridge)
    grad = grad + ridge * theta
    if ties:
        _, g_prior, h_prior = _prior_terms(theta, ties)
        grad += g_prior
        diag += h_prior
    idx = np.arange(n)
    hess[:, idx, idx] += diag
    return grad, hess


def newton(
    cells: Cells,
    weight: np.ndarray,
    start: np.ndarray,
    *,
    ties: float,
    ridge: float,
    tol: float = 1e-10,
    max_iter: int = 100,
) -> np.ndarray:
    """Minimise :func:`objective` for every row of ``weight`` (B, R) from ``start`` (B, n).

    Damped Newton with Armijo backtracking, per batch row. Once a row's Newton
    decrement ``g' H^-1 g`` is below ``1e-3`` it is in the region where full
    steps converge quadratically, and its step is taken without a line search
    (near the optimum, ``f`` differences drown in rounding). Stops when every
    row's step is below ``tol`` (natural units; 1e-10 is 2e-8 rating points).
    The strictly positive curvature of the prior (or ridge) keeps every
    Hessian invertible, even for a model that never lost.
    """
    batch = weight.shape[0]
    n = cells.n
    if n * n * batch > MAX_HESSIAN_FLOATS and batch > 1:
        chunk = max(1, MAX_HESSIAN_FLOATS // (n * n))
        return np.concatenate([
            newton(cells, weight[i:i + chunk], start[i:i + chunk], ties=ties, ridge=ridge,
                   tol=tol, max_iter=max_iter)
            for i in range(0, batch, chunk)
        ])
    theta = np.array(start, dtype=np.float64, copy=True)
    value: np.ndarray | None = None
    for _ in range(max_iter):
        grad, hess = gradient_and_hessian(cells, weight, theta, ties=ties, ridge=ridge)
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        decrement = (grad * step).sum(axis=1)
        scale = np.ones(batch)
        search = decrement > 1e-3
        if search.any():
            if value is None:
                value = objective(cells, weight, theta, ties=ties, ridge=ridge)
            for _halving in range(60):
                trial = theta - scale[:, None] * step
                trial_value = objective(cells, weight, trial, ties=ties, ridge=ridge)
                bad = search & (trial_value > value - 0.25 * scale * decrement)
                if not bad.any():
                    break
                scale[bad] *= 0.5
            value = trial_value
        else:
            value = None
        moved = scale[:, None] * step
        theta -= moved
        if float(np.abs(moved).max()) < tol:
            break
    return theta
