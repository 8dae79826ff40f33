"""The batched Newton solver behind every Bradley-Terry fit and bootstrap round."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from arena_stream.ratings import bradley_terry as bt
from arena_stream.ratings.solver import gradient_and_hessian, newton, objective
from tests.test_bradley_terry import TRUE, synthetic


def _collapsed(n: int = 3000, seed: int = 4) -> bt.Collapsed:
    return bt.collapse(synthetic(n, TRUE, seed=seed, tie_rate=0.1))


def test_newton_reaches_the_optimum_an_independent_solver_finds() -> None:
    c = _collapsed()
    cells = c.cells
    w = c.count[None, :]
    theta = newton(cells, w, np.zeros((1, c.n_models)), ties=1.0, ridge=0.0)
    grad, _ = gradient_and_hessian(cells, w, theta, ties=1.0, ridge=0.0)
    assert np.abs(grad).max() < 1e-6  # first-order optimality, in battles

    def f(x: np.ndarray) -> tuple[float, np.ndarray]:
        g, _ = gradient_and_hessian(cells, w, x[None, :], ties=1.0, ridge=0.0)
        return float(objective(cells, w, x[None, :], ties=1.0, ridge=0.0)[0]), g[0]

    ref = minimize(f, np.zeros(c.n_models), jac=True, method="L-BFGS-B",
                   options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000}).x
    # L-BFGS crawls along the direction only the weak prior pins (all strengths
    # shifted together); the differences it does determine agree
    diff = (theta[0] - theta[0].mean()) - (ref - ref.mean())
    assert np.abs(bt.ALPHA * diff).max() < 1e-4  # rating points
    assert f(theta[0])[0] <= f(ref)[0] + 1e-9


def test_rounds_solved_together_equal_rounds_solved_alone() -> None:
    c = _collapsed()
    rng = np.random.default_rng(0)
    draws = rng.multinomial(round(c.total), c.count / c.total, size=5).astype(float)
    start = bt._fit(c, c.count)
    together = bt._fit(c, draws, start=start)
    alone = np.stack([bt._fit(c, d) for d in draws])  # cold starts, one at a time
    assert np.abs(together - alone).max() * bt.ALPHA < 1e-6


def test_hessian_matches_finite_differences_of_the_gradient() -> None:
    c = _collapsed(600, seed=9)
    cells = c.cells
    w = c.count[None, :]
    x = np.random.default_rng(1).normal(size=(1, c.n_models))
    _, hess = gradient_and_hessian(cells, w, x, ties=2.0, ridge=0.1)
    eps = 1e-6
    for i in range(c.n_models):
        e = np.zeros_like(x)
        e[0, i] = eps
        gp, _ = gradient_and_hessian(cells, w, x + e, ties=2.0, ridge=0.1)
        gm, _ = gradient_and_hessian(cells, w, x - e, ties=2.0, ridge=0.1)
        assert np.allclose((gp - gm)[0] / (2 * eps), hess[0, :, i], atol=1e-4)
