"""The battle stream end to end on both brokers (Tansu, Apache Kafka), real HTTP model servers."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from arena_stream.config import RatingsConfig
from arena_stream.ratings.elo import EloBook
from arena_stream.schemas import (
    Battle,
    DeadLetter,
    DPOPair,
    Generation,
    Judgment,
    RatingUpdate,
    SFTSample,
)
from arena_stream.streams.worker import running_worker, wait_until_ready
from tests.conftest import both_brokers
from tests.helpers import count, events, prompt, publish_raw, wait_for

pytestmark = both_brokers

BAD_INPUT = [
    (b"bad1", b"{not json", "invalid_json"),
    (b"bad2", b'{"id": "bad2", "prompt": 42}', "invalid_shape"),
    (b"bad3", b'{"id": "bad3", "prompt": "caf\xe9"}', "not_utf8"),
    (b"bad4", b'{"id": "bad4", "messages": [{"role": "user", "content": "  "}]}', "empty_content"),
    (b"bad5", b'{"id": "bad5", "messages": [{"role": "user", "content": "hi"},'
              b' {"role": "assistant", "content": "hello"}]}', "not_user_last"),
    (b"bad6", b'{"id": "bad6", "messages": [{"role": "robot", "content": "hi"}]}', "unknown_role"),
    (b"bad7", json.dumps({"id": "bad7", "prompt": "x" * 300_000}).encode(), "oversized"),
    (b"p1", b'{"id": "p1", "prompt": "different content, same id"}', "duplicate_id"),
    (None, b"", "empty_message"),
]


async def test_prompts_become_battles_judgments_ratings_and_samples(make_config, stub) -> None:
    config = make_config(stub.base_url)
    good = [prompt(f"p{i}", f"question {i}", category="test") for i in range(5)]
    multi_turn = (b"p5", json.dumps({"id": "p5", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "what did I say first?"}]}).encode())
    resend = prompt("p0", "question 0", category="test")  # same id, same content: ignored
    await publish_raw(config, [*good, multi_turn, *[(k, v) for k, v, _ in BAD_INPUT], resend])

    async with running_worker(config) as app:
        await wait_until_ready(app)

        async def settled() -> bool:
            return await count(config, "ratings") >= 12 and await count(config, "dpo") >= 6

        await wait_for(settled, timeout=90)

    gens = await events(config, "generations", Generation)
    battles = await events(config, "battles", Battle)
    judgments = await events(config, "judgments", Judgment)
    ratings = await events(config, "ratings", RatingUpdate)
    sft = await events(config, "sft", SFTSample)
    dpo = await events(config, "dpo", DPOPair)
    dead = await events(config, "deadletter", DeadLetter)

    assert len(gens) == 12 and all(g.ok for g in gens)
    assert Counter(g.player for g in gens) == {"target": 6, "comp": 6}
    assert {g.model for g in gens} == {"target@v0", "comp"}
    assert all(g.latency_s > 0 and g.completion_tokens > 0 for g in gens)
    assert len(battles) == 6 and len({b.id for b in battles}) == 6
    assert len(judgments) == 6
    # every battle judged twice, positions swapped
    judge_calls = [b for path, b, _ in stub.requests if b.get("model") == "judge"]
    assert len(judge_calls) == 12
    for j in judgments:
        assert [g.order for g in j.games] == ["ab", "ba"]
        assert j.winner == "model_b" and j.model_a == "target@v0"  # the longer answer wins
        assert j.margin == 4.0 and j.judge_model == "judge" and j.template_version
    # the multi-turn conversation reached the players whole
    p5_calls = [b for _, b, _ in stub.requests if b.get("model") == "t"
                and len(b["messages"]) == 3]
    assert p5_calls and p5_calls[0]["messages"][-1]["content"] == "what did I say first?"

    # Elo: each judgment counted once, values recomputable from the log
    assert len(ratings) == 12
    book = EloBook(RatingsConfig())
    for j in judgments:
        book.apply(j.model_a, j.model_b, j.winner)
    last = {r.model: r for r in ratings}
    for model, player in book.players.items():
        assert last[model].rating == pytest.approx(player.rating, abs=1e-3)
        assert last[model].battles == 6
    assert last["comp"].rating > 1000 > last["target@v0"].rating

    # losses routed: target lost every battle by 4 points (>= sft 3.0 and dpo 2.0)
    assert len(sft) == 6 and len(dpo) == 6
    assert all(s.messages[-1].role == "assistant" and s.loser == "target@v0" for s in sft)
    assert all(p.chosen_model == "comp" and p.rejected == "short" for p in dpo)

    # every bad message dead-lettered with its reason and original bytes; nothing else
    assert sorted(d.reason for d in dead) == sorted(r for _, _, r in BAD_INPUT)
    by_reason = {d.reason: d for d in dead}
    assert by_reason["not_utf8"].original is None and by_reason["not_utf8"].original_b64
    assert by_reason["invalid_json"].original == "{not json"
    # a reused id is found at admission (prompts.checked), everything else at intake
    assert all(d.stage == "intake" and d.topic.endswith(("prompts", "prompts.checked"))
               for d in dead)


async def test_outside_kafka_client_publishes_and_reads_ratings(make_config, stub) -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    config = make_config(stub.base_url)
    from arena_stream.kafka.io import topic_name
    from arena_stream.streams.worker import prepare

    await prepare(config)
    servers = config.broker.bootstrap_servers
    producer = confluent_kafka.Producer({"bootstrap.servers": servers})
    producer.produce(topic_name(config, "prompts"), key=b"ext-1",
                     value=json.dumps({"id": "ext-1", "prompt": "from librdkafka"}).encode())
    assert producer.flush(10) == 0

    async with running_worker(config) as app:
        await wait_until_ready(app)

        async def rated() -> bool:
            return await count(config, "ratings") >= 2

        await wait_for(rated, timeout=60)

    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": servers, "group.id": f"outside-{config.app_id}",
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe([topic_name(config, "ratings")])
    seen = []
    try:
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                if len(seen) >= 2:
                    break
                continue
            seen.append(json.loads(msg.value()))
    finally:
        consumer.close()
    assert len(seen) == 2
    assert {s["model"] for s in seen} == {"target@v0", "comp"}
    assert all({"model", "rating", "battles", "battle_id"} <= set(s) for s in seen)


async def test_leaderboard_snapshots_with_intervals_are_published(make_config, stub) -> None:
    from arena_stream.schemas import LeaderboardSnapshot

    config = make_config(stub.base_url, extra="\n[ratings]\nsnapshot_every = 2\n")
    # Two rounds of two judgments: the rate agent takes judgments in batches and offers
    # the book when a batch crosses a multiple of snapshot_every, so four judgments in
    # one batch (Apache Kafka's batching makes that likely) would be one snapshot.
    async with running_worker(config) as app:
        await wait_until_ready(app)
        for n in (1, 2):
            await publish_raw(config, [prompt(f"s{n}{i}", f"question {n}.{i}") for i in range(2)])

            async def snapshots(n: int = n) -> bool:
                return await count(config, "leaderboard") >= n

            await wait_for(snapshots, timeout=60)
    snaps = await events(config, "leaderboard", LeaderboardSnapshot)
    assert [s.judgments for s in snaps] == [2, 4] and snaps[-1].method == "sandwich"
    rows = {r.model: r for r in snaps[-1].rows}
    assert set(rows) == {"comp", "target@v0"} and rows["comp"].battles == 4
    assert rows["comp"].rating > rows["target@v0"].rating
    assert all(r.lower <= r.rating <= r.upper for r in rows.values())


async def test_a_reused_id_is_refused_whichever_partition_the_publisher_chose(
    make_config, stub
) -> None:
    """librdkafka (CRC32) and the Java client or aiokafka (murmur2) put one key on different
    partitions: the same id, published by both with different content, is one prompt and one
    duplicate_id dead letter; the same content twice is one prompt."""
    from arena_stream.kafka.io import producer, topic_name
    from arena_stream.schemas import Prompt
    from arena_stream.streams.worker import prepare

    config = make_config(stub.base_url)
    await prepare(config)
    topic = topic_name(config, "prompts")
    async with producer(config) as p:
        for partition, text in ((0, "first text"), (1, "other text")):
            await p.send_and_wait(topic, json.dumps({"id": "same", "prompt": text}).encode(),
                                  key=b"same", partition=partition)
        await p.send_and_wait(topic, json.dumps({"id": "twin", "prompt": "t"}).encode(),
                              key=b"twin", partition=0)
        await p.send_and_wait(topic, json.dumps({"id": "twin", "prompt": "t"}).encode(),
                              key=b"twin", partition=1)
    async with running_worker(config) as app:
        await wait_until_ready(app)

        async def settled() -> bool:
            return (await count(config, "ratings") >= 4
                    and await count(config, "deadletter") >= 1)

        await wait_for(settled, timeout=60)
    accepted = await events(config, "accepted", Prompt)
    assert sorted(p.id for p in accepted) == ["same", "twin"]
    [first] = [p for p in accepted if p.id == "same"]
    [letter] = await events(config, "deadletter", DeadLetter)
    assert letter.reason == "duplicate_id" and letter.ref == "same"
    refused = json.loads(letter.original)["messages"][0]["content"]
    assert {refused, first.messages[0].content} == {"first text", "other text"}


async def test_huge_inputs_end_as_one_dead_letter_and_long_prompts_still_play(
    make_config, stub
) -> None:
    """A prompt twice the size limit is one dead letter that fits the broker (its start, size
    and hash kept); a valid 250 KB CJK prompt answered by three players is played, not a
    table record past the broker's limit that crash-loops the worker."""
    from arena_stream.kafka.deadletter import MAX_ORIGINAL_BYTES
    from arena_stream.schemas import Judgment

    url = stub.base_url
    players = "".join(
        f'\n[[players]]\nname = "{n}"\n{role}backend = "openai"\nbase_url = "{url}"\n'
        f'model = "{m}"\nbackoff_s = 0.01\n'
        for n, m, role in (("target", "t", 'role = "target"\n'), ("comp", "c", ""),
                           ("d", "d", ""))
    )
    config = make_config(url, players=players,
                         extra="\n[limits]\nmax_prompt_bytes = 300000\n")
    huge = json.dumps({"id": "huge", "prompt": "x" * 600_000}).encode()
    cjk = json.dumps({"id": "cjk", "prompt": "漢字かな交じり文" * 10_000},
                     ensure_ascii=False).encode()
    assert 200_000 < len(cjk) < 300_000
    await publish_raw(config, [(b"huge", huge), (b"cjk", cjk)])
    async with running_worker(config) as app:
        await wait_until_ready(app)

        async def settled() -> bool:
            return (await count(config, "ratings") >= 4
                    and await count(config, "deadletter") >= 1)

        await wait_for(settled, timeout=90)
    [letter] = await events(config, "deadletter", DeadLetter)
    assert letter.reason == "oversized" and letter.ref is None and letter.key == "huge"
    assert letter.truncated and letter.original_size == len(huge)
    import hashlib

    assert letter.original_sha256 == hashlib.sha256(huge).hexdigest()
    assert len(letter.original or "") == MAX_ORIGINAL_BYTES and letter.original_b64 is None
    judgments = await events(config, "judgments", Judgment)
    assert sorted(j.prompt_id for j in judgments) == ["cjk", "cjk"]
