"""``arena-stream export``: what the topics hold, loaded by datasets and prepared by TRL as is."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest

from arena_stream.cli.entry import main
from arena_stream.config import Config, loads
from arena_stream.kafka.io import producer, topic_name
from arena_stream.kafka.topics import Topics
from arena_stream.schemas import encode
from arena_stream.schemas.events import DPOPair, Game, Judgment, Message, SFTSample
from arena_stream.trainers.dpo import dpo_example
from arena_stream.trainers.sft import sft_example
from tests.conftest import config_text

QUESTIONS = ["What is the capital of Australia?", "Name a prime number above 10.",
             "Translate 'good morning' into Spanish."]


def _pair(i: int) -> DPOPair:
    return DPOPair(id=f"dpo-{i}", battle_id=f"b{i}", prompt_id=f"p{i}", round=0,
                   prompt=[Message("system", "Be brief."), Message("user", QUESTIONS[i])],
                   chosen=f"A good answer {i}.", rejected=f"A weak answer {i}.",
                   chosen_model="comp", rejected_model="target@v0", margin=3.5, ts=1.0 + i)


def _sample(i: int) -> SFTSample:
    return SFTSample(id=f"sft-{i}", battle_id=f"b{i}", prompt_id=f"p{i}",
                     messages=[Message("user", QUESTIONS[i]),
                               Message("assistant", f"The winner's answer {i}.")],
                     winner="comp", loser="target@v0", margin=4.0, ts=1.0 + i)


def _judgment(i: int, winner: str) -> Judgment:
    games = [Game(order="ab", score_a=7, score_b=3, raw="{}"),
             Game(order="ba", score_a=6, score_b=4, raw="{}")]
    return Judgment(battle_id=f"b{i}", prompt_id=f"p{i}", model_a="target@v0", model_b="comp",
                    player_a="target", player_b="comp", target="target", winner=winner,
                    score_a=6.5, score_b=3.5, margin=3.0, games=games, rule="mean",
                    judge_model="judge", template_version="v1",
                    messages=[Message("user", QUESTIONS[i])], answer_a=f"a{i}",
                    answer_b=f"b{i}", ts=1700000000.0 + i)


@pytest.fixture
def filled(broker: Any, tmp_path: Path) -> tuple[Config, Path]:
    """A config whose topics hold samples, pairs and judgments, a duplicate and a stray record."""
    text = config_text(bootstrap=broker.address, url="http://127.0.0.1:1/v1",
                       prefix=f"exp{uuid.uuid4().hex[:8]}.", app_id="exp",
                       data_dir=str(tmp_path / "d"))
    path = tmp_path / "arena.toml"
    path.write_text(text)
    config = loads(text)

    async def fill() -> None:
        from arena_stream.kafka.broker import ensure_topics

        await ensure_topics(config, Topics(config.broker, config.app_id).all())
        async with producer(config) as p:
            for key, events in (
                ("dpo", [_pair(0), _pair(1), _pair(1), _pair(2)]),  # pair 1 delivered twice
                ("sft", [_sample(0), _sample(1)]),
                ("judgments", [_judgment(0, "model_b"), _judgment(1, "model_a"),
                               _judgment(0, "model_b"), _judgment(2, "tie")]),
            ):
                for event in events:
                    await p.send_and_wait(topic_name(config, key), encode(event))
            await p.send_and_wait(topic_name(config, "dpo"), b'{"not": "a pair"}')

    asyncio.run(fill())
    return config, path


def _trl_dpo_prepare(dataset: Any, tmp_path: Path) -> Any:
    """TRL's own DPO dataset preparation (tokenisation with the chat template)."""
    from trl import DPOConfig, DPOTrainer

    from arena_stream.models.local import load_tokenizer

    tokenizer = load_tokenizer("smollm2")
    args = DPOConfig(output_dir=str(tmp_path / "trl"), bf16=False, max_length=256)
    # The preparation step alone: no model is loaded, only its tokenizer is needed.
    return tokenizer, DPOTrainer._prepare_dataset(
        SimpleNamespace(_tokenizer=tokenizer), dataset, tokenizer, args, "train")


def test_dpo_as_a_hugging_face_dataset_passes_trls_preparation(filled, tmp_path, capsys) -> None:
    from datasets import load_from_disk

    _, config_path = filled
    out = tmp_path / "dpo-pairs"
    assert main(["export", "--config", str(config_path), "--kind", "dpo", "--out", str(out)]) == 0
    assert capsys.readouterr().err.strip() == (
        f"exported 3 dpo rows to {out} (hf); 1 delivered twice, kept once; "
        "1 not dpo records, skipped")
    dataset = load_from_disk(str(out))
    assert dataset.num_rows == 3
    assert dataset[0]["prompt"] == [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": QUESTIONS[0]}]
    assert dataset[0]["chosen"] == [{"role": "assistant", "content": "A good answer 0."}]
    assert dataset[0]["rejected"] == [{"role": "assistant", "content": "A weak answer 0."}]
    assert {k: dataset[0][k] for k in ("prompt", "chosen", "rejected")} == dpo_example(_pair(0))
    assert dataset[0]["chosen_model"] == "comp" and dataset[0]["margin"] == 3.5

    tokenizer, prepared = _trl_dpo_prepare(dataset, tmp_path)
    assert prepared.num_rows == 3
    row = prepared[1]
    assert QUESTIONS[1] in tokenizer.decode(row["prompt_ids"])
    assert tokenizer.decode(row["chosen_ids"]).startswith("A good answer 1.")
    assert tokenizer.decode(row["rejected_ids"]).startswith("A weak answer 1.")


def test_dpo_as_parquet_loads_with_load_dataset(filled, tmp_path) -> None:
    from datasets import load_dataset

    _, config_path = filled
    out = tmp_path / "dpo.parquet"
    assert main(["export", "--config", str(config_path), "--kind", "dpo", "--out", str(out)]) == 0
    dataset = load_dataset("parquet", data_files=str(out), split="train")
    assert [r["id"] for r in dataset] == ["dpo-0", "dpo-1", "dpo-2"]
    _, prepared = _trl_dpo_prepare(dataset, tmp_path)
    assert all(len(r["chosen_ids"]) > 0 for r in prepared)


def test_sft_as_jsonl_is_trls_prompt_completion_format(filled, tmp_path) -> None:
    from datasets import load_dataset
    from trl.data_utils import apply_chat_template, is_conversational

    from arena_stream.models.local import load_tokenizer

    _, config_path = filled
    out = tmp_path / "sft.jsonl"
    assert main(["export", "--config", str(config_path), "--kind", "sft", "--out", str(out)]) == 0
    dataset = load_dataset("json", data_files=str(out), split="train")
    first = dataset[0]
    assert {k: first[k] for k in ("prompt", "completion")} == sft_example(_sample(0))
    assert is_conversational(first)
    rendered = apply_chat_template(first, load_tokenizer("smollm2"))
    assert QUESTIONS[0] in rendered["prompt"]
    assert rendered["completion"].startswith("The winner's answer 0.")


def test_battles_are_lmarena_battles(filled, tmp_path, capsys) -> None:
    _, config_path = filled
    out = tmp_path / "battles.jsonl"
    assert main(["export", "--config", str(config_path), "--kind", "battles",
                 "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["battle_id"] for r in rows] == ["b0", "b1", "b2"]  # b0 delivered twice
    first = rows[0]
    assert (first["model_a"], first["model_b"], first["winner"]) == ("target@v0", "comp",
                                                                    "model_b")
    assert first["question_id"] == "p0" and first["judge"] == "judge" and first["turn"] == 1
    assert first["tstamp"] == 1700000000.0
    assert first["conversation_b"] == [{"role": "user", "content": QUESTIONS[0]},
                                       {"role": "assistant", "content": "b0"}]
    capsys.readouterr()
    assert main(["leaderboard", "--battles", str(out), "--json"]) == 0  # reads its own export
    assert {r["model"] for r in json.loads(capsys.readouterr().out)} == {"target@v0", "comp"}


def test_judgments_as_parquet_within_an_offset_window(filled, tmp_path) -> None:
    _, config_path = filled
    out = tmp_path / "judgments.parquet"
    assert main(["export", "--config", str(config_path), "--kind", "judgments", "--out",
                 str(out), "--from-offset", "1", "--to-offset", "2"]) == 0
    frame = pl.read_parquet(out)
    assert frame["battle_id"].to_list() == ["b1", "b0"]
    assert frame["games"][0][0]["order"] == "ab"


@pytest.mark.parametrize("argv, message", [
    (["--kind", "sft", "--out", "{tmp}/x.parquet", "--from-offset", "99"],
     "nothing to export: no sft records in the selection"),
    (["--kind", "dpo", "--out", "{tmp}/x.csv"], "cannot tell the format of"),
    (["--kind", "dpo", "--out", "{tmp}"], "is a directory with other files in it"),
    (["--kind", "kto", "--out", "{tmp}/x.jsonl"],
     "unknown kind 'kto'; known: sft, dpo, battles, judgments"),
])
def test_export_mistakes_are_one_line(filled, tmp_path, capsys, argv: list[str],
                                      message: str) -> None:
    _, config_path = filled
    code = main(["export", "--config", str(config_path),
                 *[a.format(tmp=tmp_path) for a in argv]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert message in err[0]
    assert (tmp_path / "arena.toml").is_file()  # nothing of the user's was replaced


def test_an_earlier_export_is_replaced(filled, tmp_path) -> None:
    from datasets import load_from_disk

    _, config_path = filled
    out = tmp_path / "again"
    for kind, rows in (("dpo", 3), ("sft", 2)):
        assert main(["export", "--config", str(config_path), "--kind", kind,
                     "--out", str(out)]) == 0
        assert load_from_disk(str(out)).num_rows == rows
