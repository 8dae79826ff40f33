"""Per-player judge dead letters, and a flag for players who may be suppressing verdicts.

A battle the judge cannot decide is dead-lettered and never rated. A player
whose answers make the judge fail (a verdict forged so the reply is ambiguous,
an answer too long for the judge's context, text that trips a content filter)
would therefore never lose. Ratings cannot show that; this module can: it counts,
per player, the battles that ended as judge dead letters and flags a player
whose share is far above what the rest of the arena sees.

**What is counted.** Battles, each once: a battle judged at least once counts as
judged (a dead letter later republished and judged is not suppressed), one
dead-lettered and never judged counts as a dead letter. Failures no answer can
cause are counted apart, as ``outages``: the judge unreachable or overloaded
(``connect``, ``timeout``, ``transport``, HTTP 429 and 5xx) and a prompt the
verifier cannot check (``no_checks``, ``bad_check``). A judge that is down for a
while, or a prompt with a broken check, must not make the busiest player look
guilty.

**The flag** (:class:`SuppressionRule`, defaults in brackets). A player is
flagged when at least ``min_dead`` [5] of its battles, and at least
``min_share`` [20%] of them, were dead-lettered for an answer-dependent reason, and
either

* its share is at least ``ratio`` [3] times the share among battles it did not
  play (floored at ``floor`` [1%]) and a one-sided binomial test puts the chance
  of that many under the others' rate below ``alpha`` [0.001]; or
* it played in (nearly) every battle, as the target does in
  ``target-vs-competitors`` mode, so there is nothing to compare with: then it
  is flagged when its share is high against at least two different opponents
  (one opponent's answers could explain one pair; only the common player
  explains several). With a single opponent nobody can be singled out, and
  nobody is flagged.

Everything here is a pure function of the judgments and dead letters, so the
``ratings`` command, the live page and metrics compute the same numbers. Call
:func:`judge_health` on whole logs, or keep a :class:`JudgeTally` up to date record
by record and call :meth:`JudgeTally.report`; :func:`metric_samples` turns a
report into Prometheus-style samples.

**Judge health as a whole.** The judge's own record (position consistency,
first-position preference, failures, retries, margins, the agreement floor) is
in :mod:`arena_stream.ratings.judge_quality`. :class:`HealthReport` joins both
halves; :class:`JudgeMonitor` keeps it up to date record by record (the live
page, the worker), :func:`health_report` computes it from whole logs (the
``ratings`` command), and :func:`health_metrics` is the one function that turns
it into metrics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import msgspec

from arena_stream.ratings.judge_quality import (
    AgreementFloor,
    JudgeKey,
    JudgeQuality,
    JudgmentView,
    QualityTally,
    configured_judge,
    judge_quality,
    judgment_view,
)
from arena_stream.schemas import DeadLetter, Judgment

if TYPE_CHECKING:
    from arena_stream.config import Config

# Dead-letter reasons no answer can cause: the judge was unavailable, or the prompt's
# checks could not be run, whatever the answers were.
OUTAGE_REASONS = frozenset({"connect", "timeout", "transport", "http_429", "no_checks",
                            "bad_check"})


def is_outage(reason: str) -> bool:
    return reason in OUTAGE_REASONS or (reason.startswith("http_5") and reason[5:].isdigit())


class SuppressionRule(msgspec.Struct, frozen=True, kw_only=True):
    """When a player's share of judge dead letters is "far above the others'"."""

    min_dead: int = 5
    min_share: float = 0.2
    ratio: float = 3.0
    floor: float = 0.01
    alpha: float = 1e-3
    min_baseline_battles: int = 10  # fewer battles without the player: no baseline


class PairCounts(msgspec.Struct):
    judged: int = 0
    dead: int = 0  # answer-dependent judge dead letters
    outages: int = 0  # judge dead letters no answer can cause (OUTAGE_REASONS)


class JudgeHealth(msgspec.Struct, kw_only=True):
    """One player's judge record; ``share`` and the flag use answer-dependent dead letters."""

    model: str
    battles: int  # judged + dead letters + outages
    judged: int
    dead_letters: int  # answer-dependent judge dead letters
    outages: int
    share: float  # dead_letters / (judged + dead_letters)
    baseline: float | None  # the same share among battles without this player
    opponents_high: int  # opponents against whom the share reaches min_share
    suppression_suspected: bool
    reason: str = ""  # one line: why it is flagged


class BattlePlayers(msgspec.Struct):
    """The part of a Battle this module reads (a dead letter's original bytes)."""

    model_a: str
    model_b: str


class JudgedPlayers(msgspec.Struct):
    """The part of a Judgment this module reads: decode the judgments topic with
    ``msgspec.json.Decoder(JudgedPlayers)`` to skip the answers and conversations."""

    battle_id: str
    model_a: str
    model_b: str


_players = msgspec.json.Decoder(BattlePlayers)


def dead_letter_players(dead: DeadLetter) -> tuple[str, str] | None:
    """The two rated models of a judge dead letter (its original bytes are the Battle)."""
    if dead.stage != "judge" or dead.original is None:
        return None
    try:
        battle = _players.decode(dead.original)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return battle.model_a, battle.model_b


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


class JudgeTally:
    """Pair counts kept record by record, in memory bounded by the number of pairs.

    :meth:`add_judgment` and :meth:`add_dead_letter` count records as they come;
    the live page uses this (a record delivered twice counts twice, a small
    error on a health signal). :func:`judge_health` deduplicates by battle id.
    """

    def __init__(self) -> None:
        self.pairs: dict[tuple[str, str], PairCounts] = {}

    def add_judgment(self, model_a: str, model_b: str) -> None:
        self.pairs.setdefault(_pair(model_a, model_b), PairCounts()).judged += 1

    def add_dead_letter(self, model_a: str, model_b: str, reason: str) -> None:
        counts = self.pairs.setdefault(_pair(model_a, model_b), PairCounts())
        if is_outage(reason):
            counts.outages += 1
        else:
            counts.dead += 1

    def report(self, rule: SuppressionRule | None = None) -> list[JudgeHealth]:
        return assess(self.pairs, rule or SuppressionRule())


def judge_health(
    judgments: Iterable[Judgment | JudgedPlayers | JudgmentView],
    dead_letters: Iterable[DeadLetter], rule: SuppressionRule | None = None,
) -> list[JudgeHealth]:
    """Every player's judge record from the judgments and dead-letter logs, battle by battle."""
    judged: dict[str, tuple[str, str]] = {}
    for j in judgments:
        judged[j.battle_id] = (j.model_a, j.model_b)
    dead: dict[str, tuple[str, str, str]] = {}
    for d in dead_letters:
        players = dead_letter_players(d)
        if players is None:
            continue
        battle = d.ref or f"{players[0]}\x1f{players[1]}\x1f{d.offset}"
        # A battle judged in the end is not suppressed; for one dead-lettered several
        # times, an answer-dependent reason wins over an outage.
        if battle not in judged and (battle not in dead or is_outage(dead[battle][2])):
            dead[battle] = (*players, d.reason)
    tally = JudgeTally()
    for a, b in judged.values():
        tally.add_judgment(a, b)
    for a, b, reason in dead.values():
        tally.add_dead_letter(a, b, reason)
    return tally.report(rule)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space from k upwards."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k, n + 1):
        term = math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                        + i * log_p + (n - i) * log_q)
        total += term
        if i > n * p and term < total * 1e-16:
            break  # past the mode the terms only shrink
    return min(1.0, total)


def assess(
    pairs: dict[tuple[str, str], PairCounts], rule: SuppressionRule
) -> list[JudgeHealth]:
    """The judge record and flag of every player in ``pairs`` (see the module docstring)."""
    models = sorted({m for pair in pairs for m in pair})
    total_judged = sum(c.judged for c in pairs.values())
    total_dead = sum(c.dead for c in pairs.values())
    out: list[JudgeHealth] = []
    for model in models:
        mine = {pair: c for pair, c in pairs.items() if model in pair}
        judged = sum(c.judged for c in mine.values())
        dead = sum(c.dead for c in mine.values())
        outages = sum(c.outages for c in mine.values())
        decided = judged + dead
        share = dead / decided if decided else 0.0
        other_n = (total_judged + total_dead) - decided
        baseline = ((total_dead - dead) / other_n
                    if other_n >= rule.min_baseline_battles else None)
        high = sum(
            1 for c in mine.values()
            if c.dead + c.judged and c.dead / (c.dead + c.judged) >= rule.min_share
        )
        flagged, why = False, ""
        if dead >= rule.min_dead and share >= rule.min_share:
            if baseline is not None:
                expected = max(baseline, rule.floor)
                p_value = binomial_tail(dead, decided, expected)
                if share >= rule.ratio * expected and p_value < rule.alpha:
                    flagged = True
                    why = (f"{dead} of {decided} battles dead-lettered by the judge "
                           f"({share:.0%}), against {baseline:.0%} of the {other_n} battles "
                           f"without it (p = {p_value:.1e})")
            elif high >= 2:
                flagged = True
                why = (f"{dead} of {decided} battles dead-lettered by the judge "
                       f"({share:.0%}), against {high} different opponents")
        out.append(JudgeHealth(
            model=model, battles=decided + outages, judged=judged, dead_letters=dead,
            outages=outages, share=round(share, 4),
            baseline=None if baseline is None else round(baseline, 4),
            opponents_high=high, suppression_suspected=flagged, reason=why,
        ))
    return out


def metric_samples(health: Iterable[JudgeHealth]) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus-style samples ``(name, labels, value)`` for a ``/metrics`` endpoint."""
    samples: list[tuple[str, dict[str, str], float]] = []
    for h in health:
        labels = {"model": h.model}
        samples += [
            ("arena_judge_battles_total", labels, float(h.battles)),
            ("arena_judge_dead_letters_total", labels, float(h.dead_letters)),
            ("arena_judge_outages_total", labels, float(h.outages)),
            ("arena_judge_dead_letter_share", labels, h.share),
            ("arena_judge_suppression_suspected", labels, 1.0 if h.suppression_suspected
             else 0.0),
        ]
    return samples


# -- judge health as a whole: the players' record and the judges' own -----------------------

Sample = tuple[str, dict[str, str], float]


class HealthReport(msgspec.Struct, kw_only=True):
    """Everything judge health says: per player, per judge, and the warnings in one list."""

    players: list[JudgeHealth]
    judges: list[JudgeQuality]
    warnings: list[str]  # one line each: suspected suppression, agreement under the floor


def health_warnings(players: Iterable[JudgeHealth], judges: Iterable[JudgeQuality]) -> list[str]:
    return ([f"{h.model}: possible verdict suppression: {h.reason}"
             for h in players if h.suppression_suspected]
            + [q.warning for q in judges if q.warning])


class JudgeMonitor:
    """Judge health kept up to date record by record, in bounded memory.

    Feed it the judgments and dead-letter topics (:meth:`add_record` with raw
    values, or decoded events) and call :meth:`report`. The live page keeps one;
    a worker that logs the agreement warning or serves ``/metrics`` can too.
    """

    def __init__(self, floor: AgreementFloor | None = None, fallback: JudgeKey | None = None,
                 rule: SuppressionRule | None = None) -> None:
        self.players = JudgeTally()
        self.judges = QualityTally(floor, fallback)
        self.rule = rule or SuppressionRule()

    @classmethod
    def for_config(cls, config: Config) -> JudgeMonitor:
        """The floor from ``[judge]``; the configured judge for dead letters before any
        judgment (see :mod:`~arena_stream.ratings.judge_quality`)."""
        return cls(AgreementFloor.from_config(config.judge), configured_judge(config))

    def add_judgment(self, j: Judgment | JudgmentView) -> None:
        self.players.add_judgment(j.model_a, j.model_b)
        self.judges.add_judgment(j)

    def add_dead_letter(self, dead: DeadLetter) -> bool:
        """Count a judge dead letter; False for any other stage's."""
        players = dead_letter_players(dead)
        if players is None:
            return False
        self.players.add_dead_letter(*players, dead.reason)
        self.judges.add_dead_letter(dead)
        return True

    def add_record(self, key: str, value: bytes) -> bool:
        """A raw record of ``"judgments"`` or ``"deadletter"``; False when it is not counted.

        Raises ``msgspec.DecodeError`` / ``ValidationError`` for a record that does not decode.
        """
        if key == "judgments":
            self.add_judgment(judgment_view.decode(value))
            return True
        if key == "deadletter":
            return self.add_dead_letter(msgspec.json.decode(value, type=DeadLetter))
        return False

    def warning_changes(self) -> list[tuple[bool, str]]:
        """Agreement warnings that came on (True) or went off (False) since the last call;
        see :meth:`~arena_stream.ratings.judge_quality.QualityTally.warning_changes`."""
        return self.judges.warning_changes()

    def report(self) -> HealthReport:
        players = self.players.report(self.rule)
        judges = self.judges.report()
        return HealthReport(players=players, judges=judges,
                            warnings=health_warnings(players, judges))


def health_report(
    judgments: Iterable[Judgment | JudgmentView], dead_letters: Iterable[DeadLetter], *,
    floor: AgreementFloor | None = None, fallback: JudgeKey | None = None,
    rule: SuppressionRule | None = None,
) -> HealthReport:
    """Judge health from whole logs, each battle counted once (what ``ratings`` prints)."""
    judgments, dead_letters = list(judgments), list(dead_letters)
    players = judge_health(judgments, dead_letters, rule)
    judges = judge_quality(judgments, dead_letters, floor=floor, fallback=fallback)
    return HealthReport(players=players, judges=judges,
                        warnings=health_warnings(players, judges))


def health_metrics(report: HealthReport) -> list[Sample]:
    """Every judge-health number as Prometheus samples ``(name, labels, value)``.

    Per player (label ``model``): :func:`metric_samples`. Per judge (labels
    ``judge``, ``template``): judgments, dead letters by kind, the rates, the
    margin as a summary (``quantile`` label, ``_sum`` and ``_count``) and
    ``arena_judge_agreement_warning`` (1 while the agreement is under the floor).
    A rate with nothing to divide yet is left out rather than reported as 0.
    """
    samples = metric_samples(report.players)
    for q in report.judges:
        labels = {"judge": q.judge, "template": q.template_version}
        samples += [
            ("arena_judge_judgments_total", labels, float(q.judgments)),
            ("arena_judge_failures_total", {**labels, "kind": "verdict"},
             float(q.verdict_failures)),
            ("arena_judge_failures_total", {**labels, "kind": "other"},
             float(q.other_failures)),
            ("arena_judge_games_total", labels, float(q.games)),
            ("arena_judge_agreement_warning", labels, 1.0 if q.warning else 0.0),
        ]
        for name, value in (
            ("arena_judge_position_agreement", q.agreement),
            ("arena_judge_position_agreement_recent", q.recent_agreement),
            ("arena_judge_first_position_rate", q.first_position_rate),
            ("arena_judge_verdict_failure_rate", q.verdict_failure_rate),
            ("arena_judge_failure_rate", q.failure_rate),
            ("arena_judge_retry_rate", q.retry_rate),
            ("arena_judge_calls_per_game", q.calls_per_game),
            ("arena_judge_tie_rate", q.tie_rate),
        ):
            if value is not None:
                samples.append((name, labels, float(value)))
        for key, value in q.margin.quantiles.items():
            quantile = str(int(key[1:]) / 100)
            samples.append(("arena_judge_margin", {**labels, "quantile": quantile}, value))
        if q.margin.mean is not None:
            samples += [("arena_judge_margin_sum", labels, q.margin.mean * q.margin.count),
                        ("arena_judge_margin_count", labels, float(q.margin.count))]
    return samples
