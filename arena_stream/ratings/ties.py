"""Ties: Davidson's model, as an alternative to counting a tie as half a win.

The default leaderboard (LMArena's convention) scores a tie as half a win and
half a loss in a Bradley-Terry likelihood. That is not a probability model of
ties: it predicts no ties at all, and it treats a tie between a strong and a
weak model as exactly the evidence of one win for each. Two other choices:

* ``--exclude-ties`` drops tied battles: ratings then describe decisive
  battles only, and ties carry no information at all.
* ``--tie-model davidson`` (Davidson 1970) makes a tie a third outcome::

      P(a wins) = e^(d/2) / Z,  P(b wins) = e^(-d/2) / Z,  P(tie) = nu / Z
      Z = e^(d/2) + e^(-d/2) + nu,   d = theta_a - theta_b

  Among decisive battles ``P(a wins | not a tie) = sigmoid(d)``, so ratings
  stay on the same Elo scale and mean the same odds as Bradley-Terry's. What
  changes: a tie is evidence that the two are *close* (it pulls their ratings
  together, and more so when ties are rare), not half a win each; and the
  tie propensity ``nu`` is estimated (shown with its interval, and as the tie
  probability between two equal models, ``nu / (2 + nu)``). With few ties the
  ratings barely move; where one model draws many ties with much stronger
  ones, its rating rises less than under half-wins.

Fitted by Newton's method on the collapsed cells with the same weak prior on
the strengths as every other fit (one virtual tie against an average model,
``log(2 cosh(theta/2))``); intervals are the sandwich or the bootstrap
(multinomial redraws of the cell counts, each refitted from the estimate), and
profile-likelihood intervals for provisional models, as with half-wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from arena_stream.ratings.profile import Smooth
from arena_stream.ratings.solver import _prior_terms


@dataclass(frozen=True)
class DavidsonFit:
    theta: np.ndarray  # (n,) natural log-strengths
    log_nu: float  # tie propensity, log scale
    cov: np.ndarray | None = None  # sandwich covariance of [theta, log_nu]


def _parts(theta: np.ndarray, log_nu: float, a: np.ndarray, b: np.ndarray, outcome: np.ndarray):
    d = theta[a] - theta[b]
    # log Z and the three probabilities, stably
    half = 0.5 * d
    log_z = np.logaddexp(np.logaddexp(half, -half), log_nu)
    pa, pb, pt = np.exp(half - log_z), np.exp(-half - log_z), np.exp(log_nu - log_z)
    y_d = np.where(outcome == 1.0, 0.5, np.where(outcome == 0.0, -0.5, 0.0))
    y_k = (outcome == 0.5).astype(np.float64)
    return d, log_z, pa, pb, pt, y_d, y_k


def _objective(theta, log_nu, a, b, outcome, count, ties) -> float:
    d, log_z, *_rest, y_d, y_k = _parts(theta, log_nu, a, b, outcome)
    value = float(np.dot(count, log_z - y_d * d - y_k * log_nu))
    return value + (float(_prior_terms(theta, ties)[0].sum()) if ties else 0.0)


def _per_cell(theta, log_nu, a, b, outcome):
    """Per-cell first derivatives (d, kappa) and second derivatives (dd, kk, dk) of the NLL."""
    _d, _log_z, pa, pb, pt, y_d, y_k = _parts(theta, log_nu, a, b, outcome)
    g_d = 0.5 * (pa - pb) - y_d
    g_k = pt - y_k
    h_dd = 0.25 * (pa + pb) - 0.25 * (pa - pb) ** 2
    h_kk = pt * (1.0 - pt)
    h_dk = -0.5 * (pa - pb) * pt
    return g_d, g_k, h_dd, h_kk, h_dk


def _assemble(n, a, b, w_d, w_k, h_dd, h_kk, h_dk):
    """Gradient-like vector and Hessian-like matrix in [theta, kappa] from per-cell parts."""
    grad = np.zeros(n + 1)
    grad[:n] = np.bincount(a, weights=w_d, minlength=n) - np.bincount(b, weights=w_d, minlength=n)
    grad[n] = w_k.sum()
    hess = np.zeros((n + 1, n + 1))
    flat = (np.bincount(a * n + a, weights=h_dd, minlength=n * n)
            + np.bincount(b * n + b, weights=h_dd, minlength=n * n)
            - np.bincount(a * n + b, weights=h_dd, minlength=n * n)
            - np.bincount(b * n + a, weights=h_dd, minlength=n * n))
    hess[:n, :n] = flat.reshape(n, n)
    cross = np.bincount(a, weights=h_dk, minlength=n) - np.bincount(b, weights=h_dk, minlength=n)
    hess[:n, n] = cross
    hess[n, :n] = cross
    hess[n, n] = h_kk.sum()
    return grad, hess


def _grad_hess(theta, log_nu, a, b, outcome, count, n, ties, no_ties: bool):
    g_d, g_k, h_dd, h_kk, h_dk = _per_cell(theta, log_nu, a, b, outcome)
    grad, hess = _assemble(n, a, b, count * g_d, count * g_k, count * h_dd, count * h_kk,
                           count * h_dk)
    if ties:
        _, g_p, h_p = _prior_terms(theta, ties)
        grad[:n] += g_p
        hess[np.arange(n), np.arange(n)] += h_p
    else:
        hess[:n, :n] += 1e-10 * float(count.sum())  # pins only the common shift
    if no_ties:  # no tie at all: nu -> 0; hold kappa where it is
        grad[n], hess[n, :n], hess[:n, n], hess[n, n] = 0.0, 0.0, 0.0, 1.0
    return grad, hess


def smooth(a, b, outcome, count, n: int, *, ties: float) -> Smooth:
    """Davidson's objective over ``[theta, kappa]`` for profile intervals."""
    no_ties = not bool((count[outcome == 0.5] > 0).any())
    return Smooth(
        value=lambda x: _objective(x[:n], float(x[n]), a, b, outcome, count, ties),
        gradient_and_hessian=lambda x: _grad_hess(x[:n], float(x[n]), a, b, outcome, count, n,
                                                  ties, no_ties),
    )


def fit_davidson(
    a: np.ndarray, b: np.ndarray, outcome: np.ndarray, count: np.ndarray, n: int, *,
    ties: float, start: DavidsonFit | None = None, tol: float = 1e-10,
) -> DavidsonFit:
    """Penalised maximum likelihood of Davidson's model on counted cells."""
    theta = np.zeros(n) if start is None else start.theta.copy()
    tie_share = float(count[outcome == 0.5].sum()) / float(count.sum())
    # start nu at the observed tie rate between equals: nu / (2 + nu) = share
    log_nu = (np.log(max(2 * tie_share / max(1 - tie_share, 1e-9), 1e-6))
              if start is None else start.log_nu)
    value = _objective(theta, log_nu, a, b, outcome, count, ties)
    for _ in range(100):
        grad, hess = _grad_hess(theta, log_nu, a, b, outcome, count, n, ties, tie_share == 0.0)
        step = np.linalg.solve(hess, grad)
        decrement = float(grad @ step)
        scale = 1.0
        for _halving in range(60):
            new_theta, new_k = theta - scale * step[:n], log_nu - scale * step[n]
            new_value = _objective(new_theta, new_k, a, b, outcome, count, ties)
            if decrement < 1e-3 or new_value <= value - 0.25 * scale * decrement:
                break
            scale *= 0.5
        theta, log_nu, value = new_theta, float(new_k), new_value
        if float(np.abs(scale * step).max()) < tol:
            break
    return DavidsonFit(theta=theta, log_nu=log_nu)


def sandwich_cov(fit: DavidsonFit, a, b, outcome, count, n: int, *, ties: float) -> np.ndarray:
    """``H^-1 M H^-1`` of ``[theta, kappa]``, M the sum of the per-battle score outer products.

    (At the optimum the scores average to zero for ``kappa`` and to the prior's
    share for ``theta``, a term of order 1/N^2 left out.)
    """
    g_d, g_k, h_dd, h_kk, h_dk = _per_cell(fit.theta, fit.log_nu, a, b, outcome)
    _, hess = _assemble(n, a, b, count * g_d, count * g_k, count * h_dd, count * h_kk,
                        count * h_dk)
    if ties:
        hess[np.arange(n), np.arange(n)] += _prior_terms(fit.theta, ties)[2]
    hess[:n, :n] += 1e-10 * float(count.sum())
    # outer products of the per-battle score [g_d (e_a - e_b), g_k], identical within a cell
    _, meat = _assemble(n, a, b, np.zeros_like(g_d), np.zeros_like(g_k), count * g_d * g_d,
                        count * g_k * g_k, count * g_d * g_k)
    h_inv = np.linalg.inv(hess)
    return h_inv @ meat @ h_inv


def tie_summary(log_nu: float, half_width: float, confidence: float = 0.95) -> dict[str, float]:
    """``nu`` with its interval, and the tie probability between two equal models."""
    lo, hi = log_nu - half_width, log_nu + half_width
    nu = float(np.exp(log_nu))
    return {
        "nu": nu, "nu_lower": float(np.exp(lo)), "nu_upper": float(np.exp(hi)),
        "tie_probability_between_equals": nu / (2.0 + nu),
        "confidence": confidence,
    }


def z_value(confidence: float) -> float:
    return float(norm.ppf(0.5 + confidence / 2.0))
