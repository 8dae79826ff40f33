"""Publish prompts to the prompts topic, from whatever format they are in.

A source is a JSON lines file or a JSON array in our format (``{"id": ...,
"prompt": "..."}`` or ``{"id": ..., "messages": [...]}``, optional
``category`` and ``metadata``) or in another one users have: MT-bench and
arena-hard question files, LMSYS-style ``conversation`` records, ShareGPT,
chat ``messages``, Alpaca; or Parquet, a saved Hugging Face dataset
directory, ``hf://OWNER/NAME``, or ``-`` for stdin. Fields that cannot be
inferred are named with ``--id-field`` / ``--text-field``. Records are
checked the way the stream checks them; bad ones are reported with their
line (or row) number and skipped. Records in our format are published
unchanged, others converted to it; each is keyed by its id.
"""

from __future__ import annotations

import argparse

from arena_stream.cli.arguments import INPUT_HELP, add_input_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help=f"prompts: {INPUT_HELP}")
    parser.add_argument("--config", required=True, help="TOML configuration file")
    add_input_arguments(parser)


def main(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from arena_stream.cli.arguments import input_options
    from arena_stream.config import load
    from arena_stream.datasets.prompts import publish_prompts, read_prompts

    config = load(args.config)
    mapping, options = input_options(args)
    found = read_prompts(args.file, config.limits, mapping, options)
    for line, reason in found.bad:
        print(f"{args.file}:{line}: skipped: {reason}", file=sys.stderr)
    for note in found.notes(args.file):
        print(note, file=sys.stderr)
    sent = asyncio.run(publish_prompts(config, found.good))
    print(f"published {sent} prompts, skipped {len(found.bad)} bad records")
    return 0 if not found.bad else 1
