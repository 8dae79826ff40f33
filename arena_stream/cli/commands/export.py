"""Export what the flywheel produced as datasets TRL, ``datasets`` and LMArena tools load as is.

``--kind sft``: TRL conversational prompt/completion rows; ``--kind dpo``: TRL
conversational preference rows (``prompt``, ``chosen``, ``rejected`` as
message lists); ``--kind battles``: LMArena's battle format; ``--kind
judgments``: the judgment events. Each row keeps its ids, models and margin.
Read from the topic, all of it or a window of time or offsets (as
``replay``); a sample or judgment delivered twice is exported once.

The format follows ``--out``: ``.parquet``, ``.jsonl``, or a directory name
without a suffix for a Hugging Face dataset (``datasets.load_from_disk``), or
is set with ``--format``. For example::

    arena-stream export --config arena.toml --kind dpo --out dpo-pairs
    python -c "from datasets import load_from_disk; print(load_from_disk('dpo-pairs'))"
"""

from __future__ import annotations

import argparse

from arena_stream.cli.arguments import time_arg

FORMATS = ("parquet", "jsonl", "hf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="TOML configuration file")
    parser.add_argument("--kind", required=True,
                        help="what to export: a training kind (sft, dpo, ...), battles or "
                        "judgments")
    parser.add_argument("--out", required=True,
                        help="output: FILE.parquet, FILE.jsonl, or a DIRECTORY (HF dataset)")
    parser.add_argument("--format", choices=FORMATS,
                        help="output format (default: from --out)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-time", type=time_arg,
                       help="first record time (ISO-8601 or unix seconds)")
    start.add_argument("--from-offset", type=int, help="first offset, in every partition")
    parser.add_argument("--to-time", type=time_arg, help="last record time (inclusive)")
    parser.add_argument("--to-offset", type=int, help="last offset (inclusive), every partition")


def main(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from arena_stream.config import load
    from arena_stream.datasets.export import export

    config = load(args.config)
    window = {"from_time": args.from_time, "to_time": args.to_time,
              "from_offset": args.from_offset, "to_offset": args.to_offset}
    done = asyncio.run(export(config, args.kind, args.out, fmt=args.format, window=window))
    left_out = []
    if done.duplicates:
        left_out.append(f"{done.duplicates} delivered twice, kept once")
    if done.undecodable:
        left_out.append(f"{done.undecodable} not {args.kind} records, skipped")
    print(f"exported {done.rows} {args.kind} rows to {done.path} ({done.format})"
          + (f"; {'; '.join(left_out)}" if left_out else ""), file=sys.stderr)
    return 0
