"""Replay the whole judgments log, recompute every rating, compare with the live ratings.

Exits 0 when the ratings table and the ratings topic both match the
recomputation, 1 with a readable report of every difference otherwise.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="TOML configuration file")
    parser.add_argument("--tolerance", type=float, default=1e-6, help="allowed rating difference")


def main(args: argparse.Namespace) -> int:
    import asyncio

    from arena_stream.config import load
    from arena_stream.ratings.audit import audit

    report = asyncio.run(audit(load(args.config), tolerance=args.tolerance))
    print(report.render())
    return 0 if report.ok else 1
