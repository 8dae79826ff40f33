"""Run the stream agents against the configured cluster until Ctrl-C / SIGTERM.

Run as many workers as the prompt topics have partitions; they share the work
through the consumer group named by ``app_id``. On SIGTERM a worker stops
taking new events, and what it had not finished is redone by whoever takes
its partitions: every stage is idempotent.
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
    from arena_stream.worker import running_worker

    config = load(args.config)
    redact(*secrets(config))
    if not config.broker.bootstrap_servers:
        raise SystemExit("worker needs [broker] bootstrap_servers (or use 'arena-stream run')")

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with running_worker(config):
            print(f"worker running ({config.app_id} on {config.broker.bootstrap_servers})",
                  flush=True)
            await stop.wait()

    asyncio.run(serve())
    return 0
