"""How well does our offline leaderboard agree with a reference (e.g. the human arena)?

Arena Learning justifies WizardArena by its consistency with the LMSYS
Chatbot Arena, measured as in Arena-Hard (Li et al. 2024) on the models both
boards rank:

* **Spearman**: rank correlation of the two boards' ratings. It ignores
  uncertainty: two models a hair apart count as fully ordered.
* **Agreement with 95% CI**: over the pairs the *reference* separates
  confidently (intervals do not overlap), +1 when ours separates them the same
  way, -1 when ours confidently says the opposite, 0 when ours cannot tell;
  averaged. It rewards being right when it matters and punishes confident
  errors, which Spearman cannot see.
* **Separability with 95% CI**: the share of all pairs our intervals separate.
  A board that agrees only because every interval is huge is useless; this
  shows it.
* **Average**: the mean of the three, the paper's single summary number
  (measures that are undefined, e.g. no separated reference pair, are left out
  and ``average`` is the mean of the rest).

Intervals are closed: two intervals that touch overlap, i.e. a pair is
separated only when one lower bound is strictly above the other upper bound.
Spearman is computed from the ratings over the common models (average ranks
for ties), not from the boards' ``rank`` fields, which count models the other
board does not have.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from arena_stream.schemas.events import LeaderboardRow


class LeaderboardError(ValueError):
    """A leaderboard file that cannot be read."""


def load_leaderboard(path: str | os.PathLike[str]) -> list[LeaderboardRow]:
    """Rows of ``leaderboard --json`` (a list, or an object with ``rows``) or ``--csv`` output."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise LeaderboardError(f"{path}: {exc.strerror or exc}") from None
    if text.lstrip()[:1] not in ("[", "{"):
        data: Any = _csv_rows(text, path)
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise LeaderboardError(f"{path}: {exc}") from None
    if isinstance(data, dict) and "rows" in data:
        data = data["rows"]
    try:
        rows = msgspec.convert(data, type=list[LeaderboardRow])
    except msgspec.ValidationError as exc:
        raise LeaderboardError(f"{path}: {exc}") from None
    names = [r.model for r in rows]
    if len(set(names)) != len(names):
        raise LeaderboardError(f"{path}: a model appears more than once")
    return rows


def _csv_rows(text: str, path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """``leaderboard --csv`` rows (rank, model, rating, lower, upper, battles) as JSON rows."""
    import csv

    reader = csv.DictReader(text.splitlines())
    wanted = ("rank", "model", "rating", "lower", "upper", "battles")
    missing = [c for c in wanted if c not in (reader.fieldnames or [])]
    if missing:
        raise LeaderboardError(f"{path}: neither JSON nor a leaderboard CSV (no column "
                               f"{', '.join(missing)}; expected {', '.join(wanted)})")
    rows = []
    for number, row in enumerate(reader, start=2):
        try:
            rows.append({"model": row["model"], "rank": int(row["rank"]),
                         "battles": int(row["battles"]),
                         **{c: float(row[c]) for c in ("rating", "lower", "upper")}})
        except (TypeError, ValueError) as exc:
            raise LeaderboardError(f"{path}:{number}: {exc}") from None
    return rows


def separated(a: LeaderboardRow, b: LeaderboardRow) -> int:
    """+1 when ``a``'s interval is wholly above ``b``'s, -1 when below, 0 when they overlap."""
    if a.lower > b.upper:
        return 1
    if b.lower > a.upper:
        return -1
    return 0


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1, dtype=np.float64)
    for value in np.unique(values):
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho (Pearson over average ranks); ``None`` below 2 items or if a side is flat."""
    if len(x) != len(y):
        raise ValueError("spearman needs two lists of the same length")
    if len(x) < 2:
        return None
    rx, ry = _ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64))
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denominator = float(np.sqrt((dx * dx).sum() * (dy * dy).sum()))
    if denominator == 0.0:
        return None
    return float((dx * dy).sum() / denominator)


@dataclass(frozen=True)
class Consistency:
    """The measures and the counts behind them."""

    models: list[str]  # common to both boards, in the reference's order
    only_ours: list[str]
    only_reference: list[str]
    pairs: int
    spearman: float | None
    agreement: float | None
    separability: float | None
    average: float | None
    reference_separated: int  # pairs the reference separates: agreement's denominator
    agree: int  # of those, ours separates the same way
    disagree: int  # ours separates them the other way
    undecided: int  # ours cannot separate them
    ours_separated: int  # pairs ours separates: separability's numerator

    def to_json(self) -> dict[str, Any]:
        return {
            "spearman": self.spearman, "agreement": self.agreement,
            "separability": self.separability, "average": self.average,
            "common_models": len(self.models), "pairs": self.pairs,
            "reference_separated_pairs": self.reference_separated, "agree": self.agree,
            "disagree": self.disagree, "undecided": self.undecided,
            "ours_separated_pairs": self.ours_separated,
            "models": self.models, "only_ours": self.only_ours,
            "only_reference": self.only_reference,
        }


def compare(ours: list[LeaderboardRow], reference: list[LeaderboardRow]) -> Consistency:
    """All measures over the models both boards rank."""
    mine = {r.model: r for r in ours}
    theirs = {r.model: r for r in reference}
    models = [r.model for r in reference if r.model in mine]
    rho = spearman([mine[m].rating for m in models], [theirs[m].rating for m in models])

    pairs = agree = disagree = undecided = ours_sep = 0
    for a, b in combinations(models, 2):
        pairs += 1
        ours_says = separated(mine[a], mine[b])
        ours_sep += ours_says != 0
        ref_says = separated(theirs[a], theirs[b])
        if ref_says == 0:
            continue
        if ours_says == ref_says:
            agree += 1
        elif ours_says == 0:
            undecided += 1
        else:
            disagree += 1
    ref_sep = agree + disagree + undecided
    agreement = (agree - disagree) / ref_sep if ref_sep else None
    separability = ours_sep / pairs if pairs else None
    defined = [v for v in (rho, agreement, separability) if v is not None]
    return Consistency(
        models=models,
        only_ours=sorted(set(mine) - set(theirs)),
        only_reference=sorted(set(theirs) - set(mine)),
        pairs=pairs, spearman=rho, agreement=agreement, separability=separability,
        average=sum(defined) / len(defined) if defined else None,
        reference_separated=ref_sep, agree=agree, disagree=disagree, undecided=undecided,
        ours_separated=ours_sep,
    )


def render(result: Consistency) -> str:
    """A short human-readable account."""

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    lines = [
        f"common models           {len(result.models)}  ({result.pairs} pairs)",
        f"spearman                {fmt(result.spearman)}",
        f"agreement (95% CI)      {fmt(result.agreement)}  over {result.reference_separated} "
        f"pairs the reference separates: {result.agree} agree, {result.disagree} disagree, "
        f"{result.undecided} undecided",
        f"separability (95% CI)   {fmt(result.separability)}  "
        f"({result.ours_separated}/{result.pairs} pairs)",
        f"average                 {fmt(result.average)}",
    ]
    if result.only_ours:
        lines.append(f"only in ours            {', '.join(result.only_ours)}")
    if result.only_reference:
        lines.append(f"only in reference       {', '.join(result.only_reference)}")
    return "\n".join(lines)
