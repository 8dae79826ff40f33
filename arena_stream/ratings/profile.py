"""Profile-likelihood intervals: honest where the normal approximation is not.

A model with a dozen battles, or one that never lost, has a likelihood that
is far from a parabola: flat on one side (nothing in the data says how much
better an unbeaten model is), steep on the other. The sandwich interval reads
the curvature at the estimate and comes out symmetric and narrow; the
bootstrap keeps redrawing the same unbroken record and comes out narrow too
(the live page once showed an unbeaten model at 2811.9 with 2752.7-2871.1).

The profile interval instead keeps every value ``t`` of the shown contrast
(``theta_i - mean(theta)``, or ``theta_i - theta_anchor``) that the data and
the prior do not reject: twice the rise of the minimised objective, with the
contrast held at ``t`` and every other strength refitted, stays below the
chi-square(1) quantile (3.84 for 95%). It is the standard remedy for
separation in logistic regression (penalised likelihood with profile
intervals). Where the data give no bound, only the weak prior does, and the
interval says so by being very wide on that side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.stats import chi2

from arena_stream.ratings.solver import Cells, gradient_and_hessian, objective

# Beyond this many natural log-odds units (about 7,000 rating points) a side is reported as is.
MAX_REACH = 40.0


@dataclass(frozen=True)
class Smooth:
    """A smooth convex objective of a parameter vector: its value, gradient and Hessian."""

    value: Callable[[np.ndarray], float]
    gradient_and_hessian: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

    @classmethod
    def bradley_terry(cls, cells: Cells, weight: np.ndarray, *, ties: float,
                      ridge: float) -> Smooth:
        """The half-win Bradley-Terry objective of :mod:`arena_stream.ratings.solver`."""
        w = weight[None, :]

        def value(x: np.ndarray) -> float:
            return float(objective(cells, w, x[None, :], ties=ties, ridge=ridge)[0])

        def grad_hess(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            g, h = gradient_and_hessian(cells, w, x[None, :], ties=ties, ridge=ridge)
            return g[0], h[0]

        return cls(value, grad_hess)


def _constrained_min(f: Smooth, v: np.ndarray, start: np.ndarray) -> tuple[float, np.ndarray]:
    """Minimise ``f`` with ``v . x`` fixed at ``v . start``.

    Newton on the KKT system ``[[H, v], [v', 0]]``: every step keeps the
    constraint, and Armijo backtracking keeps the objective falling.
    """
    n = len(start)
    x = start.copy()
    value = f.value(x)
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, n] = v
    kkt[n, :n] = v
    rhs = np.zeros(n + 1)
    for _ in range(100):
        grad, hess = f.gradient_and_hessian(x)
        kkt[:n, :n] = hess
        rhs[:n] = -grad
        step = np.linalg.solve(kkt, rhs)[:n]
        slope = float(grad @ step)
        scale = 1.0
        for _halving in range(60):
            trial = x + scale * step
            trial_value = f.value(trial)
            if trial_value <= value + 0.25 * scale * slope or -slope < 1e-12:
                break
            scale *= 0.5
        x, value = trial, trial_value
        if float(np.abs(scale * step).max()) < 1e-9:
            break
    return value, x


def profile_interval(
    f: Smooth, x_hat: np.ndarray, v: np.ndarray, *, confidence: float = 0.95
) -> tuple[float, float]:
    """Lower and upper ends of the profile interval for ``v . x`` (natural units).

    ``x_hat`` is the unconstrained optimum. Each side is bracketed by steps
    that double from half a unit (about 87 rating points), then located by
    Brent's method to 1e-6 units.
    """
    best = f.value(x_hat)
    centre = float(v @ x_hat)
    critical = float(chi2.ppf(confidence, 1))
    direction = v / float(v @ v)
    ends: list[float] = []
    for sign in (-1.0, 1.0):
        warm = [x_hat.copy()]  # the last constrained optimum: a close start for the next

        def excess(reach: float, sign: float = sign, warm: list[np.ndarray] = warm) -> float:
            t = centre + sign * reach
            start = warm[0] + (t - float(v @ warm[0])) * direction
            value, solved = _constrained_min(f, v, start)
            warm[0] = solved
            return 2.0 * (value - best) - critical

        inner, outer, step = 0.0, 0.5, 0.5
        while excess(outer) <= 0.0:
            if outer >= MAX_REACH:
                ends.append(centre + sign * MAX_REACH)
                break
            inner, step = outer, step * 2.0
            outer = min(outer + step, MAX_REACH)
        else:
            ends.append(centre + sign * brentq(excess, inner, outer, xtol=1e-6))
    return ends[0], ends[1]
