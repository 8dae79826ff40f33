"""Current standings from the stream of rating updates."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from arena_stream.schemas import RatingUpdate


class Standing(msgspec.Struct, kw_only=True):
    model: str
    rating: float
    battles: int
    wins: int
    losses: int
    ties: int
    rank: int = 0


def latest_ratings(updates: Iterable[RatingUpdate]) -> list[Standing]:
    """The last update of each model (by judgment offset), best first."""
    last: dict[str, RatingUpdate] = {}
    for u in updates:
        prev = last.get(u.model)
        if prev is None or (u.judgment_offset, u.battles) >= (prev.judgment_offset, prev.battles):
            last[u.model] = u
    rows = [
        Standing(model=u.model, rating=u.rating, battles=u.battles, wins=u.wins,
                 losses=u.losses, ties=u.ties)
        for u in last.values()
    ]
    rows.sort(key=lambda r: -r.rating)
    for i, row in enumerate(rows, start=1):
        row.rank = i
    return rows
