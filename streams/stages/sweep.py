"""sweep: prompts whose answers never all arrived get asked again, then reported.

An answer can go missing without a failed generation to show for it (an event
lost in a worker's shutdown). A timer walks the ``pending`` table: a prompt
still missing answers ``sweep_after_s`` after its first one is asked again of
the missing players only (``Prompt.only_players``), up to ``sweep_retries``
times; after that its missing players are recorded as failed generations, so
collect forms the battles with whoever answered, and one ``deadline`` dead
letter says who never answered. A timer cannot write tables (faust ties a
table write to an event's partition), so the sweep only sends messages and the
stages act on them like on any other; the re-requests it made are counted in
:class:`SweepTries`, in memory, per worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arena_stream.config import BattlesConfig
from arena_stream.schemas import Generation, Prompt
from arena_stream.streams.stages.base import Clock, Outcome, Table, failure, wall_clock
from arena_stream.streams.stages.collect import PendingPrompt


@dataclass
class SweepTries:
    """What this worker's sweep remembers, in memory: re-requests made per prompt id
    (``retries + 1``: reported missing), and when it first saw each prompt waiting.

    Ages are measured on this worker's own clock from when its sweep first saw the
    prompt, never against ``first_ts``, which another worker's clock may have written
    (the partition moves between workers): a skewed clock cannot make the sweep give
    up on a prompt early. After a rebalance a waiting prompt's age starts again.
    """

    counts: dict[str, int] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)


@dataclass
class SweepContext:
    battles: BattlesConfig
    expected_players: list[str]
    generations_topic: str  # full name, for the dead letter
    tries: SweepTries = field(default_factory=SweepTries)
    now: Clock = wall_clock

    @property
    def after_s(self) -> float:
        return self.battles.sweep_after_s or self.battles.deadline_s + 60.0


def sweep(pending: Table[PendingPrompt], ctx: SweepContext) -> Outcome:
    out = Outcome()
    now = ctx.now()
    retries = ctx.battles.sweep_retries
    waiting: set[str] = set()
    for prompt_id, state in pending.items():
        if state.done or not state.generations:
            continue
        waiting.add(prompt_id)
        seen = ctx.tries.first_seen.setdefault(prompt_id, now)
        if now - seen < ctx.after_s:
            continue
        first = next(iter(state.generations.values()))
        expected = first.expected_players or ctx.expected_players
        missing = [p for p in expected if p not in state.generations]
        tries = ctx.tries.counts.get(prompt_id, 0)
        if tries > retries:
            continue  # already reported missing; collect is forming its battles
        if tries < retries:
            ctx.tries.counts[prompt_id] = tries + 1
            out.emit("accepted", prompt_id, Prompt(
                id=prompt_id, messages=state.messages, metadata=state.metadata,
                category=first.category, play=first.play,
                round=first.round, only_players=missing, ts=now,
            ))
            out.count("sweep.rerequested")
            continue
        for player in missing:
            out.emit("generations", prompt_id, Generation(
                id=f"{prompt_id}/{player}", prompt_id=prompt_id, player=player, model=player,
                messages=state.messages, metadata=state.metadata, expected_players=expected,
                ok=False, play=first.play,
                error=f"deadline: no answer after {tries} re-requests", ts=now,
            ))
        out.dead(failure(
            "battle", "deadline", f"players {missing} never answered prompt {prompt_id}", None,
            ref=prompt_id, attempts=tries, topic=ctx.generations_topic,
        ))
        ctx.tries.counts[prompt_id] = retries + 1
    for gone in set(ctx.tries.first_seen) - waiting:  # formed since, or moved to another worker
        del ctx.tries.first_seen[gone]
        ctx.tries.counts.pop(gone, None)
    return out
