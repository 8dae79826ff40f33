"""Bradley-Terry leaderboard with 95% intervals, from a battles file or the judgments topic.

Ratings are on the Elo scale (400, base 10), centred on a mean of 1000 unless
--anchor pins one model. Rank is LMArena's: 1 + the number of models that are
better beyond doubt (their lower bound is above this model's upper bound).
A rating that rests on too few battles, or that the data do not bound (a model
that never lost or never won), is marked provisional, with the reason; its
interval is a profile-likelihood one (see arena_stream.ratings.bradley_terry).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Any

from arena_stream.cli.arguments import time_arg


def parse_anchor(text: str) -> tuple[str, float]:
    """``MODEL=RATING``; split at the last ``=`` so model names may contain one."""
    model, sep, value = text.rpartition("=")
    try:
        rating = float(value)
    except ValueError:
        rating = math.nan
    if not sep or not model or not math.isfinite(rating):
        raise argparse.ArgumentTypeError(f"expected MODEL=RATING, got {text!r}")
    return model, rating


def _positive(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("need at least 2 bootstrap rounds")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0.0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError("must be a finite number, 0 or more")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--battles", metavar="FILE",
                        help="LMArena battles: JSON lines, a JSON array (LMArena's published "
                        "file) or Parquet")
    source.add_argument("--config", metavar="FILE", help="read judgments from the Kafka topic")
    parser.add_argument("--from", dest="from_time", type=time_arg, metavar="T",
                        help="with --config: first judgment time (ISO-8601 or unix seconds)")
    parser.add_argument("--to", dest="to_time", type=time_arg, metavar="T",
                        help="with --config: last judgment time (ISO-8601 or unix seconds)")
    parser.add_argument("--rejudged", metavar="NAME",
                        help="with --config: the verdicts of a second judge (`rejudge --name "
                             "NAME`) instead of the live judgments")
    parser.add_argument("--method", choices=("bootstrap", "sandwich"), default="bootstrap",
                        help="interval method (default: bootstrap)")
    parser.add_argument("--bootstrap", type=_positive, default=100, metavar="N",
                        help="bootstrap rounds (default: 100)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument("--anchor", type=parse_anchor, metavar="MODEL=RATING",
                        help="pin one model's rating, e.g. llama-2-70b-chat=1100")
    parser.add_argument("--min-battles", type=_non_negative, default=None, metavar="N",
                        help="fewer battles than this make a rating provisional (default: 30)")
    parser.add_argument("--prior-ties", type=_non_negative_float, default=None, metavar="K",
                        help="virtual ties of each model against an average one, the weak prior "
                             "that keeps ratings finite (default: 1; 0 is plain maximum "
                             "likelihood)")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    fmt.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    ties = parser.add_argument_group("ties")
    ties.add_argument("--exclude-ties", action="store_true",
                      help="drop tied battles (tie, tie (bothbad)) before fitting")
    ties.add_argument("--tie-model", choices=("half", "davidson"), default="half",
                      help="half: a tie is half a win (LMArena's default); davidson: ties as a "
                           "third outcome with an estimated tie propensity")
    views = parser.add_argument_group("categories and hard prompts")
    views.add_argument("--category", metavar="NAME",
                       help="only battles on prompts of this category")
    views.add_argument("--by-category", action="store_true",
                       help="one leaderboard per category (and over the hard prompts when the "
                            "battles know their difficulty), side by side")
    views.add_argument("--hard", action="store_true",
                       help="only battles on hard prompts (test-set difficulty, or LMArena's "
                            "hard-prompt criteria)")
    views.add_argument("--hard-threshold", type=float, default=None, metavar="D",
                       help="difficulty (0-10) from which a prompt is hard (default: 7)")
    views.add_argument("--testset", metavar="FILE",
                       help="a `testset build` JSONL whose categories and difficulties are "
                            "joined to the battles on prompt_id")
    style = parser.add_argument_group("style control (LMArena's contextual Bradley-Terry)")
    style.add_argument("--style-control", action="store_true",
                       help="ratings with answer length and markdown (headers, bold, lists) "
                            "controlled for, beside the raw ones, and each style coefficient")
    style.add_argument("--style-penalty", type=_non_negative_float, default=None, metavar="R",
                       help="L2 penalty on the style coefficients, on the mean loss "
                            "(default: 1.0, arena-rank's)")
    style.add_argument("--no-pair-weights", action="store_true",
                       help="weigh every battle alike (default: 1 / max(pair's battles, 50), "
                            "as arena-rank)")
    parser.add_argument("--plot", metavar="FILE.png", help="write the leaderboard with intervals")
    parser.add_argument("--history-plot", metavar="FILE.png",
                        help="write the rating over time of a model's versions (NAME@vN)")
    parser.add_argument("--history-model", metavar="NAME",
                        help="whose versions to plot (default: the name with most versions)")
    parser.add_argument("--history-x", choices=("battles", "time"), default="battles",
                        help="x axis of --history-plot (default: battles)")
    parser.add_argument("--checkpoints", type=int, default=20,
                        help="refits along the history (default: 20)")


_VERSION = re.compile(r"^(?P<name>.+)@v(?P<version>\d+)$")


def versions(models: list[str], name: str | None) -> list[str]:
    """``name@vN`` models sorted by N; without a name, the name with most versions."""
    found: dict[str, list[tuple[int, str]]] = {}
    for model in models:
        m = _VERSION.match(model)
        if m:
            found.setdefault(m["name"], []).append((int(m["version"]), model))
    if name is None:
        if not found:
            return []
        name = max(sorted(found), key=lambda k: len(found[k]))
    return [model for _, model in sorted(found.get(name, []))]


def _load(args: argparse.Namespace) -> Any:
    from arena_stream.ratings import bradley_terry as bt
    from arena_stream.ratings.categories import PROMPT_COLUMNS

    style = bool(getattr(args, "style_control", False))
    if args.battles:
        if args.from_time is not None or args.to_time is not None or args.rejudged:
            raise bt.BattleDataError("--from/--to/--rejudged apply to --config; filter the "
                                     "file instead")
        keep: list[str] = list(PROMPT_COLUMNS)
        if style:
            from arena_stream.ratings.style_control import COUNT_NAMES, TEXT_COLUMNS

            keep += ["conv_metadata", *COUNT_NAMES, *(c for pair in TEXT_COLUMNS for c in pair)]
        return bt.load_battles(args.battles, keep=keep)
    from arena_stream.config import load
    from arena_stream.kafka.replay import read_judgments

    config = load(args.config)
    key = "judgments"
    if getattr(args, "rejudged", None):
        from arena_stream.kafka.topics import Topics

        key = Topics(config.broker, config.app_id).rejudged(args.rejudged)
    try:
        judgments = read_judgments(config, from_time=args.from_time, to_time=args.to_time,
                                   key=key)
    except KeyError:
        raise bt.BattleDataError(f"topic {key} does not exist (run `rejudge --name "
                                 f"{args.rejudged}` first)") from None
    return bt.battles_from_judgments(judgments, style=style)


def _select(args: argparse.Namespace, battles: Any) -> Any:
    """``--exclude-ties``, ``--testset`` joined in, then ``--category`` and ``--hard``."""
    import polars as pl

    from arena_stream.ratings import categories as cat

    if args.exclude_ties:
        if args.tie_model != "half":
            raise cat.BattleDataError("--exclude-ties leaves no ties for --tie-model to model")
        battles = battles.filter(pl.col("winner").is_in(["model_a", "model_b"]))
    if args.testset:
        battles = cat.attach_prompt_info(battles, cat.read_prompt_info(args.testset))
    if args.category is not None:
        battles = cat.only_category(battles, args.category)
    if args.hard:
        threshold = cat.HARD_DIFFICULTY if args.hard_threshold is None else args.hard_threshold
        battles = battles.filter(cat.hard_mask(battles, threshold))
        if battles.height == 0:
            raise cat.BattleDataError("no battles on hard prompts in the selection")
    return battles


def _by_category_main(args: argparse.Namespace, battles: Any) -> int:
    """``--by-category``: every category's leaderboard side by side."""
    from arena_stream.cli.leaderboard_views import print_categories
    from arena_stream.ratings import bradley_terry as bt
    from arena_stream.ratings import categories as cat

    threshold = cat.HARD_DIFFICULTY if args.hard_threshold is None else args.hard_threshold

    def fit_rows(part: Any) -> list[Any]:
        return bt.fit(part, method=args.method, rounds=args.bootstrap, seed=args.seed,
                      anchor=args.anchor, tie_model=args.tie_model,
                      **_prior_options(args)).rows()

    try:
        if "category" not in battles.columns or not cat.categories(battles):
            raise bt.BattleDataError("these battles have no category (a 'category' column, "
                                     "the judgments' prompt category, or --testset)")
        boards = cat.by_category(battles, fit_rows, hard_threshold=threshold)
    except (bt.BattleDataError, ValueError) as exc:
        print(f"arena-stream leaderboard: error: {exc}", file=sys.stderr)
        return 2
    print_categories(boards, fmt="json" if args.json else "csv" if args.csv else "table")
    return 0


def _style_main(args: argparse.Namespace, battles: Any) -> int:
    """``--style-control``: fit, print, and plot the style-controlled ratings."""
    from arena_stream.ratings import bradley_terry as bt
    from arena_stream.ratings import style_control as sc

    penalty = sc.REG if args.style_penalty is None else args.style_penalty
    try:
        counted = sc.style_columns(battles, args.battles or "judgments")
        result = sc.fit_style(counted, reg=penalty, reweight=not args.no_pair_weights,
                              **_prior_options(args))
    except (bt.BattleDataError, ValueError) as exc:
        print(f"arena-stream leaderboard: error: {exc}", file=sys.stderr)
        return 2
    from arena_stream.cli.leaderboard_views import print_style

    fmt = "json" if args.json else "csv" if args.csv else "table"
    print_style(result, battles=battles.height, penalty=penalty,
                pair_weights=not args.no_pair_weights, fmt=fmt)
    if args.plot:
        from arena_stream.cli.plots import plot_leaderboard

        rows = result.rows()
        plot_leaderboard(rows, args.plot,
                         title=f"Style-controlled leaderboard ({battles.height} battles)")
    return 0


def _interval(r: Any) -> str:
    """``lower .. upper``, with ``open`` on a side the data do not bound."""
    lower = "open" if r.open_side in ("lower", "both") else f"{r.lower:.1f}"
    upper = "open" if r.open_side in ("upper", "both") else f"{r.upper:.1f}"
    return f"{lower} .. {upper}"


def _print_table(rows: list[Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col, justify in (("rank", "right"), ("model", "left"), ("rating", "right"),
                         ("95% interval", "right"), ("battles", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        mark = " *" if r.provisional else ""
        table.add_row(str(r.rank), r.model + mark, f"{r.rating:.1f}", _interval(r),
                      str(r.battles))
    console = Console(file=sys.stdout)
    console.print(table)
    flagged = [r for r in rows if r.provisional]
    if flagged:
        console.print("* provisional (profile-likelihood interval; 'open': only the weak prior "
                      "bounds that side):", markup=False)
        for r in flagged:
            console.print(f"  {r.model}: {r.note}", markup=False, highlight=False)


def _prior_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--min-battles`` / ``--prior-ties`` as keyword arguments, only when given."""
    out: dict[str, Any] = {}
    if args.min_battles is not None:
        out["min_battles"] = args.min_battles
    if args.prior_ties is not None:
        out["prior_ties"] = args.prior_ties
    return out


def main(args: argparse.Namespace) -> int:
    import csv
    import json

    import msgspec

    from arena_stream.ratings import bradley_terry as bt

    if args.plot or args.history_plot:  # before the fit, not after minutes of bootstrap
        from arena_stream.cli.errors import require_module

        require_module("matplotlib", what="--plot and --history-plot", extra="plot")
    try:
        battles = _select(args, _load(args))
        if battles.height == 0:
            raise bt.BattleDataError("no battles in the selection")
        if args.by_category:
            if args.style_control or args.plot or args.history_plot:
                raise bt.BattleDataError("--by-category prints tables only; use --category NAME "
                                         "for one category's plots or style control")
            return _by_category_main(args, battles)
        if args.style_control:
            if args.anchor or args.history_plot or args.tie_model != "half":
                raise bt.BattleDataError("--style-control does not take --anchor, "
                                         "--history-plot or --tie-model (LMArena's contextual "
                                         "model counts a tie as half a win)")
            return _style_main(args, battles)
        ratings = bt.fit(battles, method=args.method, rounds=args.bootstrap, seed=args.seed,
                         anchor=args.anchor, tie_model=args.tie_model, **_prior_options(args))
    except (bt.BattleDataError, ValueError, FileNotFoundError) as exc:
        print(f"arena-stream leaderboard: error: {exc}", file=sys.stderr)
        return 2
    rows = ratings.rows()
    if ratings.unbounded:
        print(f"arena-stream leaderboard: warning: the data do not bound the rating of "
              f"{', '.join(ratings.unbounded)} (never lost or never won); only the weak prior "
              "keeps it finite", file=sys.stderr)

    if args.json:
        listed = [msgspec.to_builtins(r) for r in rows]
        # Davidson's fit has a tie parameter too: then an object, {"tie_model", "ties", "rows"}
        out: Any = listed if ratings.ties is None else {
            "tie_model": ratings.tie_model, "ties": ratings.ties, "rows": listed}
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["rank", "model", "rating", "lower", "upper", "battles", "provisional",
                         "open_side", "note"])
        for r in rows:
            writer.writerow([r.rank, r.model, f"{r.rating:.2f}", f"{r.lower:.2f}",
                             f"{r.upper:.2f}", r.battles, int(r.provisional), r.open_side,
                             r.note])
    else:
        what = f"{args.bootstrap} bootstrap rounds" if args.method == "bootstrap" else "sandwich"
        if args.tie_model == "davidson":
            what += ", Davidson ties"
        elif args.exclude_ties:
            what += ", ties excluded"
        _print_table(rows, f"Bradley-Terry leaderboard, {battles.height} battles, {what}")
        if ratings.ties is not None:
            t = ratings.ties
            print(f"tie propensity nu = {t['nu']:.3f} [{t['nu_lower']:.3f} .. "
                  f"{t['nu_upper']:.3f}]; two equal models tie with probability "
                  f"{t['tie_probability_between_equals']:.1%}")

    if args.plot:
        from arena_stream.cli.plots import plot_leaderboard

        plot_leaderboard(rows, args.plot, title=f"Leaderboard ({battles.height} battles)")
    if args.history_plot:
        from arena_stream.cli.plots import plot_history

        chosen = versions(ratings.models, args.history_model)
        if not chosen:
            who = args.history_model or "any model"
            print(f"arena-stream leaderboard: error: no versions NAME@vN of {who} to plot",
                  file=sys.stderr)
            return 2
        history = bt.rating_history(battles, chosen, checkpoints=args.checkpoints,
                                    anchor=args.anchor)
        try:
            plot_history(history, args.history_plot, x=args.history_x,
                         title=f"Rating history of {chosen[0].rsplit('@', 1)[0]}")
        except ValueError as exc:
            print(f"arena-stream leaderboard: error: {exc}", file=sys.stderr)
            return 2
    return 0
