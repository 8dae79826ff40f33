"""Arguments shared by several commands: times, and how to read a prompt source."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any


def time_arg(text: str) -> float:
    """ISO-8601 (naive means UTC; a trailing ``Z`` is UTC) or unix seconds -> unix seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use ISO-8601 like 2024-07-01T12:00:00Z or unix seconds)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


INPUT_HELP = ("JSON lines or a JSON array (ours, MT-bench, arena-hard, LMSYS, ShareGPT, chat "
              "messages, Alpaca), Parquet, a saved Hugging Face dataset directory, "
              "hf://OWNER/NAME, or - for stdin")


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """How to read a prompt source whose fields or splits cannot be inferred."""
    parser.add_argument("--id-field", metavar="FIELD",
                        help="the field holding each prompt's id (default: inferred: id, "
                        "question_id, uid, ...; none: derived from the content)")
    parser.add_argument("--text-field", metavar="FIELD",
                        help="the field holding the prompt: a string, user turns or chat "
                        "messages (default: inferred: messages, conversation, turns, prompt, ...)")
    parser.add_argument("--split", help="Hugging Face dataset split (default: train, or the only)")
    parser.add_argument("--subset", help="Hugging Face dataset configuration (hf:// sources)")


def input_options(args: argparse.Namespace) -> tuple[Any, Any]:
    """(FieldMapping, SourceOptions) from :func:`add_input_arguments`' flags."""
    from arena_stream.datasets.formats import FieldMapping
    from arena_stream.datasets.sources import SourceOptions

    return (FieldMapping(id_field=args.id_field, text_field=args.text_field),
            SourceOptions(split=args.split, subset=args.subset))
