"""Bradley-Terry leaderboard snapshots from the ratings agent's running outcome counts.

The ratings agent keeps, per ordered pair of models, how many battles each
side won and how many were ties. That is all a Bradley-Terry fit needs, so a
snapshot with 95% intervals (sandwich estimator: one fit, no resampling) costs
milliseconds however many judgments came before.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import polars as pl

from arena_stream.ratings.elo import PairCount
from arena_stream.schemas import LeaderboardSnapshot

WINNERS = ("model_a", "model_b", "tie")


def battles_from_pairs(pairs: Iterable[PairCount]) -> pl.DataFrame:
    """Expand outcome counts per ordered pair into one row per battle."""
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


def leaderboard_snapshot(pairs: Iterable[PairCount], judgments: int) -> LeaderboardSnapshot | None:
    from arena_stream.ratings.bradley_terry import leaderboard

    battles = battles_from_pairs(pairs)
    models = set(battles["model_a"]) | set(battles["model_b"])
    if battles.height == 0 or len(models) < 2:
        return None
    rows = leaderboard(battles, method="sandwich")
    return LeaderboardSnapshot(method="sandwich", judgments=judgments, rows=rows, ts=time.time())
