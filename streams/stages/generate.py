"""generate: one player answers one accepted prompt.

There is one generate agent per player (``generate-<player>``), each reading
``prompts.accepted`` in its own consumer group, so a slow or dead player
queues only its own work. Every prompt yields exactly one ``Generation`` per
player asked: an answer, or ``ok = False`` with the reason (and a dead letter)
after the client's retries or the battle deadline, so that collect never
waits for an answer that will not come.

Held-out evaluations (:mod:`~arena_stream.streams.stages.evaluate`) replay the
same prompts for every target version. An opponent's model has not changed
between them, so its answer is taken once per (player, version, prompt) and
reused (:class:`HeldoutAnswers`): every version of the target meets the very
same opponent answers, which is what makes their held-out ratings comparable,
and an evaluation costs the target's answers only. A reused answer says so:
``attempts = 0`` (no call was made) and the first answer's latency and tokens.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from dataclasses import dataclass, field

import structlog

from arena_stream.arena.tokens import with_token_counts
from arena_stream.models.clients import ChatClient
from arena_stream.models.reference import SKIPPED, ReferenceClient, reference_answer
from arena_stream.models.retry import CallFailed
from arena_stream.schemas import Generation, Prompt, decode
from arena_stream.streams.stages.base import Clock, Outcome, Record, failure, wall_clock
from arena_stream.streams.stages.evaluate import parse_eval_id

log = structlog.get_logger(__name__)


@dataclass
class HeldoutAnswers:
    """An opponent's answers to held-out prompts, kept to be reused by the next evaluation.

    Bounded (least recently used go first): it is a cache, not state; a restarted worker
    asks the model again, which changes no rating (the answer is the same model's).
    """

    limit: int = 4096
    answers: collections.OrderedDict[tuple[str, int, str, str], Generation] = field(
        default_factory=collections.OrderedDict)

    @staticmethod
    def key(prompt: Prompt, rated_name: str, version: int) -> tuple[str, int, str, str] | None:
        parsed = parse_eval_id(prompt.id)
        if parsed is None:
            return None
        content = "\x1f".join(f"{m.role}\x1e{m.content}" for m in prompt.messages)
        return (rated_name, version, parsed[1], hashlib.sha256(content.encode()).hexdigest())

    def get(self, key: tuple[str, int, str, str]) -> Generation | None:
        found = self.answers.get(key)
        if found is not None:
            self.answers.move_to_end(key)
        return found

    def put(self, key: tuple[str, int, str, str], gen: Generation) -> None:
        self.answers[key] = gen
        self.answers.move_to_end(key)
        while len(self.answers) > self.limit:
            self.answers.popitem(last=False)


@dataclass
class GenerateContext:
    player: str
    client: ChatClient
    rated_name: str  # "target@v3" for the target, the player's name otherwise
    expected_players: list[str]  # every configured player: who collect waits for
    deadline_s: float
    now: Clock = wall_clock
    # an opponent's held-out answers, reused across target versions (None: always ask)
    heldout_answers: HeldoutAnswers | None = None


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
    memo = ctx.heldout_answers
    key = memo.key(prompt, ctx.rated_name, ctx.client.version) if memo is not None else None
    if memo is not None and key is not None and (earlier := memo.get(key)) is not None:
        out.count(f"generate.{ctx.player}.reused")
        out.emit("generations", prompt.id, Generation(
            **base, answer=earlier.answer, latency_s=earlier.latency_s,
            prompt_tokens=earlier.prompt_tokens, completion_tokens=earlier.completion_tokens,
            token_source=earlier.token_source, attempts=0, ts=ctx.now()))
        return out
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
        if memo is not None and key is not None:
            memo.put(key, gen)
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
