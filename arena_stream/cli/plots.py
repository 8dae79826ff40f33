"""Leaderboard and rating-history pictures (matplotlib, Agg backend).

matplotlib is an optional extra (``arena-stream[plot]``) and slow to import,
so it is imported inside each function: the stream and the CLI never pay for
it unless a picture is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import polars as pl

    from arena_stream.schemas.events import LeaderboardRow


def _pyplot() -> Any:
    """pyplot on the Agg backend: plots are written to files, never shown."""
    from arena_stream.cli.errors import require_module

    require_module("matplotlib", what="plots", extra="plot")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_leaderboard(
    rows: Sequence[LeaderboardRow], path: str | Path, *, title: str | None = None
) -> Path:
    """Horizontal bars of each model's interval with its rating, best at the top.

    Intervals, not just points, so that a reader sees at a glance which
    differences the data supports.
    """
    plt = _pyplot()
    ordered = sorted(rows, key=lambda r: r.rating)
    names = [f"{r.rank}. {r.model}" + (" *" if r.provisional else "") for r in ordered]
    height = max(2.5, 0.35 * len(ordered) + 1.2)
    fig, ax = plt.subplots(figsize=(8, height))
    # provisional ratings (few battles, or a side only the weak prior bounds) in grey
    for provisional, colour in ((False, "tab:blue"), (True, "tab:gray")):
        idx = [i for i, r in enumerate(ordered) if r.provisional == provisional]
        if not idx:
            continue
        picked = [ordered[i] for i in idx]
        err = [
            [max(r.rating - r.lower, 0.0) for r in picked],
            [max(r.upper - r.rating, 0.0) for r in picked],
        ]
        ax.errorbar([r.rating for r in picked], idx, xerr=err, fmt="o", capsize=3,
                    color=colour, label="provisional *" if provisional else None)
    if any(r.provisional for r in ordered):
        ax.legend(loc="lower right", fontsize="small")
    ax.set_yticks(range(len(ordered)), names)
    ax.set_xlabel("rating (Bradley-Terry, Elo scale) with 95% interval")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or "Leaderboard")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_history(
    history: pl.DataFrame,
    path: str | Path,
    *,
    x: Literal["battles", "time"] = "battles",
    title: str | None = None,
) -> Path:
    """One line per model (e.g. each ``target@vN``) with its interval as a band.

    ``history`` is :func:`arena_stream.bradley_terry.rating_history`'s frame.
    """
    plt = _pyplot()
    if x == "time" and history["ts"].null_count() == history.height:
        raise ValueError("the battles carry no time stamps; use x='battles'")
    fig, ax = plt.subplots(figsize=(9, 5))
    models = history["model"].unique(maintain_order=True).to_list()
    for model in models:
        part = history.filter(history["model"] == model)
        if x == "time":
            xs: list[Any] = [datetime.fromtimestamp(t, tz=UTC) for t in part["ts"].to_list()]
        else:
            xs = part["battles"].to_list()
        (line,) = ax.plot(xs, part["rating"].to_list(), marker=".", label=model)
        ax.fill_between(
            xs, part["lower"].to_list(), part["upper"].to_list(), alpha=0.15, color=line.get_color()
        )
    ax.set_xlabel("time (UTC)" if x == "time" else "battles so far")
    ax.set_ylabel("rating with 95% interval")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    ax.set_title(title or "Rating history")
    if x == "time":
        fig.autofmt_xdate()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
