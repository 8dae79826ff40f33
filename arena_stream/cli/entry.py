"""The ``arena-stream`` command line.

Each subcommand lives in its own module under :mod:`arena_stream.cli.commands`
with ``add_arguments(parser)`` and ``main(args) -> int``. Those modules import
only the standard library at the top, so ``arena-stream --help`` stays fast;
the heavy imports (faust, torch, polars) happen inside ``main``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, str] = {
    "run": "the whole flywheel in one process (embedded default without --config)",
    "broker": "the embedded Kafka-compatible broker, in the foreground",
    "worker": "the stream agents (run one per partition)",
    "publish": "publish prompts from a JSONL file",
    "ratings": "current Elo ratings, or a live feed with --follow",
    "trainer": "consume training jobs and train new target versions",
    "leaderboard": "Bradley-Terry leaderboard with 95%% intervals",
    "replay": "read a topic back for a time or offset window",
    "audit": "recompute every rating from the judgments log and compare",
    "deadletter": "list dead-lettered messages, re-publish fixed ones",
    "testset": "build a WizardArena-style offline test set",
    "decontaminate": "remove test-set prompts and near duplicates from training prompts",
    "eval": "offline evaluation of every player on a test set",
    "consistency": "compare two leaderboards (Spearman, CI agreement, separability)",
    "rejudge": "re-judge past battles with a second judge, into a topic of their own",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arena-stream",
        description="Arena Learning as a streaming flywheel on Kafka.",
    )
    parser.add_argument(
        "--log-level", default=None,
        help="debug, info, warning, error (default: info; warning for run, whose display "
        "shows the progress)",
    )
    parser.add_argument("--log-json", action="store_true", help="log JSON lines instead of text")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"arena_stream.cli.commands.{name}")
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from arena_stream.logging import configure

    level = args.log_level or ("warning" if args.command == "run" else "info")
    configure(level=level, json=args.log_json)
    module = importlib.import_module(f"arena_stream.cli.commands.{args.command}")
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear one-line error instead of a traceback for user errors
        from arena_stream.config import ConfigError

        if isinstance(exc, (ConfigError, FileNotFoundError)):
            print(f"arena-stream {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
