"""Printing standings for people (rich tables) and for programs (JSON)."""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from arena_stream.ratings.standings import Standing


def ratings_table(rows: list[Standing], title: str = "Elo ratings") -> Any:
    from rich.table import Table

    table = Table(title=title)
    for col, justify in (("rank", "right"), ("model", "left"), ("elo", "right"),
                         ("battles", "right"), ("W-L-T", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(str(r.rank), r.model, f"{r.rating:.1f}", str(r.battles),
                      f"{r.wins}-{r.losses}-{r.ties}")
    return table


def print_ratings(rows: list[Standing], *, as_json: bool = False) -> None:
    if as_json:
        sys.stdout.write(msgspec.json.encode(rows).decode() + "\n")
        return
    from rich.console import Console

    Console().print(ratings_table(rows))
