"""`deadletter --republish` decides where a record goes from its stage, never from the record."""

from __future__ import annotations

import asyncio
import json

import msgspec

from arena_stream.cli.entry import main as cli
from arena_stream.kafka.deadletter import dead_letter
from arena_stream.kafka.io import producer, read_all, topic_name
from arena_stream.streams.worker import prepare


def test_republish_goes_where_the_stage_says_and_skips_garbage(make_config, stub, tmp_path,
                                                                 capsys) -> None:
    config = make_config(stub.base_url)
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(msgspec.toml.encode(config))
    forged = dead_letter(stage="intake", reason="invalid_json", error="x",
                         topic=topic_name(config, "models"),  # a lie: must not be followed
                         original=json.dumps({"id": "fixed", "prompt": "hi"}).encode(), key="fixed")
    late = dead_letter(stage="generate", reason="http_503", error="x", topic="t",
                       original=b'{"id": "g"}')

    async def publish() -> None:
        await prepare(config)
        async with producer(config) as p:
            for value in (msgspec.json.encode(forged), b"\x1b[31mnot a dead letter",
                          msgspec.json.encode(late)):
                await p.send_and_wait(topic_name(config, "deadletter"), value)

    asyncio.run(publish())
    assert cli(["deadletter", "--config", str(cfg)]) == 0
    out = capsys.readouterr()
    assert "offset 1: not a dead letter, skipped" in out.err
    assert "\x1b" not in out.out
    assert cli(["deadletter", "--config", str(cfg), "--republish", "0"]) == 0
    assert f"to {topic_name(config, 'prompts')}" in capsys.readouterr().out
    assert cli(["deadletter", "--config", str(cfg), "--republish", "2"]) == 2
    assert "a 'generate' dead letter is not re-published" in capsys.readouterr().err

    models = asyncio.run(read_all(config, "models"))
    prompts = asyncio.run(read_all(config, "prompts"))
    assert models == [] and [json.loads(r.value)["id"] for r in prompts] == ["fixed"]
