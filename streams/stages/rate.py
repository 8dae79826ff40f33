"""rate: incremental Elo from the judgments log, each judgment counted once, in offset order.

Reads ``judgments`` (one partition: the rating log) and sends two
:class:`~arena_stream.schemas.RatingUpdate` per judgment to ``ratings`` (keyed
by model). The whole book (every model's rating and record, and the outcome
counts per pair that Bradley-Terry snapshots are fitted from) is one
:class:`EloState` record in the ``ratings`` table, read and written once per
batch of judgments by the wiring. ``rating_log`` remembers, per battle, the
offset of the judgment that counted: a second judgment of the same battle (a
judge re-run after a crash) is ignored, so ``arena-stream audit`` can replay
the log and must find the same ratings.

Elo depends on order, and the audit replays in offset order, so judgments are
applied strictly in offset order: the book's ``last_offset`` means "every
offset up to here is applied or was not a rating". A judgment that arrives
after a gap (the consumer skipped or dropped an earlier one) is left
unfinished (``Outcome.redo``) and comes back after the earlier one
(:mod:`arena_stream.kafka.commits`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from arena_stream.config import RatingsConfig
from arena_stream.ratings.elo import EloBook, PairCount, PlayerRating
from arena_stream.schemas import Judgment, RatingUpdate, decode
from arena_stream.streams.stages.base import (
    Clock,
    Outcome,
    Record,
    Retention,
    StateValue,
    Store,
    wall_clock,
)

TABLE = "ratings"
BOOK_KEY = "book"
LOG_TABLE = "rating_log"


class EloState(StateValue, kw_only=True):
    """``ratings["book"]``: every model's Elo and record, and outcome counts per ordered pair."""

    last_offset: int = -1  # every judgments offset up to here is applied (or was no rating)
    judgments: int = 0  # judgments applied
    players: dict[str, PlayerRating] = {}
    pairs: list[PairCount] = []

    def pair(self, model_a: str, model_b: str) -> PairCount:
        for p in self.pairs:
            if p.model_a == model_a and p.model_b == model_b:
                return p
        created = PairCount(model_a=model_a, model_b=model_b)
        self.pairs.append(created)
        return created


class Counted(StateValue, kw_only=True):
    """``rating_log``: the judgments offset at which a battle was counted."""

    offset: int


RETENTION = Retention(
    keep_s=lambda config: config.state.done_retention_s,
    why="a second judgment of a battle comes from a judge re-run after a crash, within "
        "seconds; the book's last_offset already keeps anything committed from counting twice",
)


def sequential(record: Record, last: int) -> bool:
    """Whether ``record`` is the next offset after ``last`` (no gap in between)."""
    return record.offset == last + 1


@dataclass
class RateContext:
    ratings: RatingsConfig
    # Whether a record whose offset is not last + 1 may still be applied now, because
    # nothing in between needs it (log gaps, offsets already committed). The wiring asks
    # the consumer; without a consumer only the next offset qualifies.
    in_order: Callable[[Record, int], bool] = field(default=sequential)
    now: Clock = wall_clock


def rate(record: Record, book: EloState, store: Store, ctx: RateContext) -> Outcome:
    """Apply one judgment to ``book`` (changed in place; the caller writes it once per batch)."""
    out = Outcome()
    offset, last = record.offset, book.last_offset
    if offset > last and not ctx.in_order(record, last):
        out.redo = True
        out.count("ratings.out_of_order")
        return out
    if offset > last:
        book.last_offset = offset  # handled, whatever follows (even an undecodable record)
    j = decode(record.value or b"", Judgment)
    counted: Counted | None = store.table(LOG_TABLE).get(j.battle_id)
    if counted is not None and counted.offset != offset:
        out.count("ratings.duplicate")
        return out
    if offset <= last:
        if counted is None:  # the book landed before a crash, the log entry did not: repair
            out.write(LOG_TABLE, j.battle_id, Counted(offset=offset))
        return out
    out.write(LOG_TABLE, j.battle_id, Counted(offset=offset))
    elo = EloBook(ctx.ratings, book.players)
    s_a, d_a, d_b = elo.deltas(j.model_a, j.model_b, j.winner)
    elo.apply(j.model_a, j.model_b, j.winner)
    book.pair(j.model_a, j.model_b).add(j.winner)
    book.judgments += 1
    now = ctx.now()
    for model, opponent, outcome, delta in (
        (j.model_a, j.model_b, s_a, d_a),
        (j.model_b, j.model_a, 1.0 - s_a, d_b),
    ):
        p = elo.get(model)
        out.emit("ratings", model, RatingUpdate(
            model=model, rating=round(p.rating, 4), battles=p.battles, battle_id=j.battle_id,
            delta=round(delta, 4), opponent=opponent, outcome=outcome, wins=p.wins,
            losses=p.losses, ties=p.ties, judgment_offset=offset, ts=now,
        ))
    out.count("ratings.applied")
    return out
