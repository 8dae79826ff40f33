"""Bradley-Terry leaderboard snapshots from the ratings agent's running outcome counts.

The ratings agent keeps, per ordered pair of models, how many battles each
side won and how many were ties (:class:`~arena_stream.ratings.elo.PairCount`).
Those counts are exactly the counted cells a Bradley-Terry fit works on, so a
snapshot is built from them directly (no battle is ever expanded) and fitted
by the same :func:`fit_collapsed` as the offline leaderboard: the same weak
prior, the same provisional flags and profile intervals for models with too
few battles or an unbroken record, and sandwich intervals (one fit, no
resampling) for the rest. It costs milliseconds however many judgments came
before.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from arena_stream.ratings.elo import PairCount
from arena_stream.schemas import LeaderboardSnapshot

if TYPE_CHECKING:  # the fit (scipy) is imported only when a snapshot is made
    from arena_stream.ratings.bradley_terry import Collapsed

WINNERS = ("model_a", "model_b", "tie")
OUTCOMES = (1.0, 0.0, 0.5)  # model_a's score for each entry of WINNERS


def battles_from_pairs(pairs: Iterable[PairCount]) -> pl.DataFrame:
    """Expand outcome counts per ordered pair into one row per battle (for export)."""
    model_a: list[str] = []
    model_b: list[str] = []
    winner: list[str] = []
    counts: list[int] = []
    for pair in pairs:
        for w, n in zip(WINNERS, (pair.wins_a, pair.wins_b, pair.ties), strict=True):
            if n:
                model_a.append(pair.model_a)
                model_b.append(pair.model_b)
                winner.append(w)
                counts.append(int(n))
    reps = np.asarray(counts, dtype=np.int64)
    return pl.DataFrame({
        "model_a": np.repeat(np.asarray(model_a, dtype=object), reps).tolist(),
        "model_b": np.repeat(np.asarray(model_b, dtype=object), reps).tolist(),
        "winner": np.repeat(np.asarray(winner, dtype=object), reps).tolist(),
    }, schema={"model_a": pl.String, "model_b": pl.String, "winner": pl.String})


def collapsed_from_pairs(pairs: Iterable[PairCount]) -> Collapsed:
    """Outcome counts per ordered pair as a :class:`Collapsed` (self-battles dropped)."""
    from arena_stream.ratings.bradley_terry import Collapsed

    cells: dict[tuple[str, str, float], float] = {}
    for pair in pairs:
        if pair.model_a == pair.model_b:
            continue
        for outcome, n in zip(OUTCOMES, (pair.wins_a, pair.wins_b, pair.ties), strict=True):
            if n:
                key = (pair.model_a, pair.model_b, outcome)
                cells[key] = cells.get(key, 0.0) + float(n)
    models = sorted({a for a, _, _ in cells} | {b for _, b, _ in cells})
    index = {m: i for i, m in enumerate(models)}
    keys = sorted(cells, key=lambda k: (index[k[0]], index[k[1]], k[2]))
    a_idx = np.array([index[k[0]] for k in keys], dtype=np.int64)
    b_idx = np.array([index[k[1]] for k in keys], dtype=np.int64)
    count = np.array([cells[k] for k in keys], dtype=np.float64)
    n = len(models)
    battles = np.bincount(a_idx, weights=count, minlength=n) + np.bincount(
        b_idx, weights=count, minlength=n)
    return Collapsed(models=models, a=a_idx, b=b_idx,
                     outcome=np.array([k[2] for k in keys], dtype=np.float64),
                     count=count, battles=battles.round().astype(np.int64))


def leaderboard_snapshot(pairs: Iterable[PairCount], judgments: int) -> LeaderboardSnapshot | None:
    from arena_stream.ratings.bradley_terry import fit_collapsed

    c = collapsed_from_pairs(pairs)
    if c.n_models < 2:
        return None
    rows = fit_collapsed(c, method="sandwich").rows()
    return LeaderboardSnapshot(method="sandwich", judgments=judgments, rows=rows, ts=time.time())
