"""Contextual Bradley-Terry: model strengths plus per-battle covariates, by Newton's method.

``P(a beats b) = sigmoid(theta_a - theta_b + x . beta)`` where ``x`` are the
battle's covariates (the style features of :mod:`arena_stream.ratings.style`)
and ``beta`` their coefficients. This is the model LMArena's style control
fits (arena-rank's ``ContextualBradleyTerry``), with the same objective in
sum form::

    F = sum_r w_r [log(1 + e^z_r) - o_r z_r]              z_r = theta_a - theta_b + x_r . beta
      + N * reg / 2 * |beta|^2                             arena-rank: reg / 2 on the mean loss
      + ties * sum_i log(2 cosh(theta_i / 2))              our weak prior (see bradley_terry)

The strengths carry only the weak prior of the plain leaderboard, so a model
that never lost stays finite here too. Battles are not collapsed (each has
its own covariates), so an iteration is a pass over the battles; the
Hessian has ``n + p`` rows and Newton needs a handful of iterations.

Intervals: the sandwich ``H^-1 M H^-1``, with ``H`` the penalised Hessian
and ``M`` the covariance of the per-battle scores; for ratings (contrasts
``theta_i - mean(theta)``) and for each coefficient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from arena_stream.ratings.solver import _prior_terms


@dataclass(frozen=True)
class Problem:
    """One contextual fit's data: battles as model indices, outcomes, covariates, weights."""

    a: np.ndarray  # int64 (N,)
    b: np.ndarray  # int64 (N,)
    outcome: np.ndarray  # float64 (N,)
    features: np.ndarray  # float64 (N, p); p may be 0
    weight: np.ndarray  # float64 (N,)
    n: int  # models

    @property
    def p(self) -> int:
        return int(self.features.shape[1])

    @property
    def size(self) -> int:
        return len(self.outcome)


def _logits(pb: Problem, params: np.ndarray) -> np.ndarray:
    theta, beta = params[: pb.n], params[pb.n:]
    return theta[pb.a] - theta[pb.b] + pb.features @ beta


def objective(pb: Problem, params: np.ndarray, *, reg: float, ties: float) -> float:
    z = _logits(pb, params)
    beta = params[pb.n:]
    value = float(np.dot(pb.weight, np.logaddexp(0.0, z) - pb.outcome * z))
    value += 0.5 * reg * pb.size * float(beta @ beta)
    if ties:
        value += float(_prior_terms(params[: pb.n], ties)[0].sum())
    return value


def _assemble(pb: Problem, vals: np.ndarray) -> np.ndarray:
    """``sum_r vals_r x~_r x~_r'`` with ``x~_r = [e_a - e_b, x_r]``: an (n+p) square matrix."""
    n, p = pb.n, pb.p
    out = np.zeros((n + p, n + p))
    flat = np.bincount(pb.a * n + pb.a, weights=vals, minlength=n * n)
    flat += np.bincount(pb.b * n + pb.b, weights=vals, minlength=n * n)
    flat -= np.bincount(pb.a * n + pb.b, weights=vals, minlength=n * n)
    flat -= np.bincount(pb.b * n + pb.a, weights=vals, minlength=n * n)
    out[:n, :n] = flat.reshape(n, n)
    if p:
        weighted = pb.features * vals[:, None]
        cross = np.stack([np.bincount(pb.a, weights=weighted[:, k], minlength=n)
                          - np.bincount(pb.b, weights=weighted[:, k], minlength=n)
                          for k in range(p)], axis=1)
        out[:n, n:] = cross
        out[n:, :n] = cross.T
        out[n:, n:] = pb.features.T @ weighted
    return out


def gradient_and_hessian(
    pb: Problem, params: np.ndarray, *, reg: float, ties: float
) -> tuple[np.ndarray, np.ndarray]:
    n = pb.n
    z = _logits(pb, params)
    prob = expit(z)
    r = pb.weight * (prob - pb.outcome)
    grad = np.concatenate([
        np.bincount(pb.a, weights=r, minlength=n) - np.bincount(pb.b, weights=r, minlength=n),
        pb.features.T @ r,
    ])
    hess = _assemble(pb, pb.weight * prob * (1.0 - prob))
    grad[n:] += reg * pb.size * params[n:]
    idx = np.arange(n, n + pb.p)
    hess[idx, idx] += reg * pb.size
    if ties:
        _, g_prior, h_prior = _prior_terms(params[:n], ties)
        grad[:n] += g_prior
        hess[np.arange(n), np.arange(n)] += h_prior
    return grad, hess


def fit(
    pb: Problem, *, reg: float, ties: float, tol: float = 1e-10, max_iter: int = 100
) -> np.ndarray:
    """Minimise ``F``: damped Newton with Armijo backtracking; ``[theta, beta]``."""
    params = np.zeros(pb.n + pb.p)
    value = objective(pb, params, reg=reg, ties=ties)
    for _ in range(max_iter):
        grad, hess = gradient_and_hessian(pb, params, reg=reg, ties=ties)
        if not ties:  # no prior: the common shift of the strengths is free; pin it
            hess[: pb.n, : pb.n] += 1e-10 * pb.size
        step = np.linalg.solve(hess, grad)
        decrement = float(grad @ step)
        scale = 1.0
        if decrement > 1e-3:
            for _halving in range(60):
                trial = params - scale * step
                trial_value = objective(pb, trial, reg=reg, ties=ties)
                if trial_value <= value - 0.25 * scale * decrement:
                    break
                scale *= 0.5
        params = params - scale * step
        value = objective(pb, params, reg=reg, ties=ties)
        if float(np.abs(scale * step).max()) < tol:
            break
    return params


def sandwich(pb: Problem, params: np.ndarray, *, reg: float, ties: float) -> np.ndarray:
    """Robust covariance ``H^-1 M H^-1`` of ``[theta, beta]``.

    ``M`` is the covariance of the per-battle score contributions (centred:
    at the optimum they average to minus the penalty's gradient share).
    """
    n = pb.n
    _, hess = gradient_and_hessian(pb, params, reg=reg, ties=ties)
    hess[:n, :n] += 1e-10 * pb.size  # only the common shift needs it, and no contrast sees it
    prob = expit(_logits(pb, params))
    score = pb.weight * (prob - pb.outcome)
    meat = _assemble(pb, score * score)
    per_model = np.bincount(pb.a, weights=score, minlength=n) - np.bincount(
        pb.b, weights=score, minlength=n)
    mean = np.concatenate([per_model, pb.features.T @ score]) / pb.size
    meat -= pb.size * np.outer(mean, mean)
    h_inv = np.linalg.inv(hess)
    return h_inv @ meat @ h_inv
