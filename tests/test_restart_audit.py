"""Restarts, replay and audit on both brokers, through the real CLI where users use it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import msgspec
import polars as pl

from arena_stream.cli.entry import main as cli
from arena_stream.kafka.replay import read_window
from arena_stream.ratings.audit import audit
from arena_stream.schemas import Generation, Judgment, RatingUpdate
from arena_stream.streams.worker import running_worker, wait_until_ready
from tests.conftest import both_brokers
from tests.helpers import count, events, prompt, publish_raw, wait_for

pytestmark = both_brokers


async def run_until(
    config, key: str, n: int, timeout: float = 90, **more: int
) -> None:
    """Run a worker until topic ``key`` holds ``n`` records (and each of ``more``)."""
    wanted = {key: n, **more}
    async with running_worker(config) as app:
        await wait_until_ready(app)

        async def enough() -> bool:
            for k, at_least in wanted.items():
                if await count(config, k) < at_least:
                    return False
            return True

        await wait_for(enough, timeout=timeout)


async def test_restarted_worker_recovers_its_tables_and_the_audit_agrees(make_config, stub):
    config = make_config(stub.base_url)
    await publish_raw(config, [prompt(f"p{i}", f"q{i}") for i in range(5)])
    await run_until(config, "ratings", 10)
    first_stop = time.time()

    # a second worker with the same app id: tables come back from their changelogs
    await publish_raw(config, [prompt(f"p{i}", f"q{i}") for i in range(5, 10)]
                      + [prompt("p0", "q0")])  # a re-send of an old prompt
    await run_until(config, "ratings", 20)

    gens = await events(config, "generations", Generation)
    judgments = await events(config, "judgments", Judgment)
    ratings = await events(config, "ratings", RatingUpdate)
    # p0 was not accepted (so not played) again. Events the first worker was finishing
    # when it stopped may be redone (at least once): same ids, counted once.
    assert await count(config, "accepted") == 10
    assert len({g.id for g in gens}) == 20
    assert len({j.battle_id for j in judgments}) == 10 and len(ratings) == 20
    last = {r.model: r for r in ratings}
    assert last["comp"].battles == 10 and last["target@v0"].battles == 10  # the book continued

    report = await audit(config)
    assert report.ok, report.render()
    assert report.judgments - report.duplicates == 10
    assert set(report.table) == {"comp", "target@v0"}

    # replay: by offset, by time, and past the end (where tansu's answer is 0)
    all_rows = await read_window(config, "judgments")
    assert [r.offset for r in all_rows] == list(range(len(judgments)))
    later = await read_window(config, "judgments", from_time=first_stop)
    assert 0 < len(later) <= 5 and all(r.timestamp_ms >= first_stop * 1000 for r in later)
    assert await read_window(config, "judgments", from_time=time.time() + 3600) == []
    assert len(await read_window(config, "judgments", from_offset=7)) == len(judgments) - 7


async def test_audit_reports_a_tampered_rating(make_config, stub):
    config = make_config(stub.base_url)
    await publish_raw(config, [prompt("p0", "q0")])
    await run_until(config, "ratings", 2)
    from arena_stream.kafka.io import producer, topic_name

    forged = RatingUpdate(model="comp", rating=1234.0, battles=1, battle_id="forged", delta=0,
                          opponent="x", outcome=1.0, judgment_offset=99)
    async with producer(config) as p:
        await p.send_and_wait(topic_name(config, "ratings"), msgspec.json.encode(forged),
                              key=b"comp")
    report = await audit(config)
    assert not report.ok and any("comp: topic has 1234.0000" in d for d in report.differences)


def test_cli_publish_ratings_replay_audit_deadletter(make_config, stub, tmp_path: Path,
                                                     capsys) -> None:
    import asyncio

    config = make_config(stub.base_url)
    cfg_file = tmp_path / "config.toml"
    cfg_file.write_bytes(msgspec.toml.encode(config))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join([
        json.dumps({"id": "a", "prompt": "first"}),
        "{broken",
        json.dumps({"id": "b", "messages": [{"role": "user", "content": "second"}]}),
        json.dumps({"id": "c", "messages": [{"role": "assistant", "content": "no user"}]}),
    ]) + "\n")
    from arena_stream.streams.worker import prepare

    asyncio.run(prepare(config))
    assert cli(["publish", str(prompts), "--config", str(cfg_file)]) == 1
    err = capsys.readouterr().err
    assert "prompts.jsonl:2: skipped: not valid JSON" in err
    assert "prompts.jsonl:4: skipped: not_user_last" in err

    asyncio.run(run_until(config, "ratings", 4))
    capsys.readouterr()
    assert cli(["ratings", "--config", str(cfg_file), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["models"]
    assert {r["model"] for r in rows} == {"comp", "target@v0"}
    assert all({"model", "rating", "battles"} <= set(r) and r["battles"] == 2 for r in rows)

    out = tmp_path / "judgments.parquet"
    assert cli(["replay", "--config", str(cfg_file), "--topic", "judgments", "--out",
                str(out)]) == 0
    frame = pl.read_parquet(out)
    assert frame.height == 2 and frame["offset"].to_list() == [0, 1]
    assert json.loads(frame["value"][0])["judge_model"] == "judge"

    assert cli(["audit", "--config", str(cfg_file)]) == 0
    assert "OK: every rating matches" in capsys.readouterr().out

    # a bad message straight onto the topic, then listed and re-published fixed
    asyncio.run(publish_raw(config, [(b"d", b'{"id": "d", "prompt": ""}')]))
    asyncio.run(run_until(config, "deadletter", 1))
    capsys.readouterr()
    assert cli(["deadletter", "--config", str(cfg_file), "--json"]) == 0
    letter = json.loads(capsys.readouterr().out.splitlines()[0])
    assert letter["reason"] == "empty_content" and letter["original"] == '{"id": "d", "prompt": ""}'
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({"id": "d", "prompt": "now with content"}))
    assert cli(["deadletter", "--config", str(cfg_file), "--republish",
                str(letter["offset"]), "--fixed", str(fixed)]) == 0
    asyncio.run(run_until(config, "ratings", 6))


async def test_a_lost_generation_is_asked_for_again(make_config, stub):
    """A prompt missing one player's answer (as after an event lost in a shutdown) completes."""
    from arena_stream.kafka.io import producer, topic_name
    from arena_stream.schemas import Generation, Message, encode
    from arena_stream.streams.worker import prepare

    config = make_config(stub.base_url, extra="\n[battles]\nsweep_after_s = 1.0\n")
    await prepare(config)
    only_target = Generation(id="lost/target@v0", prompt_id="lost", player="target",
                             model="target@v0", messages=[Message("user", "where is comp?")],
                             expected_players=["target", "comp"], answer="short", ts=time.time())
    async with producer(config) as p:
        await p.send_and_wait(topic_name(config, "generations"), encode(only_target), key=b"lost")
    await run_until(config, "ratings", 2, timeout=60)
    gens = await events(config, "generations", Generation)
    assert sorted(g.player for g in gens) == ["comp", "target"] and all(g.ok for g in gens)
    asked = [b for _, b, _ in stub.requests if b.get("model") == "c"]
    assert len(asked) == 1 and asked[0]["messages"][-1]["content"] == "where is comp?"
    assert not [b for _, b, _ in stub.requests if b.get("model") == "t"]  # target not re-asked
