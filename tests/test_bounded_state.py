"""Bounded state: finished work is forgotten once no redelivery can bring it back, and the
counts and the audit stay exact; a prompt re-sent after the dedup window is a new play."""

from __future__ import annotations

import asyncio

from arena_stream.ratings.audit import audit
from arena_stream.schemas import Battle, Judgment, RatingUpdate
from arena_stream.streams.worker import running_worker, wait_until_ready
from tests.helpers import count, events, prompt, publish_raw, wait_for

SHORT = "\n[state]\ndedup_window_s = 2.0\ndone_retention_s = 1.0\n"


async def test_finished_work_expires_and_the_ratings_stay_exact(make_config, stub) -> None:
    config = make_config(stub.base_url,
                         extra=SHORT + "\n[battles]\nsweep_after_s = 0.5\n")
    await publish_raw(config, [prompt(f"p{i}", f"q{i}") for i in range(8)])
    async with running_worker(config) as worker:
        await wait_until_ready(worker)

        async def rated(n: int) -> bool:
            return await count(config, "ratings") >= n

        await wait_for(lambda: rated(16), timeout=60)
        full = worker.table_sizes()
        assert full["judged"] == 8 and full["prompt_digests"] == 8 and full["rating_log"] == 8
        await asyncio.sleep(3.0)  # past every window; offsets commit meanwhile
        # later events reap what their partitions hold, a few keys per event
        await publish_raw(config, [prompt(f"n{i}", f"new {i}") for i in range(16)]
                          + [prompt("p0", "q0")])  # a re-send after the dedup window
        await wait_for(lambda: rated(2 * 25), timeout=60)
        later = worker.table_sizes()
    for table in ("judged", "prompt_digests", "rating_log", "routed", "pending"):
        assert later[table] < full[table] + 17, (table, full, later)  # the old 8 went
    assert later["ratings"] == 1  # the book never expires
    # the re-sent p0 was played again as a new play: new battle ids, counted once each
    battles = await events(config, "battles", Battle)
    p0 = [b for b in battles if b.prompt_id == "p0"]
    assert len(p0) == 2 and p0[0].id != p0[1].id
    judgments = await events(config, "judgments", Judgment)
    assert len({j.battle_id for j in judgments}) == 25
    ratings = await events(config, "ratings", RatingUpdate)
    assert {r.model: r for r in ratings}["comp"].battles == 25
    report = await audit(config)
    assert report.ok, report.render()
