"""Prompts and battles from the files users already have, each format a real sample file."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from arena_stream.cli.entry import main
from arena_stream.config import LimitsConfig, loads
from arena_stream.datasets.formats import FieldMapping
from arena_stream.datasets.prompts import read_prompts
from arena_stream.datasets.sources import SourceOptions
from arena_stream.kafka.io import read_all
from arena_stream.offline.consistency import load_leaderboard
from arena_stream.ratings.bradley_terry import load_battles
from tests.conftest import config_text

LIMITS = LimitsConfig()

# The shapes of the public files, written here (nothing is downloaded).
MT_BENCH = [  # FastChat data/mt_bench/question.jsonl
    {"question_id": 81, "category": "writing", "turns": [
        "Compose an engaging travel blog post about a recent trip to Hawaii.",
        "Rewrite your previous response. Start every sentence with the letter A."]},
    {"question_id": 111, "category": "math", "turns": [
        "The vertices of a triangle are at points (0, 0), (-1, 1), and (3, 3). "
        "What is the area of the triangle?", "What's area of the circle circumscribing it?"],
     "reference": ["Area is 3", "5pi"]},
]
ARENA_HARD_V01 = [  # arena-hard-v0.1 question.jsonl
    {"question_id": "328c149ed45a41c0b9d6f14659e63599", "category": "arena-hard-v0.1",
     "cluster": "ABC Sequence Puzzles & Groups",
     "turns": [{"content": "Use ABC notation to write a melody in the style of a folk tune."}]},
]
ARENA_HARD_V2 = [  # arena-hard-v2.0 question.jsonl
    {"uid": "8ae2c7e4d6a94d3e", "category": "hard_prompt", "subcategory": "coding",
     "prompt": "Write a lock-free single-producer single-consumer queue in C++."},
]
LMSYS = [  # lmsys-chat-1m / chatbot_arena_conversations rows
    {"conversation_id": "33f01939a744455c869cb234afca47f1", "model": "vicuna-13b",
     "language": "English", "turn": 2, "conversation": [
         {"role": "user", "content": "What is the capital of France?"},
         {"role": "assistant", "content": "Paris."},
         {"role": "user", "content": "And its population?"},
         {"role": "assistant", "content": "About 2.1 million."}]},
    {"question_id": "58210e39b3fd4441a2bd4a518bb44c2d", "model_a": "chatglm-6b",
     "model_b": "koala-13b", "winner": "model_b", "turn": 1, "conversation_a": [
         {"role": "user", "content": "What is the difference between OpenCL and CUDA?"},
         {"role": "assistant", "content": "OpenCL and CUDA are ..."}]},
]
SHAREGPT = [
    {"id": "sg-1", "conversations": [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Name three primary colours."},
        {"from": "gpt", "value": "Red, yellow and blue."}]},
]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _by_id(found: Any) -> dict[str, Any]:
    return {line.prompt.id: line.prompt for line in found.good}


def test_mt_bench_question_file(tmp_path: Path) -> None:
    found = read_prompts(_jsonl(tmp_path / "question.jsonl", MT_BENCH), LIMITS)
    assert found.bad == []
    prompts = _by_id(found)
    assert set(prompts) == {"81", "111"}
    first = prompts["111"]
    assert [m.content for m in first.messages] == [MT_BENCH[1]["turns"][0]]
    assert first.category == "math"
    assert first.metadata["later_turns"] == [MT_BENCH[1]["turns"][1]]
    assert first.metadata["reference"] == ["Area is 3", "5pi"]
    assert first.metadata["format"] == "mt-bench"
    notes = found.notes("question.jsonl")
    assert "2 mt-bench" in notes[0]
    assert "2 later user turn(s) not played" in notes[1]


def test_arena_hard_question_files_both_versions(tmp_path: Path) -> None:
    found = read_prompts(_jsonl(tmp_path / "q.jsonl", ARENA_HARD_V01 + ARENA_HARD_V2), LIMITS)
    assert found.bad == []
    prompts = _by_id(found)
    v01 = prompts["328c149ed45a41c0b9d6f14659e63599"]
    assert v01.messages[0].content.startswith("Use ABC notation")
    assert v01.metadata["cluster"] == "ABC Sequence Puzzles & Groups"
    v2 = prompts["8ae2c7e4d6a94d3e"]
    assert v2.messages[0].role == "user" and v2.category == "hard_prompt"
    assert v2.metadata["subcategory"] == "coding" and v2.metadata["format"] == "arena-hard"


def test_lmsys_conversations_end_at_the_last_user_turn(tmp_path: Path) -> None:
    found = read_prompts(_jsonl(tmp_path / "lmsys.jsonl", LMSYS), LIMITS)
    assert found.bad == []
    prompts = _by_id(found)
    chat = prompts["33f01939a744455c869cb234afca47f1"]
    assert [m.role for m in chat.messages] == ["user", "assistant", "user"]
    assert chat.messages[-1].content == "And its population?"
    assert chat.metadata["language"] == "English"
    arena = prompts["58210e39b3fd4441a2bd4a518bb44c2d"]
    assert [m.role for m in arena.messages] == ["user"]


def test_sharegpt_roles_are_mapped(tmp_path: Path) -> None:
    found = read_prompts(_jsonl(tmp_path / "sharegpt.jsonl", SHAREGPT), LIMITS)
    (prompt,) = found.good
    assert [(m.role, m.content) for m in prompt.prompt.messages] == [
        ("system", "Be brief."), ("user", "Name three primary colours.")]


def test_our_format_is_kept_byte_for_byte_and_integer_ids_become_strings(tmp_path) -> None:
    ours = '{"id":"a1",   "prompt":"Hello?", "category":"chat"}'
    path = tmp_path / "ours.jsonl"
    path.write_text(ours + "\n" + json.dumps({"id": 7, "prompt": "Seven?"}) + "\n")
    found = read_prompts(path, LIMITS)
    assert found.bad == []
    assert found.good[0].raw == ours.encode()  # published unchanged
    assert found.good[1].prompt.id == "7"
    assert json.loads(found.good[1].raw)["id"] == "7"


def test_json_array_file(tmp_path: Path) -> None:
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(MT_BENCH, indent=2))
    found = read_prompts(path, LIMITS)
    assert sorted(_by_id(found)) == ["111", "81"]


def test_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "prompts.parquet"
    pl.DataFrame({"question_id": [1, 2], "category": ["a", None],
                  "turns": [["One?"], ["Two?", "And then?"]]}).write_parquet(path)
    found = read_prompts(path, LIMITS)
    assert found.bad == []
    prompts = _by_id(found)
    assert prompts["1"].messages[0].content == "One?" and prompts["2"].category is None


def test_hugging_face_dataset_on_disk_with_splits(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    rows = [{"prompt_id": "u1", "prompt": "Translate 'cat' to French.",
             "messages": [{"role": "user", "content": "Translate 'cat' to French."},
                          {"role": "assistant", "content": "chat"}]}]
    DatasetDict({
        "train": Dataset.from_list(rows),
        "test": Dataset.from_list([{**rows[0], "prompt_id": "u2"}]),
    }).save_to_disk(str(tmp_path / "ds"))
    found = read_prompts(tmp_path / "ds", LIMITS)
    assert [p.prompt.id for p in found.good] == ["u1"]  # train by default
    assert [m.role for m in found.good[0].prompt.messages] == ["user"]
    found = read_prompts(tmp_path / "ds", LIMITS, options=SourceOptions(split="test"))
    assert [p.prompt.id for p in found.good] == ["u2"]


def test_hub_dataset_not_cached_offline_is_one_line(tmp_path, capsys, monkeypatch,
                                                    broker) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    config = _config_file(tmp_path, broker, "hub")
    code = main(["publish", "hf://lmsys/no-such-dataset-for-tests", "--config", str(config)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "cannot load the Hugging Face dataset 'lmsys/no-such-dataset-for-tests'" in err[0]
    assert "HF_HUB_OFFLINE is set and it is not in the local cache" in err[0]


def test_fields_named_when_they_cannot_be_inferred(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "custom.jsonl", [
        {"qid": 10, "body": "What is 2 + 2?"},
        {"qid": 11, "body": "Name a prime."},
    ])
    found = read_prompts(path, LIMITS)
    assert len(found.bad) == 2 and found.good == []
    assert "name the one to use with --text-field" in found.bad[0][1]
    found = read_prompts(path, LIMITS, FieldMapping(id_field="qid", text_field="body"))
    assert found.bad == [] and sorted(_by_id(found)) == ["10", "11"]
    found = read_prompts(path, LIMITS, FieldMapping(id_field="nope", text_field="body"))
    assert "no field 'nope' (--id-field); fields: body, qid" in found.bad[0][1]


def test_alpaca_without_ids_gets_stable_content_ids(tmp_path: Path) -> None:
    rows = [{"instruction": "Summarise the text.", "input": "Cats sleep a lot.", "output": "x"},
            {"instruction": "Say hi.", "input": "", "output": "hi"}]
    first = read_prompts(_jsonl(tmp_path / "a.jsonl", rows), LIMITS)
    again = read_prompts(_jsonl(tmp_path / "b.jsonl", rows[::-1]), LIMITS)
    assert sorted(_by_id(first)) == sorted(_by_id(again))  # same content, same id
    summary = next(p for p in first.good if "Cats" in p.prompt.messages[0].content).prompt
    assert summary.id.startswith("p-")
    assert summary.messages[0].content == "Summarise the text.\n\nCats sleep a lot."
    assert "2 prompt(s) had no id field" in first.notes("a.jsonl")[-1]


def test_bad_records_are_reported_with_their_position(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"question_id": 1, "turns": ["ok"]}\n'
                    "not json\n"
                    '{"conversation": [{"role": "alien", "content": "hi"}], "id": "x"}\n'
                    '{"question_id": 1, "turns": ["again"]}\n')
    found = read_prompts(path, LIMITS)
    assert [n for n, _ in found.bad] == [2, 3, 4]
    assert "not valid JSON" in found.bad[0][1]
    assert "role 'alien'" in found.bad[1][1]
    assert "duplicate_id" in found.bad[2][1]


def _config_file(tmp_path: Path, broker: Any, tag: str) -> Path:
    path = tmp_path / f"{tag}.toml"
    path.write_text(config_text(bootstrap=broker.address, url="http://127.0.0.1:1/v1",
                                prefix=f"src{tag}.", app_id=f"src-{tag}",
                                data_dir=str(tmp_path / "d")))
    return path


def _published(config_path: Path) -> list[dict[str, Any]]:
    config = loads(config_path.read_text())
    return [json.loads(r.value) for r in asyncio.run(read_all(config, "prompts"))]


def test_publish_mt_bench_arena_hard_and_parquet_without_conversion(tmp_path, broker,
                                                                     capsys) -> None:
    parquet = tmp_path / "p.parquet"
    pl.DataFrame({"id": ["pq-1"], "prompt": ["From Parquet?"]}).write_parquet(parquet)
    config = _config_file(tmp_path, broker, "pub")
    for source in (_jsonl(tmp_path / "mt.jsonl", MT_BENCH),
                   _jsonl(tmp_path / "ah.jsonl", ARENA_HARD_V01 + ARENA_HARD_V2), parquet):
        assert main(["publish", str(source), "--config", str(config)]) == 0
    out = capsys.readouterr()
    assert "later user turn(s) not played" in out.err
    published = {p["id"]: p for p in _published(config)}
    assert set(published) == {"81", "111", "328c149ed45a41c0b9d6f14659e63599",
                              "8ae2c7e4d6a94d3e", "pq-1"}
    assert published["81"]["messages"] == [{"role": "user", "content": MT_BENCH[0]["turns"][0]}]
    assert published["pq-1"] == {"id": "pq-1", "prompt": "From Parquet?"}


def test_publish_from_stdin(tmp_path, broker, capsys, monkeypatch) -> None:
    data = "".join(json.dumps(r) + "\n" for r in SHAREGPT).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    config = _config_file(tmp_path, broker, "stdin")
    assert main(["publish", "-", "--config", str(config)]) == 0
    assert [p["id"] for p in _published(config)] == ["sg-1"]


def test_eval_testset_and_decontaminate_read_the_same_formats(tmp_path, capsys) -> None:
    from arena_stream.config import default_config
    from arena_stream.offline.decontaminate import read_tests
    from arena_stream.offline.evaluate import read_testset
    from arena_stream.offline.testset import read_prompts as testset_prompts

    mt = _jsonl(tmp_path / "mt.jsonl", MT_BENCH)
    assert [p.id for p in read_testset(mt, default_config())] == ["81", "111"]
    records, bad = testset_prompts(mt)
    assert bad == [] and json.loads(records[0].raw_line)["messages"][0]["role"] == "user"
    tests, problems = read_tests([mt])
    assert problems == [] and [t.id for t in tests] == ["81", "111"]
    # and through the command line, a test set in MT-bench format, prompts in Parquet
    parquet = tmp_path / "train.parquet"
    pl.DataFrame({"id": ["k1", "c1"], "prompt": [
        "Why is the ocean salty?", MT_BENCH[0]["turns"][0]]}).write_parquet(parquet)
    out = tmp_path / "kept.jsonl"
    assert main(["decontaminate", "--prompts", str(parquet), "--against", str(mt),
                 "--out", str(out)]) == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["k1"]


def test_lmarena_battles_json_array(tmp_path: Path, capsys) -> None:
    rows = [{"model_a": "a", "model_b": "b", "winner": w, "tstamp": 1700000000.0 + i,
             "judge": "arena_user_1", "conversation_a": [{"role": "user", "content": "q"}],
             "turn": 1, "anony": True, "language": "English", "category": "coding"}
            for i, w in enumerate(["model_a", "model_b", "tie (bothbad)", "model_a", "tie"])]
    path = tmp_path / "clean_battle_public.json"
    path.write_text(json.dumps(rows, indent=1))
    battles = load_battles(path)
    assert battles.height == 5 and battles.columns == ["model_a", "model_b", "winner", "ts"]
    assert battles["ts"][0] == 1700000000.0
    kept = load_battles(path, keep=("category", "not-there"))
    assert "category" in kept.columns and kept["category"].to_list() == ["coding"] * 5
    assert main(["leaderboard", "--battles", str(path), "--json"]) == 0
    assert {r["model"] for r in json.loads(capsys.readouterr().out)} == {"a", "b"}


def test_consistency_reads_the_leaderboard_csv_output(tmp_path: Path, capsys) -> None:
    battles = _jsonl(tmp_path / "b.jsonl", [
        {"model_a": a, "model_b": b, "winner": w}
        for a, b, w in [("x", "y", "model_a"), ("x", "y", "model_a"), ("y", "z", "model_a"),
                        ("x", "z", "model_a"), ("z", "x", "tie"), ("y", "x", "model_a")] * 3])
    assert main(["leaderboard", "--battles", str(battles), "--csv"]) == 0
    csv_path = tmp_path / "ours.csv"
    csv_path.write_text(capsys.readouterr().out)
    assert main(["leaderboard", "--battles", str(battles), "--json"]) == 0
    json_path = tmp_path / "ref.json"
    json_path.write_text(capsys.readouterr().out)
    from_csv, from_json = load_leaderboard(csv_path), load_leaderboard(json_path)
    assert [r.model for r in from_csv] == [r.model for r in from_json]
    assert [round(r.rating, 2) for r in from_csv] == [round(r.rating, 2) for r in from_json]
    assert main(["consistency", "--ours", str(csv_path), "--reference", str(json_path),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spearman"] == pytest.approx(1.0)
