"""Run the embedded Kafka-compatible broker (Tansu, memory storage) in the foreground.

It prints its address once it accepts connections and runs until Ctrl-C or
SIGTERM. Point other commands at it with ``[broker] bootstrap_servers``.
Everything it holds is lost when it stops.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=9092, help="port on 127.0.0.1 (0: any free)")


def main(args: argparse.Namespace) -> int:
    import signal
    import threading

    from arena_stream.kafka.broker import EmbeddedBroker

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedBroker(args.port) as broker:
        print(f"broker ready at {broker.address}", flush=True)
        try:
            while not stop.wait(0.5):
                if broker.process is None or broker.process.poll() is not None:
                    print("broker exited", flush=True)
                    return 1
        except KeyboardInterrupt:
            pass
    return 0
