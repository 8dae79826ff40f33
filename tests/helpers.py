"""Small helpers for tests that run the real worker on the embedded broker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from arena_stream.config import Config
from arena_stream.kafka.io import producer, read_all, topic_name
from arena_stream.schemas import decode
from arena_stream.streams.worker import prepare


async def publish_raw(config: Config, items: list[tuple[bytes | None, bytes]]) -> None:
    await prepare(config)
    async with producer(config) as p:
        for key, value in items:
            await p.send_and_wait(topic_name(config, "prompts"), value, key=key)


def prompt(pid: str, text: str, **extra: Any) -> tuple[bytes, bytes]:
    return pid.encode(), json.dumps({"id": pid, "prompt": text, **extra}).encode()


async def events(config: Config, key: str, kind: type[Any]) -> list[Any]:
    return [decode(r.value, kind) for r in await read_all(config, key)]


async def wait_for(
    check: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.3
) -> None:
    """Poll an async ``check`` until it returns true."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)


async def count(config: Config, key: str) -> int:
    return len(await read_all(config, key))
