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

import structlog

from arena_stream.arena.tokens import with_token_counts
from arena_stream.models.clients import ChatClient
from arena_stream.models.reference import SKIPPED, ReferenceClient, reference_answer
from arena_stream.models.retry import CallFailed
from arena_stream.schemas import Generation, Prompt, decode
from arena_stream.streams.stages.base import Clock, Outcome, Record, failure, wall_clock

log = structlog.get_logger(__name__)


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
    if isinstance(ctx.client, ReferenceClient):
        return reference(prompt, base, ctx, out)
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


def reference(prompt: Prompt, base: dict[str, object], ctx: GenerateContext,
              out: Outcome) -> Outcome:
    """The reference player's answer: the prompt's ``metadata.reference``, or a visible skip.

    A skip is a failed Generation (collect forms the other battles without
    waiting), a counter and a log line, but no dead letter: prompts without a
    reference are expected in a mixed prompt set (see arena_stream/models/reference.py).
    """
    answer = reference_answer(prompt.metadata)
    if answer is None:
        out.count(f"generate.{ctx.player}.skipped")
        log.info("reference.skipped", player=ctx.player, prompt_id=prompt.id,
                 reason="the prompt has no metadata.reference")
        gen = Generation(**base, ok=False, attempts=0, ts=ctx.now(),  # type: ignore[arg-type]
                         error=f"{SKIPPED}: the prompt has no metadata.reference")
    else:
        gen = with_token_counts(Generation(**base, answer=answer, attempts=0,  # type: ignore[arg-type]
                                           ts=ctx.now()))
        out.count(f"generate.{ctx.player}")
    out.emit("generations", prompt.id, gen)
    return out
