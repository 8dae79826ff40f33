"""Starting and stopping the faust worker inside our own event loop.

``arena-stream worker`` runs it until a signal; ``arena-stream run`` runs it
beside the publisher, the trainer and the live display, and stops it when the
prompts are judged. Before faust starts, every topic it will touch exists with
the right layout (a broker that auto-creates topics on a metadata request
would otherwise create them with its own defaults: :mod:`arena_stream.kafka.broker`),
every model answers (:mod:`arena_stream.models.preflight`), and the newest
published versions are applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog

from arena_stream.config import Config
from arena_stream.kafka.broker import ensure_topics, prepare
from arena_stream.kafka.io import ensure_ready, read_all
from arena_stream.streams.runtime import Runtime
from arena_stream.streams.stages import versions

__all__ = ["RunningWorker", "check_models", "prepare", "running_worker", "wait_until_ready"]

log = structlog.get_logger(__name__)


@dataclass
class RunningWorker:
    """A started worker: the faust app, what its agents share, and its live page if any."""

    app: Any  # faust.App
    runtime: Runtime
    config: Config
    wiring: Any = None  # arena_stream.streams.app.Wiring: tables, reapers
    web: Any = None  # arena_stream.web.live.WebServer when [web] enables it

    def table_sizes(self) -> dict[str, int]:
        """Keys held per table (what bounded state keeps bounded)."""
        return {name: len(table) for name, table in self.wiring.faust_tables.items()}

    @property
    def should_stop(self) -> bool:
        return bool(self.app.should_stop)

    async def wait_until_stopped(self) -> None:
        await self.app.wait_until_stopped()


async def check_models(runtime: Runtime) -> None:
    """Every player and the judge can answer, or a :class:`ConfigError` naming what cannot."""
    from arena_stream.models.preflight import require_models

    clients = {f"player {p.name}": runtime.client(p.name) for p in runtime.config.players}
    clients.update(runtime.judge.clients())
    await require_models(clients)


async def load_versions(runtime: Runtime) -> None:
    """Apply the newest published version of each player, before any agent runs."""
    records = await read_all(runtime.config, "models")
    newest = versions.newest_versions((r.value for r in records), runtime.chain)
    for name, version in newest.items():
        if name in runtime.player_names and await versions.apply_version(
            runtime.client(name), version
        ):
            runtime.versions[name] = version


@contextlib.asynccontextmanager
async def running_worker(
    config: Config, runtime: Runtime | None = None
) -> AsyncIterator[RunningWorker]:
    """Run the stream agents in this loop until the block ends."""
    import faust

    from arena_stream.streams.app import create_app

    await ensure_ready(config, timeout=None)  # a service waits for its broker for ever
    runtime = runtime or Runtime(config)
    await check_models(runtime)
    wiring = create_app(config, runtime)
    app = wiring.app
    await ensure_topics(config, wiring.internal_topics())
    await load_versions(runtime)
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
    running = RunningWorker(app=app, runtime=runtime, config=config, wiring=wiring)
    runtime.telemetry.attach(running)
    try:
        if config.web.enabled:
            from arena_stream.web.live import WebServer

            running.web = WebServer(config, service=runtime.telemetry)
            await running.web.start()
        yield running
    finally:
        if running.web is not None:
            with contextlib.suppress(Exception):
                await running.web.stop()
        with contextlib.suppress(Exception):
            await worker.stop()
        with contextlib.suppress(Exception):
            await runtime.aclose()
        log.info("worker.stopped", counters=dict(runtime.counters))


async def wait_until_ready(worker: RunningWorker, timeout: float = 60.0) -> None:
    """Wait until the consumer has its partitions and tables have recovered."""
    app = worker.app
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        consumer = getattr(app, "consumer", None)
        recovered = app.tables.recovery.completed.is_set() if app.tables else True
        if consumer is not None and consumer.assignment() and recovered:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the worker did not get its partitions in time")
