"""The ``arena-stream`` command line.

Each subcommand lives in its own module under :mod:`arena_stream.cli.commands`
with ``add_arguments(parser)`` and ``main(args) -> int``. Those modules import
only the standard library at the top, so ``arena-stream --help`` stays fast;
the heavy imports (faust, torch, polars) happen inside ``main``.

A user mistake or an unreachable service ends a command with one line on
stderr and exit status 2 (:mod:`arena_stream.cli.errors`); ``--log-level
debug`` adds the traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, str] = {
    "run": "the whole flywheel in one process (embedded default without --config)",
    "check": "check a config and what it points at: secrets, files, broker, models",
    "broker": "the embedded Kafka-compatible broker, in the foreground",
    "worker": "the stream agents (run one per partition)",
    "publish": "publish prompts from a JSONL file",
    "ratings": "current Elo ratings, or a live feed with --follow",
    "trainer": "consume training jobs and train new target versions",
    "leaderboard": "Bradley-Terry leaderboard with 95%% intervals",
    "replay": "read a topic back for a time or offset window",
    "export": "SFT, DPO, battles or judgments as Parquet, JSONL or a Hugging Face dataset",
    "audit": "recompute every rating from the judgments log and compare",
    "deadletter": "list dead-lettered messages, re-publish fixed ones",
    "testset": "build a WizardArena-style offline test set",
    "decontaminate": "remove test-set prompts and near duplicates from training prompts",
    "eval": "offline evaluation of every player on a test set",
    "consistency": "compare two leaderboards (Spearman, CI agreement, separability)",
    "rejudge": "re-judge past battles with a second judge, into a topic of their own",
    "versions": "the target's versions: lineage, held-out rating and pass rate, per-round numbers",
    "costs": "tokens and cost by model and judge, and what is left of the budget",
}

LOG_LEVELS = ("debug", "info", "warning", "error")
# Commands whose own output says what is going on: logs below this level would only
# repeat it (run's live display; check's one line per check).
DEFAULT_LEVEL = {"run": "warning", "check": "error"}
EXIT_USER_ERROR = 2


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("arena-stream")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _add_global_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--log-level`` and ``--log-json``, accepted before and after the subcommand.

    Below the top level the defaults are ``SUPPRESS``: a subcommand that was
    not given the flag leaves the value set before it alone.
    """
    parser.add_argument(
        "--log-level", type=str.lower, choices=LOG_LEVELS, metavar="LEVEL",
        default=None if top else argparse.SUPPRESS,
        help=f"{', '.join(LOG_LEVELS)} (default: info; warning for run, whose display "
        "shows the progress; error for check)",
    )
    parser.add_argument("--log-json", action="store_true",
                        default=False if top else argparse.SUPPRESS,
                        help="log JSON lines instead of text")


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below ``parser`` (subcommands, and actions such as ``testset build``)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found.extend([child, *_subparsers(child)])
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arena-stream",
        description="Arena Learning as a streaming flywheel on Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"arena-stream {version()}")
    _add_global_flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"arena_stream.cli.commands.{name}")
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(p)
    for child in _subparsers(parser):
        _add_global_flags(child, top=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from arena_stream.logging import configure

    level = args.log_level or DEFAULT_LEVEL.get(args.command, "info")
    configure(level=level, json=args.log_json)
    from arena_stream import progress_bars

    module = importlib.import_module(f"arena_stream.cli.commands.{args.command}")
    try:
        with progress_bars.disabled_if(args.log_json):  # a program reads that stderr
            return int(module.main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from arena_stream.cli.errors import explain

        line = explain(exc)
        if line is None:
            raise  # a bug: the traceback is what a report needs
        if level == "debug":
            import traceback

            traceback.print_exc(file=sys.stderr)
        for part in line.splitlines():  # several problems (a config's): one line each
            print(f"arena-stream {args.command}: error: {part.strip()}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
