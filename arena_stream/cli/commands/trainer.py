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
    import signal

    from arena_stream.config import load, secrets
    from arena_stream.logging import redact
    from arena_stream.trainers.service import TrainerService

    config = load(args.config)
    redact(*secrets(config))

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"trainer waiting for jobs on {config.broker.bootstrap_servers}", flush=True)
        await TrainerService(config).serve(stop)

    asyncio.run(serve())
    return 0
