"""Building dead letters: what failed, where, why, and the original bytes."""

from __future__ import annotations

import base64
import time
from typing import Any

from arena_stream.schemas import DeadLetter


def dead_letter(
    *,
    stage: str,
    reason: str,
    error: str,
    topic: str,
    partition: int = -1,
    offset: int = -1,
    key: bytes | str | None = None,
    original: bytes | None = None,
    ref: str | None = None,
    attempts: int = 0,
) -> DeadLetter:
    text: str | None = None
    if original is not None:
        try:
            text = original.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    if isinstance(key, bytes):
        key = key.decode("utf-8", errors="replace")
    return DeadLetter(
        stage=stage,
        reason=reason,
        error=error,
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        original=text,
        original_b64=base64.b64encode(original).decode() if original is not None else None,
        ref=ref,
        attempts=attempts,
        ts=time.time(),
    )


def original_bytes(letter: DeadLetter) -> bytes | None:
    if letter.original_b64 is not None:
        return base64.b64decode(letter.original_b64)
    return letter.original.encode() if letter.original is not None else None


def message_meta(event: Any) -> dict[str, Any]:
    """topic / partition / offset / key of a faust event, for a dead letter."""
    msg = event.message
    return {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset, "key": msg.key}
