"""A user's own checks, loaded by name from a config in tests/test_verifier.py."""

from __future__ import annotations

from typing import Any


def no_emoji(answer: str, args: dict[str, Any], context: Any) -> tuple[bool, str]:
    """Passes when the answer holds no character from the emoji blocks."""
    found = [c for c in answer if 0x1F300 <= ord(c) <= 0x1FAFF or 0x2600 <= ord(c) <= 0x27BF]
    return not found, f"{len(found)} emoji"


def mentions_topic(answer: str, args: dict[str, Any], context: Any) -> bool:
    """Passes when the answer names the prompt's metadata topic (args may override it)."""
    topic = args.get("topic") or context.metadata.get("topic", "")
    return bool(topic) and topic.lower() in answer.lower()


def broken(answer: str, args: dict[str, Any], context: Any) -> bool:
    raise RuntimeError("this check is broken")


def not_a_bool(answer: str, args: dict[str, Any], context: Any) -> str:
    return "yes"
