"""Capped exponential backoff with full jitter, and the errors worth retrying.

Full jitter (a uniform delay between 0 and the capped exponential) spreads a
burst of clients that failed together, so a recovering model server is not hit
by all of them at the same instant.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class CallFailed(Exception):
    """A model call failed; ``reason`` is a short code, ``retryable`` says if trying again may help.

    ``retry_after`` is the server's own wish (HTTP ``Retry-After``) in seconds.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        retryable: bool = True,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = attempts


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before retry ``attempt`` (1-based): uniform in [0, min(cap, base * 2^(attempt-1))]."""
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    return (rng or random).uniform(0.0, ceiling)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    base: float,
    cap: float,
    on_retry: Callable[[CallFailed, int, float], None] | None = None,
) -> tuple[T, int]:
    """Run ``call`` until it succeeds or ``max_retries`` retries are spent.

    Returns the result and the number of attempts made. Raises the last
    :class:`CallFailed` with ``attempts`` set when it gives up.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call(), attempt
        except CallFailed as exc:
            exc.attempts = attempt
            if not exc.retryable or attempt > max_retries:
                raise
            delay = backoff_delay(attempt, base, cap)
            if exc.retry_after is not None:
                delay = min(max(delay, exc.retry_after), cap)
            if on_retry is not None:
                on_retry(exc, attempt, delay)
            await asyncio.sleep(delay)
