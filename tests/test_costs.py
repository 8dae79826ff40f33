"""Tokens and cost: counting, pricing, the budget, and `arena-stream costs` on a real run."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest

from arena_stream.arena.battles import reported_completion_tokens
from arena_stream.arena.costs import Budget, CostTally, Price, cost_report, metric_samples
from arena_stream.arena.tokens import count_tokens, with_token_counts
from arena_stream.config import ConfigError, loads
from arena_stream.schemas import Game, Generation, Judgment, Message
from tests.openai_stub import OpenAIStub, Reply, completion

PRICES = """
[[players]]
name = "target"
role = "target"
model = "t"
price_in_per_mtok = 1.0
price_out_per_mtok = 2.0

[[players]]
name = "comp"
model = "c"
price_in_per_mtok = 0.5
price_out_per_mtok = 1.5

[judge]
model = "judge"
price_in_per_mtok = 3.0
price_out_per_mtok = 6.0
"""


def gen(player: str, model: str, prompt_tokens: int, completion_tokens: int, *,
        source: str = "reported", ok: bool = True, answer: str = "an answer") -> Generation:
    return Generation(id=f"p/{model}", prompt_id="p", player=player, model=model,
                      messages=[Message("user", "what is two plus two")], answer=answer, ok=ok,
                      prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                      token_source=source)  # type: ignore[arg-type]


def judged(bid: str, a: str, b: str, tokens: list[tuple[int, int]], *, judge: str = "judge",
           source: str = "reported") -> Judgment:
    games = [Game(order=o, score_a=7, score_b=3, raw="", prompt_tokens=p, completion_tokens=c,
                  token_source=source)  # type: ignore[arg-type]
             for o, (p, c) in zip(("ab", "ba"), tokens, strict=True)]
    return Judgment(battle_id=bid, prompt_id="p", model_a=a, model_b=b, player_a=a.split("@")[0],
                    player_b=b, winner="model_a", score_a=7, score_b=3, margin=4, games=games,
                    rule="agree", judge_model=judge, template_version="t1",
                    messages=[Message("user", "q")], answer_a="A", answer_b="B")


def test_missing_counts_are_estimated_and_say_so() -> None:
    g = Generation(id="p/x", prompt_id="p", player="x", model="x", answer="Four, of course.",
                   messages=[Message("system", "Be brief."), Message("user", "2 + 2?")])
    filled = with_token_counts(g)
    assert filled.token_source == "counted" and g.token_source == ""  # a copy, not a change
    assert filled.prompt_tokens == count_tokens("Be brief.") + count_tokens("2 + 2?") == 7
    assert filled.completion_tokens == count_tokens("Four, of course.") == 5  # 3 words, 2 marks
    reported = with_token_counts(msgspec.structs.replace(g, prompt_tokens=30,
                                                         completion_tokens=5))
    assert (reported.prompt_tokens, reported.completion_tokens,
            reported.token_source) == (30, 5, "reported")
    half = with_token_counts(msgspec.structs.replace(g, prompt_tokens=30))
    assert (half.prompt_tokens, half.completion_tokens, half.token_source) == (30, 5, "counted")
    failed = msgspec.structs.replace(g, ok=False, answer="")
    assert with_token_counts(failed) == failed  # what a failed call cost is not known
    # style control never compares a server's count with an estimate
    assert reported_completion_tokens(reported) == 5
    assert reported_completion_tokens(filled) == 0


def test_prices_are_checked() -> None:
    base = PRICES.replace("price_in_per_mtok = 0.5", "price_in_per_mtok = -1")
    with pytest.raises(ConfigError, match=r"players\[comp\]\.price_in_per_mtok = -1 is out of "
                                          r"range: must be >= 0"):
        loads(base)
    with pytest.raises(ConfigError, match=r"judge\.price_out_per_mtok = inf must be a finite"):
        loads(PRICES.replace("price_out_per_mtok = 6.0", "price_out_per_mtok = inf"))
    with pytest.raises(ConfigError, match=r"budget\.usd = -5 is out of range: must be >= 0"):
        loads(PRICES + "\n[budget]\nusd = -5\n")
    assert loads(PRICES + "\n[budget]\nusd = 2.5\n").budget.usd == 2.5
    assert Price(1.0, 2.0).cost(1_000_000, 500_000) == 2.0


def test_report_by_model_and_judge_with_cost_per_battle() -> None:
    config = loads(PRICES + "\n[budget]\nusd = 2.0\n")
    gens = [gen("target", "target@v0", 100_000, 10_000), gen("target", "target@v1", 0, 0,
                                                               source="", answer="one two"),
            gen("comp", "comp", 200_000, 20_000), gen("comp", "comp", 0, 0, ok=False),
            gen("gone", "gone", 1_000, 1_000)]
    js = [judged("b1", "target@v0", "comp", [(50_000, 1_000), (50_000, 1_000)]),
          judged("b2", "target@v1", "comp", [(40_000, 0), (40_000, 0)], source="counted"),
          judged("b2", "target@v1", "comp", [(40_000, 0), (40_000, 0)], source="counted"),
          judged("b3", "target@v0", "comp", [(10, 10), (10, 10)], judge="old")]
    report = cost_report(config, gens, js)
    by = {m.model: m for m in report.models}
    v0, v1, comp, gone = by["target@v0"], by["target@v1"], by["comp"], by["gone"]
    assert v0.cost_usd == pytest.approx(0.1 + 0.02) and v0.battles == 2
    assert v0.cost_per_battle_usd == pytest.approx(0.06)
    # recorded without counts by an older producer: estimated from the text
    assert (v1.prompt_tokens, v1.completion_tokens, v1.estimated) == (5, 2, 1)
    assert comp.cost_usd == pytest.approx(0.1 + 0.03) and (comp.failed, comp.battles) == (1, 3)
    assert not gone.priced and gone.cost_usd == 0.0
    jby = {j.judge: j for j in report.judges}
    judge, old = jby["judge"], jby["old"]
    # a judgment delivered twice was paid for twice; its battle counts once
    assert (judge.judgments, judge.battles, judge.estimated_games) == (3, 2, 4)
    assert judge.prompt_tokens == 260_000 and judge.completion_tokens == 2_000
    assert judge.cost_usd == pytest.approx(0.78 + 0.012)
    assert judge.cost_per_battle_usd == pytest.approx(0.792 / 2)
    assert not old.priced and old.cost_usd == 0.0
    total = v0.cost_usd + v1.cost_usd + comp.cost_usd + judge.cost_usd
    assert report.total_cost_usd == pytest.approx(total) and report.battles == 3
    assert report.cost_per_battle_usd == pytest.approx(total / 3)
    assert report.budget_usd == 2.0 and report.budget_left_usd == pytest.approx(2.0 - total)
    notes = "\n".join(report.notes)
    assert "no price for gone" in notes and "judge old is not the configured" in notes
    assert "5 call(s) reported no token usage" in notes
    samples = {(n, tuple(sorted(labels.items()))): v for n, labels, v in metric_samples(report)}
    assert samples[("arena_cost_usd_total", ())] == pytest.approx(total)
    assert samples[("arena_judge_cost_usd_total", (("judge", "judge"), ("template", "t1")))] \
        == pytest.approx(0.792)


def test_a_verifier_is_free_and_an_ensemble_pays_for_its_model() -> None:
    config = loads(PRICES)
    checked = judged("b1", "target@v0", "comp", [(0, 0), (0, 0)], judge="verifier", source="")
    checked.games = [msgspec.structs.replace(g, attempts=0, method="verifier")
                     for g in checked.games]
    ensemble_llm = judged("b2", "target@v0", "comp", [(1_000, 100), (1_000, 100)],
                          judge="verifier+judge")
    ensemble_checked = msgspec.structs.replace(checked, battle_id="b3",
                                               judge_model="verifier+judge")
    report = cost_report(config, [], [checked, ensemble_llm, ensemble_checked])
    by = {j.judge: j for j in report.judges}
    verifier, ensemble = by["verifier"], by["verifier+judge"]
    assert verifier.priced and verifier.cost_usd == 0.0
    assert (verifier.games, verifier.calls, verifier.unrecorded_games) == (0, 0, 0)
    assert ensemble.priced and (ensemble.judgments, ensemble.games, ensemble.battles) == (2, 2, 2)
    assert ensemble.cost_usd == pytest.approx((2_000 * 3.0 + 200 * 6.0) / 1e6)
    assert report.notes == []
    budget = Budget(config)
    for j in (checked, ensemble_llm, ensemble_checked):
        budget.add(j)
    assert budget.judge_usd == pytest.approx(ensemble.cost_usd)


def test_budget_counts_every_record_and_says_why() -> None:
    config = loads(PRICES + "\n[budget]\nusd = 0.25\n")
    budget = Budget(config)
    assert budget.enabled and not budget.exhausted() and "within budget" in budget.why()
    assert budget.add(gen("target", "target@v3", 100_000, 0)) == pytest.approx(0.1)
    assert budget.add_record("generations", msgspec.json.encode(gen("comp", "comp", 100_000,
                                                                    0)))
    assert not budget.add_record("generations", b"{not json")
    assert not budget.add_record("ratings", b"{}")
    assert not budget.exhausted() and budget.remaining() == pytest.approx(0.1)
    j = judged("b1", "target@v3", "comp", [(10_000, 5_000), (10_000, 5_000)])
    assert budget.add_record("judgments", msgspec.json.encode(j))
    assert budget.spent == pytest.approx(0.15 + 0.12) and budget.exhausted()
    why = budget.why()
    assert why.startswith("budget spent: $0.2700 of the $0.25 budget (generations $0.1500, "
                          "judge $0.1200)") and "new prompts are not taken" in why
    none = Budget(loads(PRICES))
    none.add(gen("target", "target@v0", 10**9, 10**9))
    assert not none.enabled and not none.exhausted() and none.remaining() is None
    # the tally and the budget price alike
    tally = CostTally(config)
    tally.add_generation(gen("target", "target@v3", 100_000, 0))
    tally.add_generation(gen("comp", "comp", 100_000, 0))
    tally.add_judgment(j)
    assert tally.report().total_cost_usd == pytest.approx(budget.spent)


# -- a real run: the worker on the embedded broker, players and judge on a real HTTP server --

PLAYERS = """
[[players]]
name = "target"
role = "target"
backend = "openai"
base_url = "{url}"
model = "t"
backoff_s = 0.01
price_in_per_mtok = 1.0
price_out_per_mtok = 2.0

[[players]]
name = "comp"
backend = "openai"
base_url = "{url}"
model = "c"
backoff_s = 0.01
price_in_per_mtok = 0.5
price_out_per_mtok = 1.5
"""
TARGET_ANSWER = "short answer here"
COMP_ANSWER = "a much longer answer"
VERDICT = '{"explanation": "first", "score_1": 8, "score_2": 3}'


def first_shown_server(path: str, body: dict[str, Any]) -> Reply:
    """The target's server reports usage, the competitor's reports none; the judge always
    prefers the answer shown first (so its two games never agree)."""
    if body["model"] == "judge":
        return Reply(body=completion(VERDICT, prompt_tokens=200))
    if body["model"] == "t":
        return Reply(body=completion(TARGET_ANSWER, prompt_tokens=11))
    reply = completion(COMP_ANSWER)
    del reply["usage"]
    return Reply(body=reply)


async def test_costs_judge_health_and_budget_from_a_real_run(make_config, tmp_path,
                                                             capsys) -> None:
    from arena_stream.cli.entry import main as cli
    from arena_stream.kafka.io import read_all
    from arena_stream.streams.worker import running_worker, wait_until_ready
    from tests.helpers import count, prompt, publish_raw, wait_for

    n = 4
    with OpenAIStub(first_shown_server) as stub:
        config = make_config(stub.base_url, players=PLAYERS.format(url=stub.base_url),
                             extra="\n[budget]\nusd = 0.01\n")
        config.judge.price_in_per_mtok, config.judge.price_out_per_mtok = 3.0, 6.0
        config.judge.agreement_min_judgments = 3
        await publish_raw(config, [prompt(f"q{i}", f"question {i}") for i in range(n)])
        async with running_worker(config) as app:
            await wait_until_ready(app)

            async def settled() -> bool:
                return (await count(config, "judgments") >= n
                        and await count(config, "ratings") >= 2 * n)

            await wait_for(settled, timeout=90)
        judge_prompts = [body["messages"][-1]["content"] for _, body, _ in stub.requests
                         if body.get("model") == "judge"]
    path = tmp_path / "arena.toml"
    path.write_bytes(msgspec.toml.encode(config))

    # what the servers said, priced by hand
    target_cost = n * (11 * 1.0 + count_tokens(TARGET_ANSWER) * 2.0) / 1e6
    assert count_tokens(TARGET_ANSWER) == 3 == len(TARGET_ANSWER.split())
    comp_prompt = sum(count_tokens(f"question {i}") for i in range(n))  # estimated
    comp_cost = (comp_prompt * 0.5 + n * count_tokens(COMP_ANSWER) * 1.5) / 1e6
    judge_cost = 2 * n * (200 * 3.0 + len(VERDICT.split()) * 6.0) / 1e6
    assert len(judge_prompts) == 2 * n

    capsys.readouterr()
    assert await asyncio.to_thread(cli, ["costs", "--config", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    by = {m["model"]: m for m in report["models"]}
    assert by["target@v0"]["generations"] == n and by["target@v0"]["estimated"] == 0
    assert by["target@v0"]["prompt_tokens"] == 11 * n
    assert by["target@v0"]["cost_usd"] == pytest.approx(target_cost)
    assert by["comp"]["estimated"] == n and by["comp"]["prompt_tokens"] == comp_prompt
    assert by["comp"]["cost_usd"] == pytest.approx(comp_cost)
    assert by["comp"]["cost_per_battle_usd"] == pytest.approx(comp_cost / n)
    [judge] = report["judges"]
    assert (judge["judge"], judge["judgments"], judge["games"], judge["calls"]) == (
        "judge", n, 2 * n, 2 * n)
    assert judge["prompt_tokens"] == 200 * 2 * n and judge["estimated_games"] == 0
    assert judge["cost_usd"] == pytest.approx(judge_cost)
    total = target_cost + comp_cost + judge_cost
    assert report["total_cost_usd"] == pytest.approx(total) and report["battles"] == n
    assert report["cost_per_battle_usd"] == pytest.approx(total / n)
    assert report["budget_usd"] == 0.01 and report["budget_left_usd"] == pytest.approx(
        0.01 - total)

    assert await asyncio.to_thread(cli, ["costs", "--config", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"over {n} judged battles: ${total / n:.6f} per battle" in text
    assert f"budget $0.010000: ${0.01 - total:.6f} left" in text
    assert f"note: {n} call(s) reported no token usage" in text

    # the same topics fed to the budget the worker will keep: not yet spent, then spent
    budget = Budget(config)
    for key in ("generations", "judgments"):
        for record in await read_all(config, key):
            assert budget.add_record(key, record.value)
    assert budget.spent == pytest.approx(total) and not budget.exhausted()
    config.budget.usd = total / 2
    tight = Budget(config)
    for key in ("generations", "judgments"):
        for record in await read_all(config, key):
            tight.add_record(key, record.value)
    assert tight.exhausted() and tight.why().startswith("budget spent:")

    # the judge's health from the same run: its two games never agree, and it says so
    assert await asyncio.to_thread(cli, ["ratings", "--config", str(path), "--json"]) == 0
    health = json.loads(capsys.readouterr().out)
    [q] = health["judges"]
    assert (q["judge"], q["judgments"], q["agreement"], q["first_position_rate"]) == (
        "judge", n, 0.0, 1.0)
    assert q["margin"]["quantiles"]["p50"] == 0.0 and q["tie_rate"] == 1.0
    assert health["warnings"] == [q["warning"]] and "agree on 0% of the last 4" in q["warning"]
    assert await asyncio.to_thread(cli, ["ratings", "--config", str(path)]) == 0
    text = capsys.readouterr().out
    assert "judge judge (" in text and "games agree 0% [0%-49%]" in text
    assert "warning: judge judge" in text
