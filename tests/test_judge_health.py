"""Per-player judge dead letters and the suppression flag, as pure functions of the logs."""

from __future__ import annotations

import itertools
import math

import pytest

from arena_stream.ratings.judge_health import (
    JudgedPlayers,
    binomial_tail,
    judge_health,
    metric_samples,
)
from arena_stream.schemas import Battle, DeadLetter, Message, encode


def dead(model_a: str, model_b: str, bid: str, reason: str = "ambiguous") -> DeadLetter:
    battle = Battle(id=bid, prompt_id="p", mode="m", messages=[Message("user", "q")],
                    model_a=model_a, model_b=model_b, player_a=model_a, player_b=model_b,
                    answer_a="a", answer_b="b")
    return DeadLetter(stage="judge", reason=reason, error="e", topic="arena.battles",
                      original=encode(battle).decode(), ref=bid)


def arena(pairs: list[tuple[str, str]], prompts: int, suppressor: str | None,
          reason: str = "ambiguous") -> tuple[list[JudgedPlayers], list[DeadLetter]]:
    """Every pair battles on every prompt; battles with ``suppressor`` are dead-lettered."""
    judged, letters = [], []
    for n, (a, b) in itertools.product(range(prompts), pairs):
        bid = f"{n}-{a}-{b}"
        if suppressor in (a, b):
            letters.append(dead(a, b, bid, reason))
        else:
            judged.append(JudgedPlayers(bid, a, b))
    return judged, letters


def by_model(judged, letters) -> dict:
    return {h.model: h for h in judge_health(judged, letters)}


def test_round_robin_flags_only_the_player_whose_battles_vanish() -> None:
    players = ["good", "honest", "forger", "eraser"]
    health = by_model(*arena(list(itertools.combinations(players, 2)), 10, "eraser"))
    assert health["eraser"].suppression_suspected
    assert health["eraser"].dead_letters == 30 and health["eraser"].share == 1.0
    assert health["eraser"].baseline == 0.0 and "30 of 30" in health["eraser"].reason
    for other in ("good", "honest", "forger"):
        # a third of their battles vanished too (those against the eraser), but
        # two thirds of the battles without them did: nothing stands out
        assert not health[other].suppression_suspected
        assert health[other].dead_letters == 10 and health[other].judged == 20
        assert health[other].baseline == pytest.approx(2 / 3, abs=1e-4)


def test_target_vs_competitors_singles_out_the_common_player() -> None:
    star = [("target@v0", c) for c in ("c1", "c2", "c3")]
    health = by_model(*arena(star, 5, "target@v0"))
    assert health["target@v0"].suppression_suspected
    assert health["target@v0"].baseline is None and health["target@v0"].opponents_high == 3
    assert not any(health[c].suppression_suspected for c in ("c1", "c2", "c3"))

    # one competitor erasing its battles: it is flagged, the target (in every battle) is not
    health = by_model(*arena(star, 5, "c2"))
    assert health["c2"].suppression_suspected and health["c2"].baseline == 0.0
    assert not health["target@v0"].suppression_suspected
    assert health["target@v0"].opponents_high == 1


def test_nobody_is_flagged_without_a_comparison() -> None:
    health = by_model(*arena([("target@v0", "c1")], 20, "c1"))
    assert health["c1"].share == health["target@v0"].share == 1.0
    assert not any(h.suppression_suspected for h in health.values())


def test_a_judge_outage_or_a_broken_check_is_nobodys_fault() -> None:
    star = [("target@v0", c) for c in ("c1", "c2")]
    for reason in ("connect", "timeout", "http_503", "http_429", "no_checks", "bad_check"):
        health = by_model(*arena(star, 10, "target@v0", reason))
        assert health["target@v0"].outages == 20 and health["target@v0"].dead_letters == 0
        assert not any(h.suppression_suspected for h in health.values())


def test_each_battle_counts_once() -> None:
    judged = [JudgedPlayers("b1", "x", "y")]
    letters = [dead("x", "y", "b1"), dead("x", "y", "b2"), dead("x", "y", "b2", "http_500"),
               dead("x", "y", "b2", "ambiguous")]
    health = by_model(judged, letters)
    # b1 was dead-lettered, republished and judged: judged; b2 twice: one dead letter
    assert (health["x"].judged, health["x"].dead_letters, health["x"].outages) == (1, 1, 0)
    # dead letters of other stages, or with bytes that are no battle, are not the judge's
    other = DeadLetter(stage="intake", reason="invalid_json", error="", topic="t",
                       original="{", ref="p")
    garbage = DeadLetter(stage="judge", reason="internal_error", error="", topic="t",
                         original="{not a battle", ref="b9")
    assert by_model(judged, [other, garbage])["x"].battles == 1


def test_a_few_dead_letters_are_not_a_pattern() -> None:
    pairs = list(itertools.combinations(["a", "b", "c", "d"], 2))
    judged, _ = arena(pairs, 10, None)
    letters = [dead("a", "b", f"x{i}") for i in range(3)]  # 3 < min_dead
    assert not any(h.suppression_suspected for h in judge_health(judged, letters))


def test_binomial_tail() -> None:
    assert binomial_tail(0, 10, 0.3) == 1.0 and binomial_tail(11, 10, 0.3) == 0.0
    exact = sum(math.comb(10, k) * 0.3**k * 0.7 ** (10 - k) for k in range(4, 11))
    assert binomial_tail(4, 10, 0.3) == pytest.approx(exact, rel=1e-12)
    assert binomial_tail(9, 9, 0.01) == pytest.approx(1e-18, rel=1e-9)


def test_metric_samples() -> None:
    samples = metric_samples(judge_health(*arena([("a", "b"), ("a", "c"), ("b", "c")], 10,
                                                 "a")))
    flags = {labels["model"]: v for name, labels, v in samples
             if name == "arena_judge_suppression_suspected"}
    assert flags == {"a": 1.0, "b": 0.0, "c": 0.0}
    names = {name for name, _, _ in samples}
    assert {"arena_judge_dead_letters_total", "arena_judge_dead_letter_share"} <= names
