"""Turning bytes from ``arena.prompts`` into a :class:`schemas.Prompt`, or a clear reason why not.

Every rejection has a short machine-readable ``reason`` (it becomes the
dead letter's ``reason``) and a sentence for people.
"""

from __future__ import annotations

import hashlib
import itertools

import msgspec

from arena_stream.config import LimitsConfig
from arena_stream.schemas import Message, Prompt, PromptIn, decode, encode


class InvalidPrompt(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def digest(messages: list[Message]) -> str:
    """A stable hash of a conversation's content, to tell a re-send from a reused id."""
    return hashlib.sha256(encode(messages)).hexdigest()[:32]


def parse_prompt(raw: bytes | None, limits: LimitsConfig) -> Prompt:
    """Validate one message from the prompts topic."""
    if raw is None or not raw.strip():
        raise InvalidPrompt("empty_message", "the message has no value")
    if len(raw) > limits.max_prompt_bytes:
        raise InvalidPrompt(
            "oversized", f"message is {len(raw)} bytes, the limit is {limits.max_prompt_bytes}"
        )
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPrompt("not_utf8", f"message is not UTF-8 text: {exc}") from None
    try:
        msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidPrompt("invalid_json", f"message is not valid JSON: {exc}") from None
    try:
        incoming = decode(raw, PromptIn)
    except msgspec.ValidationError as exc:
        reason = "unknown_role" if ".role" in str(exc) else "invalid_shape"
        raise InvalidPrompt(reason, f"message does not match the prompt schema: {exc}") from None
    return normalise(incoming, limits)


def normalise(incoming: PromptIn, limits: LimitsConfig) -> Prompt:
    if not incoming.id.strip():
        raise InvalidPrompt("invalid_shape", "id must be a non-empty string")
    if len(incoming.id) > limits.max_id_chars:
        raise InvalidPrompt(
            "invalid_id", f"id is {len(incoming.id)} characters, the limit is {limits.max_id_chars}"
        )
    if not incoming.id.isprintable():
        # A control character or an ANSI escape in an id would forge log lines and
        # listings wherever the id is printed.
        raise InvalidPrompt("invalid_id", f"id {incoming.id!r} holds control characters")
    if (incoming.messages is None) == (incoming.prompt is None):
        raise InvalidPrompt("invalid_shape", "give exactly one of 'messages' or 'prompt'")
    if incoming.prompt is not None:
        messages = [Message("user", incoming.prompt)]
    else:
        messages = list(incoming.messages or [])
    if not messages:
        raise InvalidPrompt("empty_content", "the conversation has no messages")
    if len(messages) > limits.max_turns:
        raise InvalidPrompt(
            "too_many_turns", f"{len(messages)} turns, the limit is {limits.max_turns}"
        )
    for i, m in enumerate(messages):
        if not m.content.strip():
            raise InvalidPrompt("empty_content", f"message {i} ({m.role}) has empty content")
        if m.role == "system" and i != 0:
            raise InvalidPrompt(
                "invalid_roles", f"a system message may only come first (found at {i})"
            )
    if messages[-1].role != "user":
        raise InvalidPrompt(
            "not_user_last",
            f"the conversation must end with a user turn, not {messages[-1].role!r}",
        )
    turns = [m.role for m in messages if m.role != "system"]
    for prev, cur in itertools.pairwise(turns):
        if prev == cur:
            raise InvalidPrompt(
                "invalid_roles", f"two {cur!r} turns in a row; turns must alternate"
            )
    return Prompt(
        id=incoming.id,
        messages=messages,
        category=incoming.category,
        metadata=incoming.metadata,
        digest=digest(messages),
    )
