"""List dead-lettered messages, or re-publish one once it is fixed.

Each dead letter says which stage rejected what and why, and keeps the
original bytes. ``--republish OFFSET`` sends the original (or, with
``--fixed FILE``, a corrected message) back to the topic it came from, with
its original key.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="TOML configuration file")
    parser.add_argument("--stage", help="only this stage (intake, generate, judge, ...)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--republish", type=int, metavar="OFFSET",
                        help="re-publish the dead letter at this offset")
    parser.add_argument("--fixed", help="file with the corrected message to publish instead")


def main(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    import msgspec

    from arena_stream.config import load
    from arena_stream.kafka.deadletter import original_bytes
    from arena_stream.kafka.io import producer, read_all
    from arena_stream.schemas import DeadLetter, decode

    config = load(args.config)
    records = asyncio.run(read_all(config, "deadletter"))
    letters = [(r.offset, decode(r.value, DeadLetter)) for r in records]
    if args.republish is not None:
        found = dict(letters).get(args.republish)
        if found is None:
            print(f"no dead letter at offset {args.republish}", file=sys.stderr)
            return 2
        if args.fixed:
            from pathlib import Path

            payload: bytes | None = Path(args.fixed).read_bytes().strip()
        else:
            payload = original_bytes(found)
        if payload is None:
            print("this dead letter kept no original message", file=sys.stderr)
            return 2

        async def send() -> None:
            async with producer(config) as p:
                key = found.key.encode() if found.key else None
                await p.send_and_wait(found.topic, payload, key=key)

        asyncio.run(send())
        print(f"re-published offset {args.republish} to {found.topic}")
        return 0
    for offset, d in letters:
        if args.stage and d.stage != args.stage:
            continue
        if args.json:
            sys.stdout.write(msgspec.json.encode({"offset": offset, **msgspec.to_builtins(d)})
                             .decode() + "\n")
        else:
            print(f"{offset:>6}  {d.stage:<10} {d.reason:<16} {d.ref or d.key or '-':<24} "
                  f"{d.error[:100]}")
    return 0
