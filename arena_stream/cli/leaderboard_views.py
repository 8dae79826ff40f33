"""Printed views of the leaderboard beyond the plain table: style control, categories.

Kept apart from the command module so that the command stays an argument
parser and a dispatcher; every view prints to stdout and returns nothing.
"""

from __future__ import annotations

import csv
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from arena_stream.ratings.categories import Board
    from arena_stream.ratings.style_control import StyleRatings


def _signed(change: int) -> str:
    return f"+{change}" if change > 0 else (str(change) if change < 0 else "=")


def print_style(result: StyleRatings, *, battles: int, penalty: float, pair_weights: bool,
                fmt: str) -> None:
    """Style-controlled ratings beside the raw ones, rank changes, and the coefficients."""
    rows = result.table()
    coefs = result.coefficients()
    if fmt == "json":
        json.dump({"battles": battles, "penalty": penalty, "pair_weights": pair_weights,
                   "ratings": rows, "coefficients": coefs}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        keys = list(rows[0]) if rows else []
        writer.writerow(keys)
        for r in rows:
            writer.writerow([f"{v:.2f}" if isinstance(v, float) else
                             int(v) if isinstance(v, bool) else v for v in r.values()])
        return
    from rich.console import Console
    from rich.table import Table

    from arena_stream.ratings.style import FEATURE_LABELS

    weights = "pairs weighted as arena-rank" if pair_weights else "every battle alike"
    table = Table(title=f"Style-controlled leaderboard, {battles} battles "
                        f"(penalty {penalty:g}, {weights})")
    for col in ("rank", "model", "rating", "95% interval", "raw", "raw rank", "change",
                "battles"):
        table.add_column(col, justify="left" if col == "model" else "right",
                         no_wrap=col != "model")
    for r in rows:
        mark = " *" if r["provisional"] else ""
        table.add_row(
            str(r["rank"]), f"{r['model']}{mark}", f"{r['rating']:.1f}",
            f"{r['lower']:.1f} .. {r['upper']:.1f}", f"{r['raw_rating']:.1f}",
            str(r["raw_rank"]), _signed(int(r["rank_change"])),  # type: ignore[call-overload]
            str(r["battles"]),
        )
    console = Console(file=sys.stdout, width=max(Console().width, 100))
    console.print(table)
    coef_table = Table(title="Style coefficients (log-odds per standard deviation of "
                             "(a - b) / (a + b); positive: more of it wins)")
    for col in ("feature", "coefficient", "95% interval", "rating points"):
        coef_table.add_column(col, justify="left" if col == "feature" else "right")
    for c in coefs:
        label = FEATURE_LABELS.get(str(c["feature"]), str(c["feature"]))
        if c["constant"]:
            coef_table.add_row(label, "-", "constant in these battles: not fitted", "-")
            continue
        coef_table.add_row(label, f"{c['coef']:+.4f}", f"{c['lower']:+.4f} .. {c['upper']:+.4f}",
                           f"{c['rating_points']:+.1f}")
    console.print(coef_table)
    console.print("rating: style-controlled; raw: the same fit without the style terms (same "
                  "battles and weights; its interval is in --json); change: raw rank - "
                  "style-controlled rank (+ moved up)", markup=False)
    if any(r["provisional"] for r in rows):
        console.print("* provisional: too few battles, or never lost / never won", markup=False)


def print_categories(boards: list[Board], *, fmt: str) -> None:
    """One column per view (overall, each category, hard prompts): rating and rank per model."""
    import msgspec

    if fmt == "json":
        json.dump([{"category": b.name, "battles": b.battles, "skipped": b.skipped,
                    "rows": [msgspec.to_builtins(r) for r in b.rows]} for b in boards],
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["category", "rank", "model", "rating", "lower", "upper", "battles",
                         "provisional"])
        for b in boards:
            for r in b.rows:
                writer.writerow([b.name, r.rank, r.model, f"{r.rating:.2f}", f"{r.lower:.2f}",
                                 f"{r.upper:.2f}", r.battles, int(r.provisional)])
        return
    from rich.console import Console
    from rich.table import Table

    order = [r.model for r in boards[0].rows]
    table = Table(title="Leaderboard by category: rating (rank); * provisional, - no battles")
    table.add_column("model")
    for b in boards:
        table.add_column(f"{b.name}\n{b.battles} battles", justify="right")
    cells = {b.name: {r.model: r for r in b.rows} for b in boards}
    for model in order:
        row = [model]
        for b in boards:
            r = cells[b.name].get(model)
            row.append("-" if r is None else
                       f"{r.rating:.0f} ({r.rank}){' *' if r.provisional else ''}")
        table.add_row(*row)
    console = Console(file=sys.stdout, width=max(Console().width, 100))
    console.print(table)
    for b in boards:
        if b.skipped:
            console.print(f"{b.name}: not fitted: {b.skipped}", markup=False)
