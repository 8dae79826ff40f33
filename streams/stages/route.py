"""route: every judgment involving the target becomes training samples, each battle routed once.

Reads ``judgments`` (it shares the rate agent, see :mod:`arena_stream.streams.app`)
and sends each sample to its kind's training buffer (``train.sft``,
``train.dpo``: :mod:`arena_stream.arena.kinds`). Which judgments make which
samples is the paper's selection rule (:mod:`arena_stream.arena.routing`).
The ``routed`` table remembers each battle routed.
"""

from __future__ import annotations

from dataclasses import dataclass

from arena_stream.arena.kinds import kind_of, select_samples
from arena_stream.config import RoutingConfig
from arena_stream.schemas import Judgment, decode
from arena_stream.streams.stages.base import (
    Clock,
    Outcome,
    Record,
    Retention,
    StateValue,
    Store,
    wall_clock,
)
from arena_stream.streams.stages.evaluate import is_heldout

TABLE = "routed"


class Routed(StateValue, kw_only=True):
    """``routed``: a battle whose samples were sent (possibly none)."""

    samples: int = 0


RETENTION = Retention(
    keep_s=lambda config: config.state.done_retention_s,
    why="as rating_log: a judgment is routed again only when it is redelivered",
)


@dataclass
class RouteContext:
    routing: RoutingConfig
    now: Clock = wall_clock


def route(record: Record, store: Store, ctx: RouteContext) -> Outcome:
    out = Outcome()
    j = decode(record.value or b"", Judgment)
    if store.table(TABLE).get(j.battle_id) is not None:
        return out
    if is_heldout(j.prompt_id):  # held-out evaluation: rated, never trained on
        out.count("route.heldout_skipped")
        return out
    samples = select_samples(j, ctx.routing, ctx.now())
    for sample in samples:
        kind = kind_of(sample)
        out.emit(kind.topic, j.prompt_id, sample)
        out.count(f"route.{kind.name}")
    out.write(TABLE, j.battle_id, Routed(samples=len(samples)))
    return out
