"""Publish prompts from a JSONL file to the prompts topic.

Each line is ``{"id": ..., "prompt": "..."}`` or ``{"id": ..., "messages": [...]}``
(optional ``category`` and ``metadata``). Lines are checked the way the
stream checks them; bad lines are reported with their line numbers and
skipped. Good lines are published unchanged, keyed by their id.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="JSONL file of prompts")
    parser.add_argument("--config", required=True, help="TOML configuration file")


def main(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from arena_stream.config import load
    from arena_stream.datasets.prompts import publish_prompts, read_prompt_file

    config = load(args.config)
    good, bad = read_prompt_file(args.file, config.limits)
    for line, reason in bad:
        print(f"{args.file}:{line}: skipped: {reason}", file=sys.stderr)
    sent = asyncio.run(publish_prompts(config, good))
    print(f"published {sent} prompts, skipped {len(bad)} bad lines")
    return 0 if not bad else 1
