"""The embedded default end to end: bundled SmolLM2 as players and judge, embedded broker."""

from __future__ import annotations

import json

import pytest

from arena_stream.cli.entry import main as cli

pytestmark = pytest.mark.slow


def test_run_embedded_default_plays_judges_and_rates(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the run's data directory lands here
    assert cli(["run", "--limit", "3", "--no-train", "--no-eval", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    by_model = {r["model"]: r for r in rows}
    # target-vs-competitors: 3 prompts x 3 competitors, each battle judged (the verifier)
    assert set(by_model) == {"target@v0", "reference", "sage", "spark"}
    assert by_model["target@v0"]["battles"] == 9
    assert all(by_model[m]["battles"] == 3 for m in ("reference", "sage", "spark"))
    assert by_model["reference"]["losses"] == 0  # its answers pass every check
    assert sum(r["wins"] + r["losses"] + r["ties"] for r in rows) == 18
    assert abs(sum(r["rating"] for r in rows) - 4000) < 0.01  # zero-sum (4-decimal rounding)


def test_logprob_judge_always_gives_a_verdict() -> None:
    import asyncio

    from arena_stream.config import BattlesConfig, JudgeConfig
    from arena_stream.judges import build_judge
    from arena_stream.schemas import Battle, Message

    # the in-process judge the embedded default used before its verifier
    spec = JudgeConfig(backend="transformers", model="smollm2", scoring="logprobs",
                       template="compact", quantize=True)
    judge = build_judge(spec, BattlesConfig())
    battle = Battle(id="b-x", prompt_id="p", mode="target-vs-competitors",
                    messages=[Message("user", "What is the capital of France?")],
                    model_a="a", model_b="b", player_a="a", player_b="b",
                    answer_a="The capital of France is Paris.", answer_b="Bananas are yellow.")
    verdict = asyncio.run(judge.judge(battle))
    assert verdict.winner in ("model_a", "model_b", "tie")
    assert all(g.method == "logprobs" and 1.0 <= g.score_a <= 9.0 for g in verdict.games)
    # the scoring pass's prompt, counted by the model's own tokenizer; nothing written
    assert all(g.token_source == "reported" and g.prompt_tokens > 50
               and g.completion_tokens == 0 for g in verdict.games)
    assert [g.order for g in verdict.games] == ["ab", "ba"]
