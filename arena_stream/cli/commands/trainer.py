"""Consume training jobs and train new target versions (TRL: SFT or DPO, LoRA by default).

Each finished job publishes a new version on the models topic; every worker
then switches its target to it. Run one trainer per cluster. A job that
already finished is not run again.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="TOML configuration file")


def main(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import signal

    from arena_stream.cli.checks import require_environment
    from arena_stream.config import load, secrets
    from arena_stream.logging import redact
    from arena_stream.trainers.service import TrainerService

    config = load(args.config)
    redact(*secrets(config))
    require_environment(config, "trainer")  # secrets, files, model directory: before waiting

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"trainer waiting for jobs on {config.broker.bootstrap_servers}", flush=True)
        # The service looks at ``stop`` between jobs (a running job is finished first),
        # but not while it waits for its broker, which it does for ever: a signal
        # then cancels the wait, so a trainer whose broker never comes can be stopped.
        trainer = TrainerService(config)
        service = asyncio.ensure_future(trainer.serve(stop))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({service, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not service.done() and trainer.running is None:
            service.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await service
            return
        await service  # a service that failed on its own reports why

    asyncio.run(serve())
    return 0
