"""Starting and stopping the faust worker inside our own event loop.

``arena-stream worker`` runs it until a signal; ``arena-stream run`` runs it
beside the publisher, the trainer and the live display, and stops it when the
prompts are judged. Topics are created before faust looks at them (see
:mod:`arena_stream.broker` for why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

import structlog

from arena_stream.config import Config
from arena_stream.kafka.broker import prepare
from arena_stream.kafka.io import ensure_ready
from arena_stream.streams.runtime import Runtime

__all__ = ["check_models", "prepare", "running_worker", "wait_until_ready"]

log = structlog.get_logger(__name__)


async def check_models(runtime: Runtime) -> None:
    """Every player and the judge can answer, or a :class:`ConfigError` naming what cannot."""
    from arena_stream.models.preflight import require_models

    clients = {f"player {p.name}": runtime.client(p.name) for p in runtime.config.players}
    clients["judge"] = runtime.judge.client
    await require_models(clients)


@contextlib.asynccontextmanager
async def running_worker(config: Config, runtime: Any = None) -> AsyncIterator[Any]:
    """Run the stream agents in this loop; yields the faust app."""
    import faust

    from arena_stream.streams.app import create_app
    from arena_stream.streams.flywheel import load_versions

    await ensure_ready(config, timeout=None)  # a service waits for its broker for ever
    runtime = runtime or Runtime(config)
    await check_models(runtime)
    app = create_app(config, runtime)
    await load_versions(app.arena_runtime)
    worker = faust.Worker(
        app,
        loglevel=logging.WARNING,
        override_logging=False,
        redirect_stdouts=False,
        loop=asyncio.get_running_loop(),
        quiet=True,
        daemon=False,
        # mode's defaults are the sys.stdout / sys.stderr of the moment it was imported,
        # which a test runner may have swapped (and closed) since.
        stdout=sys.stdout,
        stderr=sys.stderr,
    )
    await worker.start()
    log.info("worker.started", app_id=config.app_id, broker=config.broker.bootstrap_servers)
    app.arena_web = None  # type: ignore[attr-defined]  # the live page, when [web] enables it
    try:
        if config.web.enabled:
            from arena_stream.cli.web import start_server

            app.arena_web = await start_server(config)  # type: ignore[attr-defined]
        yield app
    finally:
        if app.arena_web is not None:
            with contextlib.suppress(Exception):
                await app.arena_web.stop()
        with contextlib.suppress(Exception):
            await worker.stop()
        with contextlib.suppress(Exception):
            await app.arena_runtime.aclose()
        log.info("worker.stopped", counters=dict(app.arena_runtime.counters))


async def wait_until_ready(app: Any, timeout: float = 60.0) -> None:
    """Wait until the consumer has its partitions and tables have recovered."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        consumer = getattr(app, "consumer", None)
        recovered = app.tables.recovery.completed.is_set() if app.tables else True
        if consumer is not None and consumer.assignment() and recovered:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the worker did not get its partitions in time")
