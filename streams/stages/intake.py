"""intake: validate a published prompt and keep test-set prompts out; admit: accept each id once.

``intake`` reads ``prompts`` (what users publish, partitioned by whatever
client published it) and sends each valid prompt to ``prompts.checked``,
keyed by its id through our own partitioner. ``admit`` reads that topic, so
every record of one prompt id meets the same ``prompt_digests`` partition
whichever partitioner the publisher used (librdkafka's default, CRC32, and
the Java client's and aiokafka's, murmur2, place the same key on different
partitions): a re-sent prompt (same id, same content) is dropped quietly, a
reused id with different content is a ``duplicate_id`` dead letter, and
``prompts.accepted`` gets each prompt once. Anything malformed is one dead
letter with the reason and the original bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from arena_stream.arena.validation import InvalidPrompt, parse_prompt
from arena_stream.config import LimitsConfig
from arena_stream.schemas import Prompt, decode
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
from arena_stream.streams.stages.evaluate import is_heldout

TABLE = "prompt_digests"


class SeenPrompt(StateValue, kw_only=True):
    """``prompt_digests``: a prompt id admit accepted, with the digest of its content."""

    digest: str
    ts: float = 0.0  # when it was accepted


RETENTION = Retention(
    keep_s=lambda config: config.state.dedup_window_s,
    why="re-sends and reused ids are recognised for [state] dedup_window_s; after it the "
        "id is a new prompt, a new play with new battle ids (Prompt.play), so nothing "
        "already judged is mistaken for it",
)


@dataclass
class IntakeContext:
    limits: LimitsConfig
    decontaminator: Any = None  # offline.decontaminate.Decontaminator, or None when off


@dataclass
class AdmitContext:
    round: Callable[[], int]  # the flywheel round new prompts belong to (the target's version)
    now: Clock = wall_clock


async def intake(record: Record, ctx: IntakeContext) -> Outcome:
    out = Outcome()
    try:
        prompt = parse_prompt(record.value, ctx.limits)
    except InvalidPrompt as exc:
        out.dead(failure("intake", exc.reason, exc.message, record))
        return out
    if ctx.decontaminator is not None and not is_heldout(prompt.id):
        # (a held-out evaluation prompt is the test set itself; route keeps it from training)
        from arena_stream.models.embeddings import conversation_text

        check = ctx.decontaminator.check
        verdict = (await asyncio.to_thread(check, [conversation_text(prompt)]))[0]
        if verdict.contaminated:
            out.dead(failure("intake", "test_set_overlap", verdict.reason or "", record,
                             ref=prompt.id))
            return out
    out.emit("checked", prompt.id, prompt)
    return out


def play_of(prompt_id: str, digest: str, admitted: float) -> str:
    """One admission of a prompt (what its battle ids hash, see ``Prompt.play``)."""
    return hashlib.sha256(f"{prompt_id}\x1f{digest}\x1f{admitted!r}".encode()).hexdigest()[:16]


def admit(record: Record, store: Store, ctx: AdmitContext) -> Outcome:
    out = Outcome()
    prompt = decode(record.value or b"", Prompt)
    seen: SeenPrompt | None = store.table(TABLE).get(prompt.id)
    if seen is not None:
        if seen.digest != prompt.digest:
            out.dead(failure(
                "intake", "duplicate_id",
                f"prompt id {prompt.id!r} was already used for different content", record,
                ref=prompt.id,
            ))
        else:
            out.count("intake.duplicate")
        return out
    now = ctx.now()
    prompt.round = ctx.round()
    prompt.ts = now
    prompt.play = play_of(prompt.id, prompt.digest, now)
    out.emit("accepted", prompt.id, prompt)
    out.write(TABLE, prompt.id, SeenPrompt(digest=prompt.digest, ts=now))
    out.count("intake.accepted")
    return out
