"""Compare our leaderboard with a reference one, as Arena Learning validates WizardArena.

Both files are ``leaderboard --json`` output (a JSON list of rows with model,
rating, lower, upper, battles, rank). Over the models both rank, it reports the
Spearman correlation, agreement with 95% CI, separability with 95% CI and
their average.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ours", required=True, help="our leaderboard, JSON")
    parser.add_argument("--reference", required=True,
                        help="the reference leaderboard (e.g. human arena), JSON")
    parser.add_argument("--json", action="store_true", help="print the measures as JSON")


def main(args: argparse.Namespace) -> int:
    from arena_stream.offline.consistency import LeaderboardError, compare, load_leaderboard, render

    try:
        ours = load_leaderboard(args.ours)
        reference = load_leaderboard(args.reference)
    except LeaderboardError as exc:
        print(f"arena-stream consistency: error: {exc}", file=sys.stderr)
        return 2
    result = compare(ours, reference)
    if len(result.models) < 2:
        print(f"arena-stream consistency: warning: only {len(result.models)} model(s) in common; "
              "the measures need at least 2", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(render(result))
    return 0
