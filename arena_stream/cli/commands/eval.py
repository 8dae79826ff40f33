"""Offline evaluation: every player (and every trained target version) on a test set.

All pairs are judged with the stream's two-game judge; the battles are
written in the LMArena format (``--out``, readable by ``arena-stream
leaderboard --battles``) and the Bradley-Terry leaderboard is printed.
Answers and verdicts are cached (``--cache-dir``, one SQLite file keyed on
everything that changes an answer: model, backend, server, decoding settings,
system prompt, template, prompt content), so adding a model costs only its own
answers and battles, and changing a model's settings asks it again.
"""

from __future__ import annotations

import argparse

from arena_stream.cli.arguments import INPUT_HELP, add_input_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--testset", required=True,
                        help=f"test set (testset build output, or any prompts: {INPUT_HELP})")
    add_input_arguments(parser)
    parser.add_argument("--config", help="TOML configuration (default: the embedded default)")
    parser.add_argument("--out", default="eval-battles.jsonl", help="battles file to write")
    parser.add_argument("--cache-dir", default=".arena-stream/eval-cache",
                        help="answer and verdict cache directory (its cache.sqlite; "
                        "'' for none)")
    parser.add_argument("--no-versions", action="store_true",
                        help="leave out the target's trained versions")
    parser.add_argument("--bootstrap", type=int, default=100, help="bootstrap rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the leaderboard as JSON")


def main(args: argparse.Namespace) -> int:
    import asyncio
    import sys
    from pathlib import Path

    import msgspec

    from arena_stream.cli.arguments import input_options
    from arena_stream.config import load
    from arena_stream.offline.evaluate import evaluate, read_testset, write_battles
    from arena_stream.ratings.bradley_terry import leaderboard, load_battles

    config = load(args.config)
    prompts = read_testset(args.testset, config, *input_options(args))
    if not prompts:
        print("the test set has no usable prompts", file=sys.stderr)
        return 1
    cache = Path(args.cache_dir) if args.cache_dir else None
    rows = asyncio.run(evaluate(config, prompts, cache_dir=cache,
                                include_versions=not args.no_versions))
    if not rows:
        print("no battle could be judged", file=sys.stderr)
        return 1
    write_battles(rows, args.out)
    board = leaderboard(load_battles(args.out), method="bootstrap", rounds=args.bootstrap,
                        seed=args.seed)
    if args.json:
        print(msgspec.json.encode(board).decode())
    else:
        print(f"{len(rows)} battles on {len(prompts)} prompts -> {args.out}")
        for r in board:
            print(f"{r.rank:>3}. {r.model:<22} {r.rating:8.1f}  [{r.lower:8.1f}, {r.upper:8.1f}]"
                  f"  n={r.battles}")
    return 0
