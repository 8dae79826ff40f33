"""Read any topic back for a window of time or offsets, as Parquet or JSON lines.

``--topic`` takes a short name (prompts, generations, battles, judgments,
ratings, leaderboard, sft, dpo, jobs, models, deadletter) or a full topic
name. Times are unix seconds or ISO-8601 (UTC unless they say otherwise).
Without ``--out`` the rows are printed as JSON lines.
"""

from __future__ import annotations

import argparse

from arena_stream.cli.arguments import time_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="TOML configuration file")
    parser.add_argument("--topic", required=True, help="short or full topic name")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-time", type=time_arg,
                       help="first record time (ISO-8601 or unix seconds)")
    start.add_argument("--from-offset", type=int, help="first offset, in every partition")
    parser.add_argument("--to-time", type=time_arg, help="last record time (inclusive)")
    parser.add_argument("--to-offset", type=int, help="last offset (inclusive), every partition")
    parser.add_argument("--out", help="output file: .parquet or .jsonl")


def main(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    import msgspec

    from arena_stream.cli.errors import UserError
    from arena_stream.config import load
    from arena_stream.kafka.io import topic_name
    from arena_stream.kafka.replay import read_window, write_rows

    config = load(args.config)
    try:
        topic_name(config, args.topic)  # a misspelt topic is named before connecting
    except KeyError as exc:
        raise UserError(exc.args[0]) from None
    rows = asyncio.run(read_window(
        config, args.topic, from_time=args.from_time,
        to_time=args.to_time, from_offset=args.from_offset,
        to_offset=args.to_offset,
    ))
    if args.out:
        n = write_rows(rows, args.out)
        print(f"wrote {n} records to {args.out}", file=sys.stderr)
    else:
        for row in rows:
            sys.stdout.write(msgspec.json.encode(row).decode() + "\n")
    return 0
