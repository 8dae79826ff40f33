"""Building dead letters: what failed, where, why, and the original bytes.

A dead letter must always fit in one Kafka record, or the error path itself
fails and the input is lost without a trace. So the original is kept once
(as text when it is UTF-8, else base64), cut to :data:`MAX_ORIGINAL_BYTES`
when larger, with its full size and SHA-256 so it can still be identified,
and the error message is cut to :data:`MAX_ERROR_CHARS`.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

from arena_stream.schemas import DeadLetter

MAX_ORIGINAL_BYTES = 256_000  # base64 of this plus the rest stays well under 1 MB
MAX_ERROR_CHARS = 4_000


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
    size = len(original) if original is not None else 0
    kept = original[:MAX_ORIGINAL_BYTES] if original is not None else None
    text = _utf8(kept, cut=size > MAX_ORIGINAL_BYTES) if kept is not None else None
    if isinstance(key, bytes):
        key = key.decode("utf-8", errors="replace")
    return DeadLetter(
        stage=stage,
        reason=reason,
        error=error if len(error) <= MAX_ERROR_CHARS else error[:MAX_ERROR_CHARS] + " [cut]",
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        original=text,
        original_b64=base64.b64encode(kept).decode() if kept is not None and text is None else None,
        original_size=size,
        original_sha256=hashlib.sha256(original).hexdigest() if original is not None else None,
        truncated=size > MAX_ORIGINAL_BYTES,
        ref=ref,
        attempts=attempts,
        ts=time.time(),
    )


def _utf8(data: bytes, *, cut: bool) -> str | None:
    """``data`` as text, or None when it is not UTF-8 (a cut may split the last character)."""
    for drop in range(4 if cut else 1):
        try:
            return data[: len(data) - drop].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def original_bytes(letter: DeadLetter) -> bytes | None:
    """The original message, or None when none was kept or only its beginning was."""
    if letter.truncated:
        return None
    if letter.original_b64 is not None:
        return base64.b64decode(letter.original_b64)
    return letter.original.encode() if letter.original is not None else None


def message_meta(event: Any) -> dict[str, Any]:
    """topic / partition / offset / key of a faust event, for a dead letter."""
    msg = event.message
    return {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset, "key": msg.key}
