"""Run the stream agents against the configured cluster until Ctrl-C / SIGTERM.

Run as many workers as the prompt topics have partitions; they share the work
through the consumer group named by ``app_id``. On SIGTERM a worker stops
taking new events, and what it had not finished is redone by whoever takes
its partitions: every stage is idempotent.
"""

from __future__ import annotations

import argparse

# How long a stop may take once asked for. faust's graceful stop waits for every event
# in flight to be acknowledged, and with several agents on one topic (one per player)
# it can wait for one that will never be (seen with SIGTERM while generations were in
# flight: "wait_empty: Waiting for tasks" forever). After this the process exits anyway:
# what it had not acknowledged is redelivered, as after a crash.
STOP_GRACE_S = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="TOML configuration file")


def main(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import os
    import signal
    import sys
    import threading

    from arena_stream.cli.checks import require_environment
    from arena_stream.config import load, secrets
    from arena_stream.kafka.io import ensure_ready
    from arena_stream.logging import redact
    from arena_stream.streams.worker import running_worker, wait_until_ready

    config = load(args.config)
    redact(*secrets(config))
    require_environment(config, "worker")  # secrets, files, model directory: before waiting
    if not config.broker.bootstrap_servers:
        raise SystemExit("worker needs [broker] bootstrap_servers (or use 'arena-stream run')")

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # The wait for the broker (for ever: a service may start first) happens before
        # the signals are held back below, and a signal ends it: a worker whose broker
        # never comes stops on Ctrl-C or SIGTERM. running_worker's own wait is then instant.
        waiting = asyncio.ensure_future(ensure_ready(config, timeout=None))
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, waiting.cancel)
        try:
            await waiting
        except asyncio.CancelledError:
            if waiting.cancelled():
                return  # stopped before the broker answered: nothing to hand back
            raise
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        # faust's Worker installs its own SIGINT/SIGTERM handlers as it starts, replacing
        # any set before: those stop faust but never ended our wait, so the process hung on
        # SIGTERM; and a stop that races faust's start-up hangs in faust's shutdown. So the
        # signals are held back while faust starts, then ours take them over (a signal that
        # came in the meantime is delivered then), and the stop waits for the start-up.
        held = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            async with running_worker(config) as app:
                for sig in held:
                    loop.add_signal_handler(sig, stop.set)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
                print(f"worker running ({config.app_id} on {config.broker.bootstrap_servers})",
                      flush=True)
                waits = {
                    asyncio.ensure_future(stop.wait()),
                    asyncio.ensure_future(app.wait_until_stopped()),  # faust stopped itself
                }
                _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                if not app.should_stop:
                    with contextlib.suppress(TimeoutError):
                        await wait_until_ready(app, timeout=60)
                watchdog = threading.Timer(STOP_GRACE_S, stop_timed_out)
                watchdog.daemon = True
                watchdog.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)

    def stop_timed_out() -> None:
        print(f"worker: stop did not finish within {STOP_GRACE_S:.0f}s; exiting anyway "
              "(unacknowledged events will be redelivered)", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(0)

    asyncio.run(serve())
    return 0
