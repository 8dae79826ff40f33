"""Show the current Elo ratings, or follow every rating update live.

Without ``--follow``: the latest rating of each model, read from the ratings
topic. With ``--follow``: one line per update as judgments arrive.
``--json`` prints machine-readable output (a list of objects, or one object
per line when following).
"""

from __future__ import annotations

import argparse
import contextlib


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="TOML configuration file")
    parser.add_argument("--follow", action="store_true", help="print updates as they come")
    parser.add_argument("--json", action="store_true", help="JSON output")


def main(args: argparse.Namespace) -> int:
    import asyncio

    from arena_stream.cli.display import print_ratings
    from arena_stream.config import load
    from arena_stream.kafka.io import ensure_ready, read_all, tail
    from arena_stream.ratings.standings import latest_ratings
    from arena_stream.schemas import RatingUpdate, decode, encode

    config = load(args.config)

    async def follow() -> None:
        await ensure_ready(config, timeout=None)  # a follower may start before anything else
        async for record in tail(config, "ratings"):
            try:
                update = decode(record.value, RatingUpdate)
            except (ValueError, TypeError):
                continue  # not a rating update; the stream never writes one

            if args.json:
                print(encode(update).decode(), flush=True)
            else:
                print(f"{update.model:<24} {update.rating:9.2f} ({update.delta:+.2f})"
                      f"  battles={update.battles}  vs {update.opponent}", flush=True)

    if args.follow:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(follow())
        return 0
    records = asyncio.run(read_all(config, "ratings"))
    rows = latest_ratings(decode(r.value, RatingUpdate) for r in records)
    print_ratings(rows, as_json=args.json)
    return 0
