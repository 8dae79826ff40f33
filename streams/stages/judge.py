"""judge: two games per battle, positions swapped, one verdict; each battle judged once.

Reads ``battles`` and sends the :class:`~arena_stream.schemas.Judgment` to
``judgments``, the single-partition log every rating is computed from. The
``judged`` table remembers each battle judged, so a redelivered battle costs
no judge call. A judge that cannot give a verdict after its retries (an
unreadable reply, a server that keeps failing) dead-letters the battle with
the reason; it never counts as a win for anyone. How a verdict is reached is
the judge's business (:mod:`arena_stream.judges`).
"""

from __future__ import annotations

from dataclasses import dataclass

from arena_stream.judges.base import Judge, JudgeFailed
from arena_stream.ratings.style import style_counts
from arena_stream.schemas import Battle, decode
from arena_stream.streams.stages.base import (
    Clock,
    Outcome,
    Record,
    Retention,
    StateValue,
    Store,
    failure,
    wall_clock,
)

TABLE = "judged"


class Judged(StateValue, kw_only=True):
    """``judged``: a battle whose judgment was sent."""

    ts: float = 0.0


RETENTION = Retention(
    keep_s=lambda config: config.state.done_retention_s,
    why="a battle comes again only by redelivery (committed: it cannot) or by its prompt "
        "finishing again, which pending remembers for longer",
)


@dataclass
class JudgeContext:
    judge: Judge
    now: Clock = wall_clock


async def judge(record: Record, store: Store, ctx: JudgeContext) -> Outcome:
    out = Outcome()
    battle = decode(record.value or b"", Battle)
    if store.table(TABLE).get(battle.id) is not None:
        out.count("judge.repeated")
        return out
    try:
        verdict = await ctx.judge.judge(battle)
    except JudgeFailed as exc:
        out.dead(failure("judge", exc.reason, exc.message, record, ref=battle.id,
                         attempts=exc.attempts))
        return out
    if verdict.style is None:  # length and markdown counts, for style-controlled ratings
        known = battle.tokens_a > 0 and battle.tokens_b > 0
        verdict.style = style_counts(
            battle.answer_a, battle.answer_b,
            tokens_a=battle.tokens_a if known else None,
            tokens_b=battle.tokens_b if known else None,
        )
    out.emit("judgments", battle.prompt_id, verdict)
    out.write(TABLE, battle.id, Judged(ts=ctx.now()))
    out.count("judgments")
    return out
