"""How far two judges agree: battle by battle, and on the leaderboards they produce.

``rejudge`` replays the battles through a second judge; this module compares
its verdicts with the live judge's on the battles both judged:

* **per battle**: how often the two name the same winner (a tie and
  ``tie (bothbad)`` are one outcome), the same over battles both call
  decisive, Cohen's kappa (agreement beyond what the two judges' own outcome
  rates would give by chance) and the full 3 x 3 table;
* **per leaderboard**: Bradley-Terry on the same battles under each judge,
  compared as Arena-Hard compares a benchmark with the human arena
  (:mod:`arena_stream.offline.consistency`): Spearman of the ratings,
  agreement with 95% intervals, separability, with the live judge as the
  reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from arena_stream.offline.consistency import Consistency, compare, render
from arena_stream.schemas.events import Judgment, LeaderboardRow

OUTCOMES = ("model_a", "model_b", "tie")


def _outcome(winner: str) -> str:
    return "tie" if winner.startswith("tie") else winner


@dataclass(frozen=True)
class BattleAgreement:
    battles: int  # judged by both
    same: int
    decisive_both: int  # battles both judges call decisive
    decisive_same: int
    kappa: float | None
    table: dict[str, dict[str, int]]  # live outcome -> other outcome -> battles
    only_live: int  # battles only the live judge judged (in the window)
    only_other: int

    @property
    def rate(self) -> float | None:
        return self.same / self.battles if self.battles else None

    @property
    def decisive_rate(self) -> float | None:
        return self.decisive_same / self.decisive_both if self.decisive_both else None

    def to_json(self) -> dict[str, Any]:
        return {
            "battles": self.battles, "same_winner": self.same, "agreement": self.rate,
            "decisive_both": self.decisive_both, "decisive_agreement": self.decisive_rate,
            "kappa": self.kappa, "table": self.table, "only_live": self.only_live,
            "only_other": self.only_other,
        }


def battle_agreement(live: Sequence[Judgment], other: Sequence[Judgment]) -> BattleAgreement:
    """Per-battle agreement over the battles both judged (by battle id; last verdict wins)."""
    a = {j.battle_id: _outcome(j.winner) for j in live}
    b = {j.battle_id: _outcome(j.winner) for j in other}
    both = [k for k in a if k in b]
    table = {x: dict.fromkeys(OUTCOMES, 0) for x in OUTCOMES}
    for k in both:
        table[a[k]][b[k]] += 1
    n = len(both)
    same = sum(table[x][x] for x in OUTCOMES)
    decisive = ("model_a", "model_b")
    decisive_both = sum(table[x][y] for x in decisive for y in decisive)
    decisive_same = table["model_a"]["model_a"] + table["model_b"]["model_b"]
    kappa = None
    if n:
        expected = sum(sum(table[x].values()) * sum(table[y][x] for y in OUTCOMES)
                       for x in OUTCOMES) / (n * n)
        kappa = (same / n - expected) / (1.0 - expected) if expected < 1.0 else None
    return BattleAgreement(battles=n, same=same, decisive_both=decisive_both,
                           decisive_same=decisive_same, kappa=kappa, table=table,
                           only_live=len(a) - n, only_other=len(b) - n)


@dataclass(frozen=True)
class JudgeComparison:
    battles: BattleAgreement
    live_rows: list[LeaderboardRow]
    other_rows: list[LeaderboardRow]
    boards: Consistency | None  # None when fewer than two models were judged by both

    def to_json(self) -> dict[str, Any]:
        import msgspec

        return {
            "per_battle": self.battles.to_json(),
            "leaderboards": None if self.boards is None else self.boards.to_json(),
            "live_leaderboard": [msgspec.to_builtins(r) for r in self.live_rows],
            "other_leaderboard": [msgspec.to_builtins(r) for r in self.other_rows],
        }


def compare_judges(
    live: Sequence[Judgment], other: Sequence[Judgment], *, method: str = "sandwich",
    rounds: int = 100, seed: int = 0,
) -> JudgeComparison:
    """Battle agreement, and both judges' leaderboards on the battles both judged."""
    from arena_stream.ratings import bradley_terry as bt

    agreement = battle_agreement(live, other)
    ids = {j.battle_id for j in live} & {j.battle_id for j in other}
    mine = {j.battle_id: j for j in live if j.battle_id in ids}
    theirs = {j.battle_id: j for j in other if j.battle_id in ids}
    live_rows: list[LeaderboardRow] = []
    other_rows: list[LeaderboardRow] = []
    boards = None
    if ids:
        order = sorted(ids)
        live_battles = bt.battles_from_judgments([mine[k] for k in order])
        other_battles = bt.battles_from_judgments([theirs[k] for k in order])
        models = set(live_battles["model_a"].to_list()) | set(live_battles["model_b"].to_list())
        if len(models) >= 2:
            live_rows = bt.leaderboard(live_battles, method=method, rounds=rounds,  # type: ignore[arg-type]
                                       seed=seed)
            other_rows = bt.leaderboard(other_battles, method=method, rounds=rounds,  # type: ignore[arg-type]
                                        seed=seed)
            boards = compare(other_rows, live_rows)
    return JudgeComparison(battles=agreement, live_rows=live_rows, other_rows=other_rows,
                           boards=boards)


def render_comparison(result: JudgeComparison, *, live: str, other: str) -> str:
    """A short account: the per-battle numbers, then the leaderboard measures."""
    a = result.battles

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    lines = [
        f"battles judged by both  {a.battles}  (only {live}: {a.only_live}, "
        f"only {other}: {a.only_other})",
        f"same winner             {pct(a.rate)}  ({a.same}/{a.battles})",
        f"same winner, decisive   {pct(a.decisive_rate)}  ({a.decisive_same}/{a.decisive_both} "
        "battles both call decisive)",
        f"cohen's kappa           {'n/a' if a.kappa is None else f'{a.kappa:.3f}'}",
        f"winners (rows: {live}; columns: {other})",
        f"  {'':<12}{'model_a':>9}{'model_b':>9}{'tie':>9}",
    ]
    for x in OUTCOMES:
        row = a.table[x]
        lines.append(f"  {x:<12}{row['model_a']:>9}{row['model_b']:>9}{row['tie']:>9}")
    if result.boards is None:
        lines.append("leaderboards            n/a (fewer than two models judged by both)")
    else:
        lines.append(f"leaderboards ({other} against {live} as the reference):")
        lines.append(render(result.boards))
    return "\n".join(lines)
