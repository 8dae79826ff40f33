"""Compare two leaderboards, or two judges, as Arena Learning validates WizardArena.

With --ours and --reference: two ``leaderboard --json`` or ``leaderboard --csv``
files (rows with model, rating, lower, upper, battles, rank). Over the models
both rank, it reports the Spearman correlation, agreement with 95% CI,
separability with 95% CI and their average.

With --config and --rejudged NAME: the live judge against a second judge that
``rejudge --name NAME`` ran on the same battles: how often they name the same
winner (and Cohen's kappa), and the same measures on the two leaderboards
fitted from the battles both judged (the live judge is the reference).
"""

from __future__ import annotations

import argparse
import json
import sys

from arena_stream.cli.arguments import time_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    files = parser.add_argument_group("two leaderboards")
    files.add_argument("--ours", help="our leaderboard, JSON or CSV")
    files.add_argument("--reference",
                       help="the reference leaderboard (e.g. human arena), JSON or CSV")
    judges = parser.add_argument_group("two judges")
    judges.add_argument("--config", help="the arena's TOML configuration")
    judges.add_argument("--rejudged", metavar="NAME",
                        help="the second judge's run (`rejudge --name NAME`)")
    judges.add_argument("--from", dest="from_time", type=time_arg, metavar="T",
                        help="first live judgment time (ISO-8601 or unix seconds)")
    judges.add_argument("--to", dest="to_time", type=time_arg, metavar="T",
                        help="last live judgment time (ISO-8601 or unix seconds)")
    parser.add_argument("--json", action="store_true", help="print the measures as JSON")


def _judges(args: argparse.Namespace) -> int:
    from arena_stream.config import ConfigError, load
    from arena_stream.kafka.replay import read_judgments
    from arena_stream.kafka.topics import Topics
    from arena_stream.ratings.judge_agreement import compare_judges, render_comparison

    try:
        config = load(args.config)
        topic = Topics(config.broker, config.app_id).rejudged(args.rejudged)
        other = read_judgments(config, key=topic)
    except (ConfigError, ValueError) as exc:
        print(f"arena-stream consistency: error: {exc}", file=sys.stderr)
        return 2
    except KeyError:
        print(f"arena-stream consistency: error: no re-judged battles under "
              f"{args.rejudged!r} (topic {topic} does not exist; run `rejudge` first)",
              file=sys.stderr)
        return 2
    live = read_judgments(config, from_time=args.from_time, to_time=args.to_time)
    result = compare_judges(live, other)
    if result.battles.battles == 0:
        print("arena-stream consistency: warning: no battle was judged by both judges",
              file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        second = other[0].judge_model if other else args.rejudged
        print(render_comparison(result, live=config.judge.model, other=second))
    return 0


def main(args: argparse.Namespace) -> int:
    if args.rejudged or args.config:
        if not (args.rejudged and args.config) or args.ours or args.reference:
            print("arena-stream consistency: error: give --config with --rejudged NAME, or "
                  "--ours with --reference", file=sys.stderr)
            return 2
        return _judges(args)
    if not (args.ours and args.reference):
        print("arena-stream consistency: error: give --ours and --reference (two leaderboard "
              "files), or --config with --rejudged NAME", file=sys.stderr)
        return 2
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
