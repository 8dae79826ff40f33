"""Leaderboards per category and over hard prompts: sources, joins, the CLI."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from arena_stream.ratings import bradley_terry as bt
from arena_stream.ratings import categories as cat
from arena_stream.schemas.events import Judgment


def _judgment(i: int, a: str, b: str, winner: str, category: str | None) -> Judgment:
    return Judgment(battle_id=f"b{i}", prompt_id=f"p{i % 40}", model_a=a, model_b=b, player_a=a,
                    player_b=b, winner=winner, score_a=0, score_b=0, margin=0, games=[],  # type: ignore[arg-type]
                    rule="r", judge_model="j", template_version="t", messages=[], answer_a="",
                    answer_b="", ts=float(i), category=category)


def judgments() -> list[Judgment]:
    """coder wins coding 80%, writer wins writing 80%; prompts p0..p39, category by prompt."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(800):
        category = "coding" if (i % 40) < 20 else "writing"
        coder_wins = rng.random() < (0.8 if category == "coding" else 0.2)
        a, b = ("coder", "writer") if i % 2 else ("writer", "coder")
        winner = "model_a" if (a == "coder") == coder_wins else "model_b"
        out.append(_judgment(i, a, b, winner, category))
    return out


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch):
    from arena_stream.cli import entry as cli_module

    monkeypatch.setattr(cli_module, "COMMANDS", {"leaderboard": "leaderboard"})
    monkeypatch.setitem(sys.modules, "arena_stream.kafka.replay",
                        types.SimpleNamespace(read_judgments=lambda config, **kw: judgments()))
    monkeypatch.setattr("arena_stream.config.load", lambda path: object())
    return cli_module.main


def test_category_from_the_judgments_flips_the_order(cli, capsys) -> None:
    assert cli(["leaderboard", "--config", "x.toml", "--category", "coding", "--json",
                "--method", "sandwich"]) == 0
    coding = json.loads(capsys.readouterr().out)
    assert coding[0]["model"] == "coder" and coding[0]["battles"] == 400
    assert cli(["leaderboard", "--config", "x.toml", "--category", "writing", "--json",
                "--method", "sandwich"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["model"] == "writer"
    assert cli(["leaderboard", "--config", "x.toml", "--category", "maths"]) == 2
    assert "no battles in category 'maths'; categories: coding, writing" in \
        capsys.readouterr().err


def test_by_category_table_and_json(cli, capsys) -> None:
    assert cli(["leaderboard", "--config", "x.toml", "--by-category", "--method", "sandwich"]) == 0
    out = capsys.readouterr().out
    assert "overall" in out and "coding" in out and "writing" in out and "hard" not in out
    assert cli(["leaderboard", "--config", "x.toml", "--by-category", "--json",
                "--method", "sandwich"]) == 0
    boards = {b["category"]: b for b in json.loads(capsys.readouterr().out)}
    assert set(boards) == {"overall", "coding", "writing"}
    assert boards["coding"]["rows"][0]["model"] == "coder"
    assert boards["writing"]["rows"][0]["model"] == "writer"
    assert boards["overall"]["battles"] == 800


def test_testset_difficulty_gives_the_hard_view(cli, tmp_path: Path, capsys) -> None:
    testset = tmp_path / "testset.jsonl"
    # p0..p9 are hard coding prompts (difficulty 8), p10..p19 easy; p20..p39 writing
    lines = [{"id": f"p{i}", "prompt": "q", "difficulty": 8.0 if i < 10 else 3.0,
              "subset": "hard" if i < 10 else "diverse"} for i in range(40)]
    testset.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert cli(["leaderboard", "--config", "x.toml", "--testset", str(testset), "--hard",
                "--json", "--method", "sandwich"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sum(r["battles"] for r in rows) == 2 * 200  # 10 hard prompts of 40, 800 battles
    assert cli(["leaderboard", "--config", "x.toml", "--testset", str(testset), "--hard",
                "--hard-threshold", "9", "--json"]) == 2
    assert "no battles on hard prompts" in capsys.readouterr().err
    assert cli(["leaderboard", "--config", "x.toml", "--testset", str(testset), "--by-category",
                "--json", "--method", "sandwich"]) == 0
    boards = {b["category"]: b for b in json.loads(capsys.readouterr().out)}
    assert boards["hard prompts"]["battles"] == 200
    assert cli(["leaderboard", "--config", "x.toml", "--hard"]) == 2
    assert "no prompt difficulty in these battles" in capsys.readouterr().err


def test_testset_supplies_categories_to_a_battles_file(tmp_path: Path) -> None:
    battles = pl.DataFrame({"model_a": ["a", "b", "a"], "model_b": ["b", "a", "b"],
                            "winner": ["model_a", "model_b", "tie"],
                            "prompt_id": ["p1", "p2", "p3"], "category": [None, None, "mine"]})
    testset = tmp_path / "t.jsonl"
    testset.write_text(json.dumps({"id": "p1", "category": "maths", "difficulty": 9}) + "\n"
                       + json.dumps({"id": "p3", "category": "other"}) + "\n")
    joined = cat.attach_prompt_info(battles, cat.read_prompt_info(testset))
    assert joined["category"].to_list() == ["maths", None, "mine"]  # a battle's own one wins
    assert cat.hard_mask(joined).to_list() == [True, False, False]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "p1"}\nnot json\n')
    with pytest.raises(bt.BattleDataError, match=r"bad.jsonl:2: not JSON"):
        cat.read_prompt_info(bad)


def test_lmarena_hard_prompt_criteria() -> None:
    def tag(n_true: int) -> dict:
        names = ["specificity", "domain_knowledge", "complexity", "problem_solving",
                 "creativity", "technical_accuracy", "real_world"]
        return {"criteria_v0.1": {k: i < n_true for i, k in enumerate(names)}}

    battles = pl.DataFrame({"model_a": ["a"] * 3, "model_b": ["b"] * 3, "winner": ["tie"] * 3,
                            "category_tag": [tag(7), tag(6), tag(5)]})
    assert cat.hard_mask(battles).to_list() == [True, True, False]


def test_loader_keeps_the_prompt_columns(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps({"model_a": "a", "model_b": "b", "winner": "tie",
                                "prompt_id": "p", "category": "c", "difficulty": 7,
                                "conversation_a": []}) + "\n")
    df = bt.load_battles(path, keep=cat.PROMPT_COLUMNS)
    assert df.columns == ["model_a", "model_b", "winner", "prompt_id", "category", "difficulty"]
