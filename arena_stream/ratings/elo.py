"""Incremental Elo, the live rating signal.

One judgment moves both players by ``K * (S - E)`` where ``E`` is the
expected score on the logistic curve with the configured scale and base
(400 and 10: a 400-point gap means 10:1 odds), and ``S`` is 1 for a win,
0.5 for a tie, 0 for a loss. The live stream and ``arena-stream audit`` both
call :meth:`EloBook.apply`, so the audit recomputes exactly what the stream
did, in the same order (the judgments topic has one partition).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from arena_stream.config import RatingsConfig

OUTCOME = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5}


def expected(r_a: float, r_b: float, scale: float = 400.0, base: float = 10.0) -> float:
    """Probability-like expected score of A against B."""
    return 1.0 / (1.0 + base ** ((r_b - r_a) / scale))


class PlayerRating(msgspec.Struct, kw_only=True):
    """One model's Elo rating and record; stored as is in the rate stage's state."""

    rating: float
    battles: int = 0
    wins: int = 0
    losses: int = 0
    ties: int = 0

    def record(self, outcome: float, delta: float) -> None:
        self.rating += delta
        self.battles += 1
        if outcome == 1.0:
            self.wins += 1
        elif outcome == 0.0:
            self.losses += 1
        else:
            self.ties += 1


class PairCount(msgspec.Struct, kw_only=True):
    """Outcomes of every battle between one ordered pair of models (all a Bradley-Terry
    fit needs: :func:`arena_stream.ratings.snapshots.leaderboard_snapshot`)."""

    model_a: str
    model_b: str
    wins_a: int = 0
    wins_b: int = 0
    ties: int = 0

    def add(self, winner: str) -> None:
        if winner == "model_a":
            self.wins_a += 1
        elif winner == "model_b":
            self.wins_b += 1
        else:
            self.ties += 1


@dataclass
class EloBook:
    """Ratings of every model, updated one judgment at a time."""

    config: RatingsConfig
    players: dict[str, PlayerRating] = field(default_factory=dict)

    def get(self, model: str) -> PlayerRating:
        player = self.players.get(model)
        if player is None:
            player = self.players[model] = PlayerRating(rating=self.config.initial)
        return player

    def deltas(self, model_a: str, model_b: str, winner: str) -> tuple[float, float, float]:
        """(outcome for A, change for A, change for B), without applying them."""
        a, b = self.get(model_a), self.get(model_b)
        s_a = OUTCOME[winner]
        e_a = expected(a.rating, b.rating, self.config.scale, self.config.base)
        d_a = self.config.k * (s_a - e_a)
        return s_a, d_a, -d_a

    def apply(self, model_a: str, model_b: str, winner: str) -> tuple[float, float]:
        s_a, d_a, d_b = self.deltas(model_a, model_b, winner)
        self.get(model_a).record(s_a, d_a)
        self.get(model_b).record(1.0 - s_a, d_b)
        return d_a, d_b

    def ratings(self) -> dict[str, float]:
        return {m: p.rating for m, p in self.players.items()}
