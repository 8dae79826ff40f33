"""collect: wait until every player asked has answered a prompt, then form its battles once.

Reads ``generations`` (keyed by prompt id, so all answers to a prompt arrive in
order on one partition) and keeps the answers so far in the ``pending`` table.
When the last expected player has answered (or failed), the battles are
formed with :func:`arena_stream.arena.battles.form_battles` and sent to
``battles``; the record then only remembers that it is done and which battles
it formed, so a redelivered or late generation changes nothing. Each battle
carries how many battles its prompt formed (``Battle.of``), so a reader knows
when it has seen them all; a prompt that forms none (too few answers) is a
``no_battle`` dead letter, so it never vanishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from arena_stream.arena.battles import form_battles
from arena_stream.schemas import Generation, Message, decode
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

TABLE = "pending"


class PendingPrompt(StateValue, kw_only=True):
    """``pending``: the answers to one prompt so far, or that its battles were formed.

    The conversation is kept once, not in every generation: a long prompt (up to
    ``limits.max_prompt_bytes``) answered by several players must not make one
    table record larger than the broker takes.
    """

    messages: list[Message] = []  # the conversation the players answered
    metadata: dict[str, Any] = {}  # the prompt's (checks for the verifier judge)
    generations: dict[str, Generation] = {}  # player -> its generation, without the two above
    first_ts: float = 0.0  # when the first answer arrived (the sweep's clock starts here)
    done: bool = False
    battles: list[str] = []  # the ids formed, once done


RETENTION = Retention(
    keep_s=lambda config: max(config.state.done_retention_s,
                              2 * (config.battles.sweep_after_s or config.battles.deadline_s + 60)),
    applies=lambda value: value.done,
    why="a prompt still waiting is never forgotten; a finished one is kept so that a late "
        "answer (after the sweep gave up on it) finds it done and forms nothing again",
)


@dataclass
class CollectContext:
    mode: str  # battles.mode
    target_player: str
    expected_players: list[str]  # configured order: battle ids hash the pair's order
    now: Clock = wall_clock


def collect(record: Record, store: Store, ctx: CollectContext) -> Outcome:
    out = Outcome()
    gen = decode(record.value or b"", Generation)
    state: PendingPrompt | None = store.table(TABLE).get(gen.prompt_id)
    if state is None:
        state = PendingPrompt(first_ts=ctx.now())
    if state.done or gen.player in state.generations:
        out.count("collect.repeated")
        return out  # a redelivered generation, or a late one after the battles formed
    messages = state.messages or gen.messages
    metadata = state.metadata or gen.metadata
    generations = {**state.generations,
                   gen.player: msgspec.structs.replace(gen, messages=[], metadata={})}
    expected = gen.expected_players or ctx.expected_players
    if not set(expected) <= set(generations):
        out.write(TABLE, gen.prompt_id, PendingPrompt(
            messages=messages, metadata=metadata, generations=generations,
            first_ts=state.first_ts))
        return out
    order = {p: i for i, p in enumerate(expected)}
    ordered = sorted(
        (msgspec.structs.replace(g, messages=messages, metadata=metadata)
         for g in generations.values()),
        key=lambda g: order.get(g.player, len(order)),
    )
    battles = form_battles(ordered, mode=ctx.mode, target_player=ctx.target_player,
                           now=ctx.now())
    for battle in battles:
        out.emit("battles", battle.prompt_id, battle)
    if not battles:
        failed = sorted(g.player for g in ordered if not g.ok)
        out.dead(failure(
            "battle", "no_battle",
            f"prompt {gen.prompt_id} formed no battle ({ctx.mode}): "
            + (f"no answer from {', '.join(failed)}" if failed else "too few players answered"),
            record, ref=gen.prompt_id,
        ))
    out.count("battles.formed", len(battles))
    out.write(TABLE, gen.prompt_id, PendingPrompt(
        first_ts=state.first_ts, done=True, battles=[b.id for b in battles]))
    return out
