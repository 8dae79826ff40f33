"""Each judge's own health, as pure functions of the judgments and dead letters."""

from __future__ import annotations

import random

import msgspec
import pytest

from arena_stream.ratings.judge_health import (
    JudgeMonitor,
    health_metrics,
    health_report,
)
from arena_stream.ratings.judge_quality import (
    AgreementFloor,
    MarginSummary,
    agreement_warning,
    judge_quality,
    margin_summary,
    wilson,
)
from arena_stream.schemas import DeadLetter, Game, Judgment, Message
from tests.test_judge_health import dead


def judgment(bid: str, s_ab: tuple[float, float], s_ba: tuple[float, float], *,
             judge: str = "big", template: str = "t1", attempts: tuple[int, int] = (1, 1),
             a: str = "x", b: str = "y") -> Judgment:
    """A judgment from its two games' scores, each as (score of a, score of b)."""
    games = [Game(order="ab", score_a=s_ab[0], score_b=s_ab[1], raw="", attempts=attempts[0]),
             Game(order="ba", score_a=s_ba[0], score_b=s_ba[1], raw="", attempts=attempts[1])]
    mean_a, mean_b = (s_ab[0] + s_ba[0]) / 2, (s_ab[1] + s_ba[1]) / 2
    winner = "tie" if mean_a == mean_b else ("model_a" if mean_a > mean_b else "model_b")
    return Judgment(battle_id=bid, prompt_id="p", model_a=a, model_b=b, player_a=a, player_b=b,
                    winner=winner, score_a=mean_a, score_b=mean_b, margin=abs(mean_a - mean_b),
                    games=games, rule="", judge_model=judge, template_version=template,
                    messages=[Message("user", "q")], answer_a="A", answer_b="B")


def biased(bid: str, **kw) -> Judgment:
    """A judge that always gives the answer shown first 8 and the other 3: its games disagree."""
    return judgment(bid, (8, 3), (3, 8), **kw)


def sound(bid: str, **kw) -> Judgment:
    """A judge that prefers a whichever position it is in: its games agree."""
    return judgment(bid, (8, 3), (7, 4), **kw)


FLOOR = AgreementFloor(min_agreement=0.6, min_judgments=20, window=50)


def test_a_position_biased_judge_is_caught_and_a_sound_one_is_not() -> None:
    js = [biased(f"b{i}") for i in range(30)] + [sound(f"s{i}", judge="fair") for i in range(30)]
    by = {q.judge: q for q in judge_quality(js, [], floor=FLOOR)}
    bad, good = by["big"], by["fair"]
    assert (bad.agreement, bad.first_position_rate, bad.agreement_n) == (0.0, 1.0, 30)
    assert bad.tie_rate == 1.0 and bad.margin.quantiles["p50"] == 0.0
    assert "agree on 0% of the last 30 battles" in bad.warning
    assert "prefers the answer shown first in 100%" in bad.warning
    assert (good.agreement, good.first_position_rate, good.warning) == (1.0, 0.5, "")
    assert good.margin.quantiles == {"p10": 4.0, "p25": 4.0, "p50": 4.0, "p75": 4.0, "p90": 4.0}
    # the Wilson interval is honest at 0 and 1: it never collapses onto the point
    assert bad.agreement_low == 0.0 and 0.1 < bad.agreement_high < 0.12
    assert 0.88 < good.agreement_low < 0.9 and good.agreement_high == 1.0


def test_no_warning_before_enough_battles_nor_with_the_floor_off() -> None:
    few = judge_quality([biased(f"b{i}") for i in range(19)], [], floor=FLOOR)[0]
    assert few.agreement == 0.0 and few.warning == ""
    off = AgreementFloor(min_agreement=0.0, min_judgments=1, window=10)
    assert judge_quality([biased(f"b{i}") for i in range(30)], [], floor=off)[0].warning == ""


def test_a_judge_that_degrades_is_warned_on_its_recent_battles() -> None:
    # 200 sound battles, then 40 biased: overall 83%, the last 50 only 20%
    js = [sound(f"s{i}") for i in range(200)] + [biased(f"b{i}") for i in range(40)]
    q = judge_quality(js, [], floor=FLOOR)[0]
    assert q.agreement == pytest.approx(200 / 240, abs=1e-4) and q.agreement > 0.6
    assert (q.recent_agreement, q.recent_n) == (0.2, 50)
    assert "agree on 20% of the last 50 battles" in q.warning


def test_the_warning_is_a_pure_function_of_the_numbers() -> None:
    q = judge_quality([sound(f"s{i}") for i in range(12)] + [biased(f"b{i}") for i in range(10)],
                      [], floor=FLOOR)[0]
    assert q.recent_agreement == pytest.approx(12 / 22, abs=1e-4)
    assert q.warning and agreement_warning(q, FLOOR) == q.warning
    assert agreement_warning(q, AgreementFloor(min_agreement=0.5, min_judgments=20)) == ""
    assert agreement_warning(q, AgreementFloor(min_agreement=0.6, min_judgments=23)) == ""


def test_first_position_rate_counts_decisive_games_only() -> None:
    # game 1 (a first) a wins, game 2 (b first) a wins: one first-shown win, one second
    # then a battle whose 'ba' game is a tie: only its 'ab' game counts (first shown wins)
    js = [judgment("1", (9, 2), (9, 2)), judgment("2", (9, 2), (5, 5))]
    q = judge_quality(js, [])[0]
    assert (q.decisive_games, q.games) == (3, 4)
    assert q.first_position_rate == pytest.approx(2 / 3, abs=1e-4)
    assert q.agreement == 0.5  # the second battle's games name a winner and a tie


def test_failures_retries_and_where_dead_letters_go() -> None:
    js = [sound(f"s{i}", attempts=(1, 3) if i < 2 else (1, 1)) for i in range(8)]
    letters = [dead("x", "y", "d1", "unparseable"), dead("x", "y", "d2", "ambiguous"),
               dead("x", "y", "d3", "timeout"), dead("x", "y", "d3", "timeout"),  # once
               DeadLetter(stage="intake", reason="invalid_json", error="", topic="p")]
    q = judge_quality(js, letters, fallback=("new", "t9"))[0]
    assert (q.dead_letters, q.verdict_failures, q.other_failures) == (3, 2, 1)
    assert q.failure_reasons == {"ambiguous": 1, "timeout": 1, "unparseable": 1}
    assert q.verdict_failure_rate == pytest.approx(2 / 11, abs=1e-4)
    assert q.failure_rate == pytest.approx(3 / 11, abs=1e-4)
    assert q.retry_rate == pytest.approx(2 / 16) and q.calls_per_game == pytest.approx(20 / 16)
    # they go to the judge of the latest judgment
    both = [*js, biased("z", judge="other")]
    by = {q.judge: q for q in judge_quality(both, letters)}
    assert by["other"].dead_letters == 3 and by["big"].dead_letters == 0
    # before any judgment, to the fallback (the configured judge): it has its row
    alone = judge_quality([], letters, fallback=("new", "t9"))
    assert [(q.judge, q.judgments, q.dead_letters, q.agreement) for q in alone] == [
        ("new", 0, 3, None)]


def test_a_verifiers_games_say_nothing_about_position() -> None:
    checked = sound("v1", judge="verifier")
    checked.games = [msgspec.structs.replace(g, attempts=0, method="verifier", score_a=10,
                                             score_b=1) for g in checked.games]
    checked.rule = "verifier"
    q = judge_quality([checked, msgspec.structs.replace(checked, battle_id="v2")], [])[0]
    assert (q.judgments, q.games, q.agreement_n, q.decisive_games) == (2, 0, 0, 0)
    assert q.agreement is None and q.first_position_rate is None and q.retry_rate is None
    assert q.margin.quantiles["p50"] == checked.margin and q.warning == ""


def test_two_judges_and_a_redelivered_judgment() -> None:
    js = [sound("s1"), sound("s1"), sound("s1", template="t2"), biased("s1", judge="small")]
    rows = [(q.judge, q.template_version, q.judgments) for q in judge_quality(js, [])]
    assert rows == [("big", "t1", 1), ("big", "t2", 1), ("small", "t1", 1)]


def test_margin_quantiles() -> None:
    from collections import Counter

    assert margin_summary(Counter()) == MarginSummary(count=0, mean=None, quantiles={},
                                                      max=None)
    steps = Counter({m: 1 for m in range(101)})  # margins 0.00, 0.01, ..., 1.00
    summary = margin_summary(steps)
    assert summary.quantiles == {"p10": 0.1, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p90": 0.9}
    assert (summary.count, summary.mean, summary.max) == (101, 0.5, 1.0)


def test_wilson_interval() -> None:
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)


def test_monitor_record_by_record_matches_the_whole_logs() -> None:
    rng = random.Random(3)
    js = []
    for i in range(120):
        s = (rng.randint(1, 10), rng.randint(1, 10))
        t = (rng.randint(1, 10), rng.randint(1, 10))
        js.append(judgment(f"b{i}", s, t, a=rng.choice("pqr"), b="s"))
    letters = [dead("p", "s", f"d{i}", "unparseable") for i in range(6)]
    floor = AgreementFloor(min_agreement=0.9, min_judgments=20, window=50)
    whole = health_report(js, letters, floor=floor, fallback=("big", "t1"))
    monitor = JudgeMonitor(floor, ("big", "t1"))
    for j in js:
        assert monitor.add_record("judgments", msgspec.json.encode(j))
    for d in letters:
        assert monitor.add_record("deadletter", msgspec.json.encode(d))
    intake = DeadLetter(stage="intake", reason="invalid_json", error="", topic="p")
    assert not monitor.add_record("deadletter", msgspec.json.encode(intake))
    live = monitor.report()
    assert msgspec.to_builtins(live) == msgspec.to_builtins(whole)
    assert whole.judges[0].warning and whole.warnings == [whole.judges[0].warning]


def test_health_metrics() -> None:
    js = [biased(f"b{i}") for i in range(30)]
    report = health_report(js, [dead("x", "y", "d", "ambiguous")], floor=FLOOR,
                           fallback=("big", "t1"))
    samples = {(name, tuple(sorted(labels.items()))): value
               for name, labels, value in health_metrics(report)}
    judge = (("judge", "big"), ("template", "t1"))
    assert samples[("arena_judge_judgments_total", judge)] == 30
    assert samples[("arena_judge_position_agreement", judge)] == 0.0
    assert samples[("arena_judge_first_position_rate", judge)] == 1.0
    assert samples[("arena_judge_agreement_warning", judge)] == 1.0
    verdict = (("judge", "big"), ("kind", "verdict"), ("template", "t1"))
    call = (("judge", "big"), ("kind", "other"), ("template", "t1"))
    assert samples[("arena_judge_failures_total", verdict)] == 1
    assert samples[("arena_judge_failures_total", call)] == 0
    median = (("judge", "big"), ("quantile", "0.5"), ("template", "t1"))
    assert samples[("arena_judge_margin", median)] == 0.0
    assert samples[("arena_judge_margin_count", judge)] == 30
    # the per-player samples are there too
    assert samples[("arena_judge_dead_letters_total", (("model", "x"),))] == 1
    # a rate with nothing to divide is left out, not reported as 0
    empty = health_metrics(health_report([], [dead("x", "y", "d")], fallback=("big", "t1")))
    assert not any(name == "arena_judge_position_agreement" for name, _, _ in empty)


def test_floor_keys_are_checked() -> None:
    from arena_stream.config import ConfigError, loads

    base = ('[[players]]\nname = "t"\nrole = "target"\n[[players]]\nname = "c"\n'
            '[judge]\nmodel = "j"\n')
    assert AgreementFloor.from_config(loads(base).judge) == AgreementFloor()
    for bad, message in [
        ("min_agreement = 1.5", r"judge\.min_agreement = 1\.5 is out of range: must be >= 0 "),
        ("agreement_window = 0", r"judge\.agreement_window = 0 is out of range: must be >= 1"),
        ("agreement_min_judgments = 60\nagreement_window = 40",
         r"agreement_min_judgments \(60\) cannot exceed agreement_window \(40\)"),
    ]:
        with pytest.raises(ConfigError, match=message):
            loads(base + bad + "\n")
    floor = AgreementFloor.from_config(loads(base + "min_agreement = 0.7\n"
                                             "agreement_min_judgments = 5\n"
                                             "agreement_window = 9\n").judge)
    assert floor == AgreementFloor(min_agreement=0.7, min_judgments=5, window=9)


def test_warning_changes_say_each_change_once() -> None:
    monitor = JudgeMonitor(AgreementFloor(min_agreement=0.6, min_judgments=5, window=10))
    for i in range(4):
        monitor.add_judgment(biased(f"b{i}"))
    assert monitor.warning_changes() == []  # too few battles yet
    monitor.add_judgment(biased("b4"))
    [(on, line)] = monitor.warning_changes()
    assert on and "agree on 0% of the last 5 battles" in line
    monitor.add_judgment(biased("b5"))
    assert monitor.warning_changes() == []  # still on: said once
    for i in range(10):
        monitor.add_judgment(sound(f"s{i}"))
    assert monitor.warning_changes() == [
        (False, "judge big (t1): its two games agree on 100% of the last 10 battles again")]
    assert monitor.warning_changes() == []
