"""Leaderboards per prompt category, and over the hard prompts only.

A single leaderboard hides that a model can lead on coding and trail on
writing. The category comes from the prompt (``Prompt.category``, carried by
every ``Judgment``; a ``category`` column in battles files). Hardness comes
from the test set's difficulty where present (``testset build`` rates prompts
0-10; 7 and up is "hard" in its rubric, and its ``subset``/``subsets`` mark
the hard half), or from LMArena's own hard-prompt label: a battle whose
``category_tag["criteria_v0.1"]`` meets at least 6 of its 7 criteria.

A battles file or the judgments topic usually knows a prompt only by id; the
test set that produced the prompts (``--testset``) supplies its category and
difficulty by joining on ``prompt_id``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from arena_stream.ratings.bradley_terry import BattleDataError
from arena_stream.schemas.events import LeaderboardRow

HARD_DIFFICULTY = 7.0  # testset's rubric: 7-8 hard, 9-10 very hard
LMARENA_HARD_CRITERIA = 6  # of the 7 booleans in category_tag["criteria_v0.1"]
# the columns a battles file may carry for these views (kept by the loader when present)
PROMPT_COLUMNS = ("prompt_id", "category", "difficulty", "subset", "subsets", "category_tag")


def read_prompt_info(path: str | Path) -> pl.DataFrame:
    """``prompt_id``, ``category``, ``difficulty``, ``hard_subset`` from a test set JSONL.

    Lines that are not JSON objects with an ``id`` are errors with their line
    number: a category view computed from half a test set would mislead.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"test set not found: {p}")
    ids: list[str] = []
    cats: list[str | None] = []
    diffs: list[float | None] = []
    hard: list[bool] = []
    with p.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BattleDataError(f"{p}:{number}: not JSON: {exc.msg}") from None
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise BattleDataError(f"{p}:{number}: a test set line needs a string 'id'")
            difficulty = item.get("difficulty")
            ids.append(item["id"])
            cats.append(item["category"] if isinstance(item.get("category"), str) else None)
            diffs.append(float(difficulty) if isinstance(difficulty, int | float) else None)
            subsets = item.get("subsets") or [item.get("subset")]
            hard.append("hard" in subsets)
    return pl.DataFrame(
        {"prompt_id": ids, "category": cats, "difficulty": diffs, "hard_subset": hard},
        schema={"prompt_id": pl.String, "category": pl.String, "difficulty": pl.Float64,
                "hard_subset": pl.Boolean},
    ).unique("prompt_id", keep="last", maintain_order=True)


def attach_prompt_info(battles: pl.DataFrame, info: pl.DataFrame) -> pl.DataFrame:
    """Battles with the test set's category/difficulty joined on ``prompt_id``.

    A battle's own non-null category wins over the test set's.
    """
    if "prompt_id" not in battles.columns:
        raise BattleDataError("the battles have no prompt_id to join the test set on")
    joined = battles.join(info, on="prompt_id", how="left", suffix="_testset")
    if "category_testset" in joined.columns:
        joined = joined.with_columns(
            pl.coalesce("category", "category_testset").alias("category")
        ).drop("category_testset")
    if "difficulty_testset" in joined.columns:
        joined = joined.with_columns(
            pl.coalesce("difficulty", "difficulty_testset").alias("difficulty")
        ).drop("difficulty_testset")
    return joined


def _subset_is_hard(battles: pl.DataFrame) -> pl.Expr | None:
    exprs: list[pl.Expr] = []
    if "hard_subset" in battles.columns:
        exprs.append(pl.col("hard_subset").fill_null(False))
    if "subsets" in battles.columns and isinstance(battles.schema["subsets"], pl.List):
        exprs.append(pl.col("subsets").list.contains("hard").fill_null(False))
    if "subset" in battles.columns:
        exprs.append((pl.col("subset") == "hard").fill_null(False))
    return pl.any_horizontal(exprs) if exprs else None


def _lmarena_hard(battles: pl.DataFrame) -> pl.Expr | None:
    """LMArena's label: at least 6 of the 7 ``criteria_v0.1`` booleans are true."""
    if "category_tag" not in battles.columns:
        return None
    tag = battles.schema["category_tag"]
    if not isinstance(tag, pl.Struct):
        return None
    fields = {f.name: f.dtype for f in tag.fields}
    criteria = fields.get("criteria_v0.1")
    if not isinstance(criteria, pl.Struct):
        return None
    parts = [pl.col("category_tag").struct.field("criteria_v0.1").struct.field(f.name)
             .cast(pl.Int32).fill_null(0) for f in criteria.fields]
    return pl.sum_horizontal(parts) >= LMARENA_HARD_CRITERIA


def hard_mask(battles: pl.DataFrame, threshold: float = HARD_DIFFICULTY) -> pl.Series:
    """True for battles on hard prompts; an error when the battles say nothing about it.

    A known difficulty decides (``>= threshold``); where it is missing, the
    ``hard`` subset membership or LMArena's criteria do.
    """
    flags = [e for e in (_subset_is_hard(battles), _lmarena_hard(battles)) if e is not None]
    labelled = pl.any_horizontal(flags) if flags else None
    if "difficulty" in battles.columns:
        difficulty = pl.col("difficulty").cast(pl.Float64)
        otherwise = labelled if labelled is not None else pl.lit(False)
        expr = pl.when(difficulty.is_not_null()).then(difficulty >= threshold).otherwise(otherwise)
    elif labelled is not None:
        expr = labelled
    else:
        raise BattleDataError(
            "no prompt difficulty in these battles: give --testset (a `testset build` file, "
            "joined on prompt_id), or battles with difficulty, subset(s) or LMArena's "
            "category_tag"
        )
    return battles.select(expr.fill_null(False).alias("hard"))["hard"]


def only_category(battles: pl.DataFrame, name: str) -> pl.DataFrame:
    """The battles whose prompt is in category ``name`` (an error naming the ones there are)."""
    if "category" not in battles.columns:
        raise BattleDataError("these battles have no category (a 'category' column, the "
                              "judgments' prompt category, or --testset)")
    picked = battles.filter(pl.col("category") == name)
    if picked.height == 0:
        known = ", ".join(categories(battles)) or "none"
        raise BattleDataError(f"no battles in category {name!r}; categories: {known}")
    return picked


def categories(battles: pl.DataFrame) -> list[str]:
    """The categories present, most battles first."""
    if "category" not in battles.columns:
        return []
    counts = battles.drop_nulls("category").group_by("category").len()
    return counts.sort(["len", "category"], descending=[True, False])["category"].to_list()


@dataclass(frozen=True)
class Board:
    """One view's leaderboard: its name, how many battles it rests on, its rows."""

    name: str
    battles: int
    rows: list[LeaderboardRow]
    skipped: str = ""  # why this view has no rows


def by_category(
    battles: pl.DataFrame,
    fit_rows: Callable[[pl.DataFrame], list[LeaderboardRow]],
    *,
    hard_threshold: float = HARD_DIFFICULTY,
) -> list[Board]:
    """``overall``, then every category (most battles first), then ``hard prompts`` when the
    battles know their difficulty. A view with fewer than two models is left out; one that
    cannot be fitted (an anchor without battles there) is kept empty with the reason."""
    views: list[tuple[str, pl.DataFrame]] = [("overall", battles)]
    views += [(name, only_category(battles, name)) for name in categories(battles)]
    with contextlib.suppress(BattleDataError):  # no difficulty anywhere: no hard view
        views.append(("hard prompts", battles.filter(hard_mask(battles, hard_threshold))))
    boards: list[Board] = []
    for name, part in views:
        models = set(part["model_a"].to_list()) | set(part["model_b"].to_list())
        if len(models) < 2:
            continue
        try:
            boards.append(Board(name=name, battles=part.height, rows=fit_rows(part)))
        except ValueError as exc:  # e.g. the anchor model has no battles in this category
            boards.append(Board(name=name, battles=part.height, rows=[], skipped=str(exc)))
    return boards
