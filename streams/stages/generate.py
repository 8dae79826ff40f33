"""generate: one player answers one accepted prompt.

There is one generate agent per player (``generate-<player>``), each reading
``prompts.accepted`` in its own consumer group, so a slow or dead player
queues only its own work. Every prompt yields exactly one ``Generation`` per
player asked: an answer, or ``ok = False`` with the reason (and a dead letter)
after the client's retries or the battle deadline, so that collect never
waits for an answer that will not come.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from arena_stream.arena.tokens import with_token_counts
from arena_stream.models.clients import ChatClient
from arena_stream.models.retry import CallFailed
from arena_stream.schemas import Generation, Prompt, decode
from arena_stream.streams.stages.base import Clock, Outcome, Record, failure, wall_clock


@dataclass
class GenerateContext:
    player: str
    client: ChatClient
    rated_name: str  # "target@v3" for the target, the player's name otherwise
    expected_players: list[str]  # every configured player: who collect waits for
    deadline_s: float
    now: Clock = wall_clock


async def generate(record: Record, ctx: GenerateContext) -> Outcome:
    out = Outcome()
    prompt = decode(record.value or b"", Prompt)
    if prompt.only_players and ctx.player not in prompt.only_players:
        return out  # a re-request for other players
    base = dict(
        id=f"{prompt.id}/{ctx.rated_name}", prompt_id=prompt.id, player=ctx.player,
        model=ctx.rated_name, version=ctx.client.version, round=prompt.round,
        messages=prompt.messages, category=prompt.category, metadata=prompt.metadata,
        expected_players=ctx.expected_players, play=prompt.play,
    )
    started = asyncio.get_running_loop().time()
    messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
    try:
        done = await asyncio.wait_for(ctx.client.complete(messages), ctx.deadline_s)
    except (CallFailed, TimeoutError) as exc:
        if isinstance(exc, CallFailed):
            reason, attempts, error = exc.reason, exc.attempts, exc.message
        else:
            reason, attempts, error = "deadline", 0, f"no answer within {ctx.deadline_s}s"
        gen = Generation(
            **base, ok=False, error=f"{reason}: {error}", attempts=attempts, ts=ctx.now(),
            latency_s=asyncio.get_running_loop().time() - started,
        )
        out.dead(failure("generate", reason, f"player {ctx.player}: {reason}: {error}", record,
                         ref=prompt.id, attempts=attempts))
    else:
        gen = Generation(
            **base, answer=done.text, latency_s=done.latency_s,
            prompt_tokens=done.prompt_tokens, completion_tokens=done.completion_tokens,
            attempts=done.attempts, ts=ctx.now(),
        )
        gen = with_token_counts(gen)  # the server's usage, else counted
        out.count(f"generate.{ctx.player}")
    out.emit("generations", prompt.id, gen)
    return out
