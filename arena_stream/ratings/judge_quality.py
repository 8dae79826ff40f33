"""Judge health per judge: position consistency and bias, failures, retries, margins.

Where :mod:`arena_stream.ratings.judge_health` asks whether a *player* makes
the judge fail, this module asks whether the *judge* can be trusted. A judge is
a ``Judgment.judge_model`` with its ``template_version`` (with ``rejudge`` there
may be several). For each, from its judgments and the judge's dead letters:

* **position consistency** (``agreement``): the share of battles whose two
  games, played with the answers in swapped positions, name the same winner
  (each game's own winner: the higher of its two scores, or a tie). A judge that
  reads the answers agrees with itself whichever is shown first; one that
  mostly reacts to position does not. Given with a 95% Wilson interval, and over
  the last ``agreement_window`` battles (``recent_agreement``) so a judge that
  degrades while running (a server swapped, a template changed) shows it.
  Judgments without two position-swapped games fall back to ``Judgment.rule``.
  Only games a model played count here and below: a verifier's games (no model
  call, ``attempts = 0``) are the same checks mapped to both orders and say
  nothing about position.
* **first-position preference**: among games with a winner, the share won by
  the answer shown first. 0.5 is unbiased; the bundled 135M judge sits near 0.85.
  The pairwise rule cancels a constant bias, but not the noise it leaves.
* **failures**: the judge's dead letters by reason. ``verdict`` failures are
  replies with no readable verdict (``unparseable``, ``ambiguous``,
  ``out_of_range``, ``not_finite``, ``no_probability``); the others are calls that
  failed (timeouts, HTTP errors) or, for a verifier, prompts it could not check
  (``no_checks``, ``bad_check``); ``failure_reasons`` has them one by one. Rates
  are per battle judged or dead-lettered.
* **retries**: the share of games that took more than one call, and calls per
  game (``Game.attempts``, the client's own retries included).
* **margins**: quantiles of ``Judgment.margin`` (|mean score difference|), and
  the share of ties. A judge whose margins collapse towards 0 routes nothing to
  training and separates no one.

Judge dead letters do not name their judge (the battle is the original
message), so they are counted against the judge of the latest judgment seen
(the live judgments topic has one judge at a time; ``rejudge`` writes elsewhere),
and before any judgment against the configured ``[judge]`` model (``fallback``,
template version unknown: ``""``). Across a change of judge, a dead letter read
after the new judge's first judgment counts against the new one.

**The warning** (:func:`agreement_warning`, pure): when ``[judge]
min_agreement`` > 0 and at least ``agreement_min_judgments`` battles are in the
window, a recent agreement under the floor gives one line naming the judge,
the rate, and its position preference. The ``ratings`` command, the live page
and the worker's log all use it.

Memory is bounded per judge: counters, the window of the last
``agreement_window`` agreements, and margins counted in 0.01 steps.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import msgspec

from arena_stream.schemas import DeadLetter

if TYPE_CHECKING:
    from arena_stream.config import Config, JudgeConfig

# Replies that came back without a readable verdict (verdict.py's ParseError reasons and
# the log-prob judge's readings with no verdict).
VERDICT_FAILURES = frozenset(
    {"unparseable", "ambiguous", "out_of_range", "not_finite", "no_probability"}
)
MARGIN_STEP = 0.01  # margins are counted in steps of this size (quantiles to that precision)
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
JudgeKey = tuple[str, str]  # (judge_model, template_version)


class AgreementFloor(msgspec.Struct, frozen=True, kw_only=True):
    """When a judge's position consistency is too low: ``[judge]`` min_agreement & co."""

    min_agreement: float = 0.6  # 0: never warn
    min_judgments: int = 50  # battles in the window before the floor applies
    window: int = 500  # the last this many battles are what "recent" means

    @classmethod
    def from_config(cls, spec: JudgeConfig) -> AgreementFloor:
        return cls(min_agreement=spec.min_agreement,
                   min_judgments=spec.agreement_min_judgments, window=spec.agreement_window)


class GameView(msgspec.Struct):
    """The part of a Game this module reads."""

    order: str = "ab"
    score_a: float = 0.0
    score_b: float = 0.0
    attempts: int = 1


class JudgmentView(msgspec.Struct):
    """The part of a Judgment that judge health reads: decode the judgments topic with
    :data:`judgment_view` to skip the conversation and the answers."""

    battle_id: str
    model_a: str
    model_b: str
    winner: str = "tie"
    margin: float = 0.0
    rule: str = ""
    games: list[GameView] = []
    judge_model: str = ""
    template_version: str = ""


judgment_view = msgspec.json.Decoder(JudgmentView)


class JudgedGames(Protocol):
    """A :class:`~arena_stream.schemas.Judgment` or a :class:`JudgmentView`."""

    @property
    def battle_id(self) -> str: ...
    @property
    def winner(self) -> str: ...
    @property
    def margin(self) -> float: ...
    @property
    def rule(self) -> str: ...
    @property
    def games(self) -> list[GameView]: ...  # or Game: the same fields are read
    @property
    def judge_model(self) -> str: ...
    @property
    def template_version(self) -> str: ...


class MarginSummary(msgspec.Struct, kw_only=True):
    count: int
    mean: float | None
    quantiles: dict[str, float]  # "p10", "p25", "p50", "p75", "p90"
    max: float | None


class JudgeQuality(msgspec.Struct, kw_only=True):
    """One judge's health; rates are None when there is nothing to divide."""

    judge: str
    template_version: str
    judgments: int
    dead_letters: int
    verdict_failures: int  # dead letters: replies without a readable verdict
    other_failures: int  # dead letters: failed calls (timeouts, HTTP errors), unchecked, ...
    failure_reasons: dict[str, int]
    verdict_failure_rate: float | None  # per battle judged or dead-lettered
    failure_rate: float | None
    agreement: float | None  # both games name the same winner
    agreement_low: float | None  # 95% Wilson interval
    agreement_high: float | None
    agreement_n: int
    recent_agreement: float | None  # over the last `window` battles
    recent_n: int
    first_position_rate: float | None  # games won by the answer shown first
    decisive_games: int  # games with a winner (the denominator above)
    games: int  # games a model played (a verifier's are not)
    retry_rate: float | None  # games that took more than one call
    calls_per_game: float | None
    tie_rate: float | None  # battles whose verdict is a tie
    margin: MarginSummary
    warning: str = ""  # one line when the agreement is under the floor


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``k / n`` (honest at small ``n`` and at 0 or 1)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _winner(diff: float) -> int:
    return (diff > 0) - (diff < 0)


def model_played(game: GameView) -> bool:
    """Whether a model played this game (a verifier's games record no call: attempts 0)."""
    return game.attempts > 0


def games_agree(j: JudgedGames) -> bool | None:
    """Whether the two position-swapped games name the same winner (None: cannot tell)."""
    games = [g for g in j.games if model_played(g)]
    if len(games) == 2 and {games[0].order, games[1].order} == {"ab", "ba"}:
        return (_winner(games[0].score_a - games[0].score_b)
                == _winner(games[1].score_a - games[1].score_b))
    if j.rule in ("agree", "disagree"):
        return j.rule == "agree"
    return None


def first_shown_wins(order: str, score_a: float, score_b: float) -> bool | None:
    """Whether the answer shown first won this game (None: a tie)."""
    first, second = (score_a, score_b) if order == "ab" else (score_b, score_a)
    return None if first == second else first > second


def margin_summary(margins: Counter[int]) -> MarginSummary:
    """Mean, quantiles and max of margins counted in :data:`MARGIN_STEP` steps."""
    n = sum(margins.values())
    if n == 0:
        return MarginSummary(count=0, mean=None, quantiles={}, max=None)
    steps = sorted(margins)
    total = sum(s * c for s, c in margins.items())
    out: dict[str, float] = {}
    for q in QUANTILES:
        rank = q * (n - 1)  # the lower of the two order statistics around the q-quantile
        seen = 0
        for s in steps:
            seen += margins[s]
            if seen > rank:
                out[f"p{round(q * 100)}"] = round(s * MARGIN_STEP, 2)
                break
    return MarginSummary(count=n, mean=round(total * MARGIN_STEP / n, 4), quantiles=out,
                         max=round(steps[-1] * MARGIN_STEP, 2))


class _Acc:
    """One judge's counters."""

    def __init__(self, window: int) -> None:
        self.judgments = 0
        self.agree = 0
        self.agreement_n = 0
        self.recent: deque[bool] = deque(maxlen=window)
        self.games = 0
        self.decisive = 0
        self.first_wins = 0
        self.retried = 0
        self.calls = 0
        self.ties = 0
        self.margins: Counter[int] = Counter()
        self.dead: Counter[str] = Counter()


class QualityTally:
    """Per-judge counters kept record by record (the live page's and the worker's view).

    A record delivered twice counts twice here, a small error on a health signal;
    :func:`judge_quality` on whole logs counts each battle once per judge.
    """

    def __init__(self, floor: AgreementFloor | None = None,
                 fallback: JudgeKey | None = None) -> None:
        self.floor = floor or AgreementFloor()
        self.fallback = fallback  # dead letters' judge before any judgment is seen
        self.latest: JudgeKey | None = None
        self.acc: dict[JudgeKey, _Acc] = {}
        self.warned: set[JudgeKey] = set()  # judges whose warning was last reported as on

    def _of(self, key: JudgeKey) -> _Acc:
        acc = self.acc.get(key)
        if acc is None:
            acc = self.acc[key] = _Acc(self.floor.window)
        return acc

    def add_judgment(self, j: JudgedGames) -> None:
        if not j.judge_model:
            return  # not a judge's verdict (nothing else writes the topic)
        key = (j.judge_model, j.template_version)
        self.latest = key
        acc = self._of(key)
        acc.judgments += 1
        agree = games_agree(j)
        if agree is not None:
            acc.agreement_n += 1
            acc.agree += agree
            acc.recent.append(agree)
        for g in j.games:
            if not model_played(g):
                continue
            acc.games += 1
            acc.calls += g.attempts
            acc.retried += g.attempts > 1
            first = first_shown_wins(g.order, g.score_a, g.score_b)
            if first is not None:
                acc.decisive += 1
                acc.first_wins += first
        acc.ties += j.winner == "tie"
        if math.isfinite(j.margin):
            acc.margins[round(abs(j.margin) / MARGIN_STEP)] += 1

    def add_dead_letter(self, dead: DeadLetter) -> bool:
        """Count a judge dead letter; returns False for other stages' dead letters."""
        if dead.stage != "judge":
            return False
        key = self.latest or self.fallback or ("unknown", "")
        self._of(key).dead[dead.reason] += 1
        return True

    def report(self) -> list[JudgeQuality]:
        return [self._quality(key, acc) for key, acc in sorted(self.acc.items())]

    def warning_changes(self) -> list[tuple[bool, str]]:
        """The judges whose warning came on or went off since the last call.

        ``(True, warning)`` when a judge fell under the floor, ``(False, line)`` when it
        came back over it: what a worker logs once, not on every judgment.
        """
        out = []
        for q in self.report():
            key = (q.judge, q.template_version)
            if q.warning and key not in self.warned:
                self.warned.add(key)
                out.append((True, q.warning))
            elif not q.warning and key in self.warned:
                self.warned.discard(key)
                out.append((False, f"judge {q.judge} ({q.template_version}): its two games "
                                   f"agree on {q.recent_agreement:.0%} of the last "
                                   f"{q.recent_n} battles again"))
        return out

    def _quality(self, key: JudgeKey, acc: _Acc) -> JudgeQuality:
        dead = sum(acc.dead.values())
        verdict = sum(c for r, c in acc.dead.items() if r in VERDICT_FAILURES)
        tried = acc.judgments + dead
        low, high = wilson(acc.agree, acc.agreement_n)
        recent = sum(acc.recent)
        q = JudgeQuality(
            judge=key[0], template_version=key[1], judgments=acc.judgments,
            dead_letters=dead, verdict_failures=verdict, other_failures=dead - verdict,
            failure_reasons=dict(sorted(acc.dead.items())),
            verdict_failure_rate=_rate(verdict, tried), failure_rate=_rate(dead, tried),
            agreement=_rate(acc.agree, acc.agreement_n),
            agreement_low=round(low, 4) if acc.agreement_n else None,
            agreement_high=round(high, 4) if acc.agreement_n else None,
            agreement_n=acc.agreement_n,
            recent_agreement=_rate(recent, len(acc.recent)), recent_n=len(acc.recent),
            first_position_rate=_rate(acc.first_wins, acc.decisive),
            decisive_games=acc.decisive, games=acc.games,
            retry_rate=_rate(acc.retried, acc.games),
            calls_per_game=_rate(acc.calls, acc.games),
            tie_rate=_rate(acc.ties, acc.judgments), margin=margin_summary(acc.margins),
        )
        q.warning = agreement_warning(q, self.floor)
        return q


def _rate(k: float, n: int) -> float | None:
    return round(k / n, 4) if n else None


def agreement_warning(q: JudgeQuality, floor: AgreementFloor) -> str:
    """One line when the judge's recent position consistency is under the floor, else "".

    Pure, so the worker can log it, the page show it and ``ratings --json`` carry
    it from the same numbers. Nothing is said before ``floor.min_judgments``
    battles are in the window: a handful of games says little either way.
    """
    if floor.min_agreement <= 0 or q.recent_agreement is None:
        return ""
    if q.recent_n < floor.min_judgments or q.recent_agreement >= floor.min_agreement:
        return ""
    line = (f"judge {q.judge} ({q.template_version}): its two position-swapped games agree "
            f"on {q.recent_agreement:.0%} of the last {q.recent_n} battles, under the floor "
            f"of {floor.min_agreement:.0%}")
    if q.first_position_rate is not None and q.decisive_games:
        side = "first" if q.first_position_rate >= 0.5 else "second"
        share = max(q.first_position_rate, 1 - q.first_position_rate)
        line += f"; it prefers the answer shown {side} in {share:.0%} of its games"
    return line + "; its verdicts say more about position than quality"


def judge_quality(
    judgments: Iterable[JudgedGames], dead_letters: Iterable[DeadLetter], *,
    floor: AgreementFloor | None = None, fallback: JudgeKey | None = None,
) -> list[JudgeQuality]:
    """Every judge's health from the judgments and dead-letter logs.

    A battle judged twice by the same judge (a redelivery) counts once. Dead
    letters are read after every judgment, so they count against the latest
    judge, or ``fallback`` when there is no judgment (see the module docstring).
    """
    tally = QualityTally(floor, fallback)
    seen: set[tuple[str, str, str]] = set()
    for j in judgments:
        mark = (j.battle_id, j.judge_model, j.template_version)
        if mark not in seen:
            seen.add(mark)
            tally.add_judgment(j)
    dead_seen: set[str] = set()
    for d in dead_letters:
        ref = d.ref or f"{d.topic}/{d.partition}/{d.offset}"
        if d.stage == "judge" and ref not in dead_seen:
            dead_seen.add(ref)
            tally.add_dead_letter(d)
    return tally.report()


def configured_judge(config: Config) -> JudgeKey:
    """The ``[judge]`` model, for dead letters read before any judgment (version unknown)."""
    return config.judge.model, ""
