"""Lineage of the target's versions, their held-out ratings, and the paper's accounting.

One row per target version (``target@v0`` is the base model):

- **lineage**: its parent version, the training job that made it (kind, round),
  and the samples it learned from (how many, their ids, the topic they are on);
- **held-out**: its Bradley-Terry rating with a 95% bootstrap interval, fitted on
  the held-out evaluation battles of every version together (the same opponents
  each time, so versions are comparable), and the share of held-out prompts its
  answer passed every verifier check on;
- **the round it played** (the paper's per-round numbers): battles, wins / losses
  / ties against each opponent, the SFT samples and DPO pairs selected from those
  battles with the thresholds used, and its online Elo.

Held-out battles are those whose prompt id is an evaluation id
(:mod:`arena_stream.streams.stages.evaluate`); everything else is the round's.
:func:`verdict` says in plain words whether the last version beat ``v0``.
Plain functions over decoded events: ``arena-stream versions``, the run's report
and the live page all call :func:`build_lineage`.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

import msgspec

from arena_stream.schemas import (
    DPOPair,
    Judgment,
    ModelVersion,
    RatingUpdate,
    SFTSample,
    TrainingJob,
)
from arena_stream.streams.stages.evaluate import is_heldout

SHOWN_SAMPLE_IDS = 20  # ids listed per version; the job on the jobs topic has them all


class Record(msgspec.Struct, kw_only=True):
    wins: int = 0
    losses: int = 0
    ties: int = 0

    @property
    def battles(self) -> int:
        return self.wins + self.losses + self.ties


class Heldout(msgspec.Struct, kw_only=True):
    rating: float
    lower: float
    upper: float
    battles: int
    prompts: int  # held-out prompts this version answered
    passed: int | None  # of those, answers that passed every check (None: no verifier)
    pass_rate: float | None


class Selected(msgspec.Struct, kw_only=True):
    """Training data selected from a round's battles, with the thresholds used."""

    sft_samples: int = 0
    dpo_pairs: int = 0
    sft_margin: float = 0.0
    dpo_margin: float = 0.0


class VersionRow(msgspec.Struct, kw_only=True):
    model: str  # "target@v2"
    version: int
    parent: int | None = None  # None for v0
    kind: str = "base"  # the training kind that made it
    job_id: str | None = None
    training_round: int | None = None
    path: str | None = None
    samples: int = 0  # samples it learned from
    sample_ids: list[str] = []  # the first SHOWN_SAMPLE_IDS of them
    samples_topic: str | None = None  # where all of them are (the job lists every id)
    train_metrics: dict[str, float] = {}
    battles: int = 0  # the round it played (held-out battles not counted)
    vs: dict[str, Record] = {}  # opponent -> its record against it
    win_rate: dict[str, float] = {}  # opponent -> wins / battles (ties count half)
    selected: Selected = msgspec.field(default_factory=Selected)
    elo: float | None = None
    heldout: Heldout | None = None


class Lineage(msgspec.Struct, kw_only=True):
    target: str
    versions: list[VersionRow]
    improved: bool | None  # None: nothing to compare
    verdict: str


def _side(j: Judgment, model: str) -> str | None:
    return "a" if j.model_a == model else ("b" if j.model_b == model else None)


def _outcome(j: Judgment, side: str) -> str:
    if j.winner == "tie":
        return "tie"
    return "win" if j.winner == f"model_{side}" else "loss"


def _target_models(target: str, models: Iterable[ModelVersion],
                   judgments: list[Judgment]) -> list[int]:
    prefix = f"{target}@v"
    seen = {0} | {m.version for m in models if m.name == target}
    for j in judgments:
        for name in (j.model_a, j.model_b):
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                seen.add(int(name[len(prefix):]))
    return sorted(seen)


def heldout_ratings(judgments: list[Judgment], *, rounds: int = 200,
                    seed: int = 0) -> dict[str, tuple[float, float, float, int]]:
    """model -> (rating, lower, upper, battles) from the held-out battles only."""
    from arena_stream.ratings.bradley_terry import battles_from_judgments, fit

    held = [j for j in judgments if is_heldout(j.prompt_id)]
    if not held:
        return {}
    ratings = fit(battles_from_judgments(held), method="bootstrap", rounds=rounds, seed=seed)
    return {row.model: (row.rating, row.lower, row.upper, row.battles) for row in ratings.rows()}


def _pass_counts(judgments: list[Judgment], model: str) -> tuple[int, int | None]:
    """(held-out prompts answered, of them passing every check or None without checks)."""
    answered: dict[str, bool | None] = {}
    for j in judgments:
        side = _side(j, model)
        if side is None or not is_heldout(j.prompt_id):
            continue
        passed = None if j.checks is None else (
            j.checks.passed_a if side == "a" else j.checks.passed_b)
        if answered.get(j.prompt_id) is None:
            answered[j.prompt_id] = passed
    if not answered:
        return 0, None
    if any(v is None for v in answered.values()):
        return len(answered), None
    return len(answered), sum(1 for v in answered.values() if v)


def build_lineage(
    target: str,
    *,
    models: Iterable[ModelVersion],
    jobs: Iterable[TrainingJob],
    judgments: Iterable[Judgment],
    ratings: Iterable[RatingUpdate] = (),
    sft: Iterable[SFTSample] = (),
    dpo: Iterable[DPOPair] = (),
    thresholds: Any = None,
    rounds: int = 200,
) -> Lineage:
    """Every target version's row (see the module docstring), oldest first."""
    from arena_stream.ratings.standings import latest_ratings

    models = [m for m in models if m.name == target]
    judged = list({j.battle_id: j for j in judgments}.values())
    by_job = {j.id: j for j in jobs}
    published = {m.version: m for m in models}
    elo = {s.model: s.rating for s in latest_ratings(ratings)}
    held = heldout_ratings(judged, rounds=rounds)
    sft_by = collections.Counter(s.loser for s in {s.id: s for s in sft}.values())
    dpo_by: collections.Counter[str] = collections.Counter()
    for p in {p.id: p for p in dpo}.values():
        for name in {p.chosen_model, p.rejected_model}:
            if name.startswith(f"{target}@v"):
                dpo_by[name] += 1
    rows = []
    for number in _target_models(target, models, judged):
        name = f"{target}@v{number}"
        row = VersionRow(model=name, version=number)
        made = published.get(number)
        if made is not None:
            job = by_job.get(made.job_id)
            row.parent, row.kind, row.job_id = made.parent_version, made.kind, made.job_id
            row.training_round, row.path = made.round, made.path
            row.train_metrics = dict(made.metrics)
            if job is not None:
                row.samples = len(job.sample_ids)
                row.sample_ids = job.sample_ids[:SHOWN_SAMPLE_IDS]
                row.samples_topic = job.topic
        vs: dict[str, Record] = collections.defaultdict(Record)
        for j in judged:
            side = _side(j, name)
            if side is None or is_heldout(j.prompt_id):
                continue
            opponent = j.model_b if side == "a" else j.model_a
            result = _outcome(j, side)
            rec = vs[opponent]
            if result == "win":
                rec.wins += 1
            elif result == "loss":
                rec.losses += 1
            else:
                rec.ties += 1
        row.vs = dict(sorted(vs.items()))
        row.battles = sum(r.battles for r in vs.values())
        row.win_rate = {o: round((r.wins + 0.5 * r.ties) / r.battles, 4)
                        for o, r in row.vs.items() if r.battles}
        row.selected = Selected(
            sft_samples=sft_by.get(name, 0), dpo_pairs=dpo_by.get(name, 0),
            sft_margin=float(getattr(thresholds, "sft_margin", 0.0)),
            dpo_margin=float(getattr(thresholds, "dpo_margin", 0.0)),
        )
        row.elo = elo.get(name)
        if name in held:
            rating, lower, upper, n = held[name]
            prompts, passed = _pass_counts(judged, name)
            row.heldout = Heldout(
                rating=rating, lower=lower, upper=upper, battles=n, prompts=prompts,
                passed=passed, pass_rate=None if passed is None or not prompts
                else passed / prompts)
        rows.append(row)
    improved, words = verdict(target, rows)
    return Lineage(target=target, versions=rows, improved=improved, verdict=words)


def verdict(target: str, rows: list[VersionRow]) -> tuple[bool | None, str]:
    """Whether the newest evaluated version beat v0 on the held-out set, in plain words.

    Improvement means the newest version's 95% interval lies entirely above
    ``v0``'s: overlapping intervals are not claimed as a gain.
    """
    evaluated = [r for r in rows if r.heldout is not None]
    base = next((r for r in evaluated if r.version == 0), None)
    if base is None or base.heldout is None:
        return None, (f"No held-out evaluation of {target}@v0 was found, so nothing can be "
                      "said about improvement.")
    last = evaluated[-1]
    if last.version == 0 or last.heldout is None:
        return None, (f"No trained version of {target} has been evaluated on the held-out "
                      "set yet, so nothing can be said about improvement.")
    a, b = last.heldout, base.heldout

    def rate(h: Heldout) -> str:
        return "" if h.pass_rate is None else f", pass rate {h.pass_rate:.0%}"

    shown = (f"{last.model} held-out {a.rating:.1f} [{a.lower:.1f}, {a.upper:.1f}]{rate(a)} "
             f"vs {base.model} {b.rating:.1f} [{b.lower:.1f}, {b.upper:.1f}]{rate(b)}")
    if a.lower > b.upper:
        return True, (f"The flywheel improved the target: {shown}; the 95% intervals do not "
                      "overlap.")
    return False, (f"The flywheel did NOT improve the target: {shown}; the newest version's "
                   f"95% interval does not lie entirely above {base.model}'s.")
