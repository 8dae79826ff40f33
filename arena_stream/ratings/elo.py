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

from arena_stream.config import RatingsConfig

OUTCOME = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5}


def expected(r_a: float, r_b: float, scale: float = 400.0, base: float = 10.0) -> float:
    """Probability-like expected score of A against B."""
    return 1.0 / (1.0 + base ** ((r_b - r_a) / scale))


@dataclass
class PlayerRating:
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

    def to_dict(self) -> dict[str, float | int]:
        return {
            "rating": self.rating,
            "battles": self.battles,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
        }

    @classmethod
    def from_dict(cls, d: dict[str, float | int]) -> PlayerRating:
        return cls(
            float(d["rating"]),
            int(d["battles"]),
            int(d.get("wins", 0)),
            int(d.get("losses", 0)),
            int(d.get("ties", 0)),
        )


@dataclass
class EloBook:
    """Ratings of every model, updated one judgment at a time."""

    config: RatingsConfig
    players: dict[str, PlayerRating] = field(default_factory=dict)

    def get(self, model: str) -> PlayerRating:
        player = self.players.get(model)
        if player is None:
            player = self.players[model] = PlayerRating(self.config.initial)
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
