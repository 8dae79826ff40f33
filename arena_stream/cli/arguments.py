"""Argument types shared by several commands: a bad value is argparse's one-line usage error."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime


def time_arg(text: str) -> float:
    """ISO-8601 (naive means UTC; a trailing ``Z`` is UTC) or unix seconds -> unix seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use ISO-8601 like 2024-07-01T12:00:00Z or unix seconds)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
