"""Nothing lost, nothing counted twice: the stream under crashes, model-server faults and bad input.

Every test runs the real worker (in this process, or ``arena-stream worker`` in a
child process where it is killed) on the session's embedded broker, against
real HTTP model servers on loopback (:mod:`tests.openai_stub`) that fail on
purpose. Assertions are exact counts read back from the topics and from the
tables' changelogs, never just "it did not crash".
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from arena_stream.config import Config
from arena_stream.kafka.broker import Quirks, true_end_offsets
from arena_stream.kafka.io import consumer, partitions, read_all
from arena_stream.kafka.topics import changelog_topic
from arena_stream.ratings.audit import audit
from arena_stream.ratings.standings import latest_ratings
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
from tests.conftest import both_brokers, judge_reply, length_judge
from tests.helpers import count, events, prompt, publish_raw, wait_for
from tests.openai_stub import OpenAIStub, Reply, completion

ROOT = Path(__file__).resolve().parents[1]
ANSWERS = {"t": "short", "c": "a much longer and more detailed answer here", "d": "medium"}


# -- helpers --------------------------------------------------------------------------------


def player(name: str, url: str, model: str, *, role: str = "competitor", **kw: Any) -> str:
    """One ``[[players]]`` table for ``config_text(players=...)``."""
    lines = [
        "[[players]]",
        f'name = "{name}"',
        f'role = "{role}"',
        'backend = "openai"',
        f'base_url = "{url}"',
        f'model = "{model}"',
        "backoff_s = 0.01",
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in kw.items()]
    return "\n".join(lines) + "\n\n"


async def raw_log(config: Config, topic: str) -> bytes:
    """Every record value of a topic (a changelog included), concatenated."""
    state: list[bytes] = []
    async with consumer(config) as c:
        tps = await partitions(c, topic)
        c.assign(tps)
        ends = await true_end_offsets(c, tps, Quirks.for_broker(config.broker))
        for tp in tps:
            c.seek(tp, 0)
            while ends[tp] > 0 and await c.position(tp) < ends[tp]:
                batch = await c.getmany(tp, timeout_ms=1000, max_records=5000)
                state.extend(r.value or b"" for r in batch.get(tp, []) if r.offset < ends[tp])
    return b"".join(state)


async def table_state(config: Config, table: str) -> dict[Any, Any]:
    """A table's last state per key, read back from its changelog (None: deleted)."""
    name = changelog_topic(config.app_id, table)
    state: dict[Any, Any] = {}
    async with consumer(config) as c:
        tps = await partitions(c, name)
        c.assign(tps)
        ends = await true_end_offsets(c, tps, Quirks.for_broker(config.broker))
        for tp in tps:
            if ends[tp] <= 0:
                continue
            c.seek(tp, 0)
            deadline = time.monotonic() + 30
            while await c.position(tp) < ends[tp] and time.monotonic() < deadline:
                batch = await c.getmany(tp, timeout_ms=1000, max_records=5000)
                for r in batch.get(tp, []):
                    if r.offset < ends[tp] and r.key is not None:
                        key = msgspec.json.decode(r.key)
                        value = None if r.value is None else msgspec.json.decode(r.value)
                        # table values are kept as their JSON text
                        state[key] = msgspec.json.decode(value) if isinstance(value, str) else value
    return state


def last_ratings(updates: list[RatingUpdate]) -> dict[str, int]:
    return {s.model: s.battles for s in latest_ratings(updates)}


class WorkerProcess:
    """``arena-stream worker --config FILE`` in a child process, its output in one log file."""

    def __init__(self, cfg_file: Path, log_file: Path, env: dict[str, str] | None = None) -> None:
        self.cfg_file = cfg_file
        self.log_file = log_file
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "fault_worker.py"), "--log-level", "info",
                 "worker", "--config", str(self.cfg_file)],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def signal(self, sig: int, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the process to exit; its exit status."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    async def starting(self) -> bool:
        """Whether the worker is starting faust: it blocks SIGTERM for exactly that long."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        blocked = int(next(ln for ln in status.splitlines() if ln.startswith("SigBlk:")).split()[1],
                      16)
        return bool(blocked & (1 << (signal.SIGTERM - 1)))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        if self.alive():
            self.signal(signal.SIGKILL)

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.close()


def with_delay(
    handler: Callable[[str, dict[str, Any]], Reply], low: float, high: float,
    *, slow: dict[str, int] | None = None, slow_s: float = 0.0,
) -> Any:
    """Answer after ``low``..``high`` s; a model's first ``slow[model]`` calls take ``slow_s``."""
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    def delayed(path: str, body: dict[str, Any]) -> Reply:
        reply = handler(path, body)
        model = body.get("model", "")
        with lock:
            calls[model] += 1
            nth = calls[model]
        reply.delay_s = slow_s if nth <= (slow or {}).get(model, 0) else random.uniform(low, high)
        return reply

    return delayed


# -- 1 and 5: crash (SIGKILL) and shutdown (SIGTERM) mid-run, restart, exact counts ------------

N_PROMPTS = 30


async def committed_offsets(config: Any, key: str) -> dict[int, int | None]:
    """The worker group's committed offset of each partition of topic ``key``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from arena_stream.kafka.broker import client_settings
    from arena_stream.kafka.io import topic_name

    c = AIOKafkaConsumer(**client_settings(config), group_id=config.app_id,
                         enable_auto_commit=False)
    await c.start()
    try:
        name = topic_name(config, key)
        return {p: await c.committed(TopicPartition(name, p))
                for p in range(config.broker.partitions)}
    finally:
        await c.stop()


async def crash_and_restart(
    make_config: Any, tmp_path: Path, workers: list[WorkerProcess],
    interruptions: list[tuple[str, int, int]],
    *,
    judge_concurrency: int = 2,
    delay: tuple[float, float] = (0.05, 0.1),
    slow: dict[str, int] | None = None,
    slow_s: float = 2.0,
) -> None:
    """Run N prompts through a worker subprocess interrupted at the given stages.

    ``interruptions``: (topic, records at least, signal). Each time the topic
    holds that many records (and fewer than all), the worker gets the signal,
    and a new worker with the same config starts once the old one has exited.
    ``("startup", 0, signal)`` signals the (re)started worker while faust is still
    starting: while the worker holds SIGINT/SIGTERM back (its blocked-signal mask).
    """
    with OpenAIStub(with_delay(length_judge, *delay, slow=slow, slow_s=slow_s)) as stub:
        url = stub.base_url
        players = (player("target", url, "t", role="target", concurrency=1)
                   + player("comp", url, "c", concurrency=1)
                   + player("d", url, "d", concurrency=1))
        config = make_config(url, players=players)
        config = msgspec.structs.replace(
            config, judge=msgspec.structs.replace(config.judge, concurrency=judge_concurrency)
        )
        cfg_file = tmp_path / "worker.toml"
        cfg_file.write_bytes(msgspec.toml.encode(config))
        n, competitors = N_PROMPTS, 2
        totals = {"generations": n * 3, "battles": n * competitors, "judgments": n * competitors,
                  "startup": 1}

        await publish_raw(config, [prompt(f"p{i:02d}", f"question {i}") for i in range(n)])
        worker = WorkerProcess(cfg_file, tmp_path / "worker.log")
        workers.append(worker)
        worker.start()
        seen_at_signal = []
        for topic, at_least, sig in interruptions:
            async def reached(topic: str = topic, at_least: int = at_least) -> bool:
                return await count(config, topic) >= at_least

            if topic == "startup":
                await wait_for(worker.starting, timeout=30, interval=0.02)
                seen_at_signal.append(0)
            else:
                await wait_for(reached, timeout=60, interval=0.1)
                seen_at_signal.append(await count(config, topic))
            # a SIGTERM'd worker exits by itself: gracefully, or after the worker's 30 s
            # stop grace when faust's stop waits for an event that is never acknowledged
            rc = worker.signal(sig, timeout=45)
            assert rc == (-signal.SIGKILL if sig == signal.SIGKILL else 0), worker.log()[-3000:]
            worker.start()
        # the signal landed while that stage still had work in flight
        for (topic, _, _), seen in zip(interruptions, seen_at_signal, strict=True):
            assert seen < totals[topic], f"{topic}: all {seen} records were already there"

        want = {"target@v0": n * competitors, "comp": n, "d": n}

        async def finished() -> bool:
            ratings = last_ratings(await events(config, "ratings", RatingUpdate))
            if ratings != want:
                return False
            flywheel = (await table_state(config, "buffers")).get("flywheel") or {}
            pending = flywheel.get("waiting", {})
            return len(pending.get("sft", [])) >= n and len(pending.get("dpo", [])) >= n

        try:
            await wait_for(finished, timeout=90, interval=0.5)
        except TimeoutError:
            flywheel = (await table_state(config, "buffers")).get("flywheel") or {}
            state = {
                "ratings": last_ratings(await events(config, "ratings", RatingUpdate)),
                "buffered": {k: len(v) for k, v in flywheel.get("waiting", {}).items()},
                **{k: await count(config, k)
                   for k in ("accepted", "generations", "battles", "judgments", "sft", "dpo")},
            }
            battled = {b.prompt_id for b in await events(config, "battles", Battle)}
            stuck: dict[str, list[tuple[str, bool]]] = defaultdict(list)
            for g in await events(config, "generations", Generation):
                if g.prompt_id not in battled:
                    stuck[g.prompt_id].append((g.player, g.ok))
            committed = {k: await committed_offsets(config, k) for k in ("accepted", "battles")}
            from arena_stream.kafka.io import read_all

            where = {r.key.decode(): (r.partition, r.offset)
                     for r in await read_all(config, "accepted")}
            raise AssertionError(
                f"not finished: {state}\ncommitted: {committed}\naccepted at: {where}\n"
                f"no battles for: {stuck}\n{worker.log()[-4000:]}"
            ) from None
        assert worker.signal(signal.SIGTERM, timeout=45) == 0, worker.log()[-3000:]

    await assert_each_battle_counted_once(config, n, competitors)
    assert worker.starts == len(interruptions) + 1


async def assert_each_battle_counted_once(config: Config, n: int, competitors: int) -> None:
    """Exact counts after a run of prompts ``p00``.. with three players, and audit agrees."""
    want = {"target@v0": n * competitors, "comp": n, "d": n}
    battles = await events(config, "battles", Battle)
    judgments = await events(config, "judgments", Judgment)
    ratings = await events(config, "ratings", RatingUpdate)
    sft = await events(config, "sft", SFTSample)
    dpo = await events(config, "dpo", DPOPair)
    dead = await events(config, "deadletter", DeadLetter)
    gens = await events(config, "generations", Generation)

    # every prompt has exactly its battles; re-formed battles keep their ids
    assert len({g.id for g in gens}) == n * 3 and all(g.ok for g in gens)
    battle_ids = {b.id for b in battles}
    assert len(battle_ids) == n * competitors
    per_prompt = defaultdict(set)
    for b in battles:
        per_prompt[b.prompt_id].add(b.id)
    assert sorted(per_prompt) == [f"p{i:02d}" for i in range(n)]
    assert all(len(ids) == competitors for ids in per_prompt.values())

    # every battle judged; duplicates in the log are allowed, counted once
    assert {j.battle_id for j in judgments} == battle_ids
    assert last_ratings(ratings) == want
    counted = {u.battle_id for u in ratings}
    assert counted == battle_ids

    # routed samples: one per lost battle, each once in the training buffers
    assert len({s.id for s in sft}) == n and len({p.id for p in dpo}) == n
    flywheel = (await table_state(config, "buffers"))["flywheel"]
    for kind, samples in (("sft", sft), ("dpo", dpo)):
        ids = [sample_id for sample_id, _ in flywheel["waiting"][kind]]
        assert len(ids) == len(set(ids)) == n
        assert set(ids) == {s.id for s in samples}
    assert dead == []

    report = await audit(config)
    assert report.ok, report.render()
    assert report.judgments - report.duplicates == n * competitors


@both_brokers
async def test_sigkill_while_generating_and_while_judging_loses_and_doubles_nothing(
    make_config, tmp_path, workers
) -> None:
    await crash_and_restart(make_config, tmp_path, workers, [
        ("generations", 20, signal.SIGKILL),
        ("judgments", 15, signal.SIGKILL),
    ])


@both_brokers
async def test_sigkill_while_judges_finish_out_of_order_loses_nothing(
    make_config, tmp_path, workers
) -> None:
    # Several judge calls in flight with very different latencies: battles finish out of
    # offset order, so a later battle is acknowledged while an earlier one is still being
    # judged. Its offset must not be committed past the unfinished one.
    await crash_and_restart(make_config, tmp_path, workers, [
        ("judgments", 8, signal.SIGKILL),
        ("judgments", 30, signal.SIGKILL),
    ], judge_concurrency=6, delay=(0.01, 0.8))


@both_brokers
async def test_sigkill_while_the_first_battle_is_still_judged_loses_it_not(
    make_config, tmp_path, workers
) -> None:
    # The very first judge call takes 10 s while the later battles are judged at once and
    # acknowledged: faust's own rule committed the battles partition past the first
    # battle (nothing was committed yet), so the kill lost it for good.
    await crash_and_restart(make_config, tmp_path, workers, [
        ("judgments", 50, signal.SIGKILL),
    ], judge_concurrency=6, delay=(0.01, 0.05), slow={"judge": 1}, slow_s=10.0)


@both_brokers
async def test_sigkill_after_a_slow_start_loses_nothing(make_config, tmp_path, workers) -> None:
    # Every model takes 2 s over its first answers, while faust is still settling its
    # consumer group: events it fetched then were seen skipped and committed unprocessed.
    await crash_and_restart(make_config, tmp_path, workers, [
        ("generations", 45, signal.SIGKILL),
    ], slow={"t": 2, "c": 2, "d": 2, "judge": 2})


@both_brokers
async def test_sigterm_mid_run_then_restart_gives_exact_counts(
    make_config, tmp_path, workers
) -> None:
    await crash_and_restart(make_config, tmp_path, workers, [
        ("startup", 0, signal.SIGTERM),  # while faust starts: it used to hang here
        ("judgments", 10, signal.SIGTERM),
    ])


@both_brokers
async def test_two_workers_share_the_stream_and_one_killed_loses_nothing(
    make_config, tmp_path, workers
) -> None:
    """Two workers in one group split the partitions; one is SIGKILLed while judging, the
    other takes its partitions over (the group's session timeout), and every battle is
    still judged and counted exactly once; audit agrees."""
    with OpenAIStub(with_delay(length_judge, 0.05, 0.1)) as stub:
        url = stub.base_url
        players = (player("target", url, "t", role="target", concurrency=1)
                   + player("comp", url, "c", concurrency=1)
                   + player("d", url, "d", concurrency=1))
        config = make_config(url, players=players)
        n, competitors = N_PROMPTS, 2
        pair = []
        for name in ("a", "b"):  # one group (app id), each its own data dir
            own = msgspec.structs.replace(config, data_dir=str(tmp_path / f"data-{name}"))
            cfg_file = tmp_path / f"worker-{name}.toml"
            cfg_file.write_bytes(msgspec.toml.encode(own))
            pair.append(WorkerProcess(cfg_file, tmp_path / f"worker-{name}.log"))
        workers.extend(pair)
        a, b = pair
        await publish_raw(config, [prompt(f"p{i:02d}", f"question {i}") for i in range(n)])
        a.start()
        b.start()

        async def judging() -> bool:
            return await count(config, "judgments") >= 10

        await wait_for(judging, timeout=90, interval=0.2)
        assert await count(config, "judgments") < n * competitors, "all judged before the kill"
        assert a.signal(signal.SIGKILL) == -signal.SIGKILL
        want = {"target@v0": n * competitors, "comp": n, "d": n}

        async def finished() -> bool:
            if last_ratings(await events(config, "ratings", RatingUpdate)) != want:
                return False
            flywheel = (await table_state(config, "buffers")).get("flywheel") or {}
            waiting = flywheel.get("waiting", {})
            return len(waiting.get("sft", [])) >= n and len(waiting.get("dpo", [])) >= n

        try:
            await wait_for(finished, timeout=120, interval=0.5)
        except TimeoutError:
            raise AssertionError(
                f"not finished: {last_ratings(await events(config, 'ratings', RatingUpdate))}"
                f"\n{b.log()[-4000:]}") from None
        assert b.signal(signal.SIGTERM, timeout=45) == 0, b.log()[-3000:]
    await assert_each_battle_counted_once(config, n, competitors)


# -- 2: model-server faults inside the stream -----------------------------------------------


class Calls:
    """Thread-safe record of the stub's requests: (model, prompt text) -> request times."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[tuple[str, str], list[float]] = defaultdict(list)

    def note(self, body: dict[str, Any]) -> int:
        key = (body["model"], body["messages"][-1]["content"])
        with self.lock:
            self.times[key].append(time.monotonic())
            return len(self.times[key])


TRANSIENT = {  # fault -> the retry reason the client logs
    "timeout": "timeout",
    "http_429": "http_429",
    "http_503": "http_503",
    "malformed": "malformed",
    "empty": "empty",
    "hang": "timeout",
}


def transient_fault(kind: str, text: str) -> Reply:
    ok = completion(text)
    return {
        "timeout": Reply(body=ok, delay_s=1.5),
        "http_429": Reply(status=429, body={"error": "slow down"}, headers={"Retry-After": "1"}),
        "http_503": Reply(status=503, body="upstream unavailable"),
        "malformed": Reply(body="<html>this is not JSON</html>"),
        "empty": Reply(body=completion("")),
        "hang": Reply(body=ok, hang_after_headers_s=1.5),
    }[kind]


async def test_transient_model_faults_are_retried_and_every_battle_completes(make_config) -> None:
    calls = Calls()

    def handler(path: str, body: dict[str, Any]) -> Reply:
        if body["model"] == "judge":
            return length_judge(path, body)
        attempt = calls.note(body)
        kind = body["messages"][-1]["content"].split("fault=")[1]
        if attempt == 1:
            return transient_fault(kind, ANSWERS[body["model"]])
        return Reply(body=completion(ANSWERS[body["model"]]))

    with OpenAIStub(handler) as stub:
        url = stub.base_url
        players = (player("target", url, "t", role="target", timeout_s=0.5, max_retries=2)
                   + player("comp", url, "c", timeout_s=0.5, max_retries=2))
        config = make_config(url, players=players)
        faults = list(TRANSIENT)
        await publish_raw(config, [prompt(f"p{i}", f"q{i} fault={k}")
                                   for i, k in enumerate(faults)])
        with capture_logs() as logs:
            async with running_worker(config) as app:
                await wait_until_ready(app)

                async def rated() -> bool:
                    return await count(config, "ratings") >= 2 * len(faults)

                await wait_for(rated, timeout=60)

    gens = await events(config, "generations", Generation)
    assert len(gens) == 2 * len(faults) and all(g.ok and g.attempts == 2 for g in gens)
    assert len({b.id for b in await events(config, "battles", Battle)}) == len(faults)
    assert len(await events(config, "judgments", Judgment)) == len(faults)
    ratings = await events(config, "ratings", RatingUpdate)
    assert last_ratings(ratings) == {"target@v0": len(faults), "comp": len(faults)}
    assert await events(config, "deadletter", DeadLetter) == []
    # exactly one retry per (player, prompt), for the reason the server gave
    retries = Counter(
        (e["model"], e["reason"]) for e in logs if e["event"] == "model.retry"
    )
    assert retries == Counter((p, TRANSIENT[k]) for p in ("target", "comp") for k in faults)
    assert all(len(times) == 2 for times in calls.times.values()) and len(calls.times) == 12
    # Retry-After: 1 was honoured
    for model in ("t", "c"):
        first, second = calls.times[(model, f"q{faults.index('http_429')} fault=http_429")]
        assert second - first >= 0.95


async def test_dead_player_is_dead_lettered_and_the_healthy_players_still_battle(
    make_config, stub
) -> None:
    """A player whose server dies after the start: its prompts are dead-lettered one by one.

    (A server that is down at the start is a configuration error, reported once:
    tests/test_first_run.py.)
    """
    url = stub.base_url
    doomed = OpenAIStub(length_judge)
    doomed.__enter__()
    players = (player("target", url, "t", role="target")
               + player("comp", url, "c")
               + player("gone", doomed.base_url, "g", max_retries=1))
    config = make_config(url, players=players, extra='[battles]\nmode = "round-robin"\n')
    n = 4
    alive = True
    try:
        async with running_worker(config) as app:
            await wait_until_ready(app)
            doomed.__exit__(None, None, None)  # the server dies once the worker is running
            alive = False
            await publish_raw(config, [prompt(f"p{i}", f"q{i}") for i in range(n)])

            async def settled() -> bool:
                return (await count(config, "ratings") >= 2 * n
                        and await count(config, "deadletter") >= n)

            await wait_for(settled, timeout=60)
    finally:
        if alive:
            doomed.__exit__(None, None, None)

    dead = await events(config, "deadletter", DeadLetter)
    assert len(dead) == n
    assert sorted(d.ref for d in dead) == [f"p{i}" for i in range(n)]
    for d in dead:
        assert d.stage == "generate" and d.reason == "connect" and d.attempts == 2
        assert d.error.startswith("player gone: connect: cannot connect to")
        assert d.topic.endswith("accepted")
    gens = await events(config, "generations", Generation)
    assert Counter((g.player, g.ok) for g in gens) == {
        ("target", True): n, ("comp", True): n, ("gone", False): n
    }
    assert all(g.attempts == 2 and g.error.startswith("connect") for g in gens if not g.ok)
    battles = await events(config, "battles", Battle)
    assert len(battles) == n and {(b.player_a, b.player_b) for b in battles} == {("target", "comp")}
    assert len(await events(config, "judgments", Judgment)) == n
    ratings = await events(config, "ratings", RatingUpdate)
    assert last_ratings(ratings) == {"target@v0": n, "comp": n}


async def test_a_slow_player_does_not_hold_up_the_others(make_config) -> None:
    def handler(path: str, body: dict[str, Any]) -> Reply:
        if body["model"] == "judge":
            return length_judge(path, body)
        reply = Reply(body=completion(ANSWERS[body["model"]]))
        reply.delay_s = 2.0 if body["model"] == "c" else 0.05
        return reply

    with OpenAIStub(handler) as stub:
        url = stub.base_url
        players = (player("target", url, "t", role="target", concurrency=1)
                   + player("slow", url, "c", concurrency=1, timeout_s=10.0))
        config = make_config(url, players=players)
        n = 5
        await publish_raw(config, [prompt(f"p{i}", f"q{i}") for i in range(n)])
        async with running_worker(config) as app:
            await wait_until_ready(app)

            async def judged() -> bool:
                return await count(config, "judgments") >= n

            await wait_for(judged, timeout=60)

    gens = await events(config, "generations", Generation)
    fast = sorted(g.ts for g in gens if g.player == "target")
    slow = sorted(g.ts for g in gens if g.player == "slow")
    assert len(fast) == len(slow) == n and all(g.ok for g in gens)
    # all of the fast player's answers were out before the slow one's second answer...
    assert fast[-1] < slow[1]
    # ...and long before the slow one finished (5 answers, 2 s each, one at a time)
    assert slow[-1] - fast[-1] >= 6.0
    assert len({b.id for b in await events(config, "battles", Battle)}) == n


# -- 3: judge faults inside the stream ------------------------------------------------------

JUDGE_FAULTS = {  # prompt tag -> dead-letter reason (None: judged after a retry)
    "unparseable": "unparseable",
    "out_of_range": "out_of_range",
    "two_verdicts": "ambiguous",
    "one_game": "empty",
    "flaky": None,
    "ok": None,
}


async def test_bad_judge_replies_are_retried_then_dead_lettered_never_rated(make_config) -> None:
    judge_calls: Counter[str] = Counter()
    lock = threading.Lock()

    def handler(path: str, body: dict[str, Any]) -> Reply:
        if body["model"] != "judge":
            return length_judge(path, body)
        text = body["messages"][-1]["content"]
        tag = re.search(r"judge=(\w+)", text).group(1)  # type: ignore[union-attr]
        first_answer = text.split(">>>\n", 1)[1].split("\n<<<", 1)[0]
        with lock:
            judge_calls[tag] += 1
            nth = judge_calls[tag]
        if tag == "unparseable":
            return Reply(body=completion("Answer 1 is clearly better. Score: 9/10 vs 3/10."))
        if tag == "out_of_range":
            return judge_reply(11, 3)
        if tag == "two_verdicts":
            return Reply(body=completion(
                '{"explanation": "a", "score_1": 8, "score_2": 2} '
                '{"explanation": "b", "score_1": 2, "score_2": 8}'
            ))
        if tag == "one_game" and first_answer != ANSWERS["t"]:
            return Reply(body=completion(""))  # the swapped game never gets an answer
        if tag == "flaky" and nth <= 2:
            return Reply(body=completion("let me think about it"))
        return length_judge(path, body)

    with OpenAIStub(handler) as stub:
        config = make_config(stub.base_url)  # judge: max_retries = 2
        tags = list(JUDGE_FAULTS)
        await publish_raw(config, [prompt(f"p{i}", f"q{i} judge={t}") for i, t in enumerate(tags)])
        async with running_worker(config) as app:
            await wait_until_ready(app)

            async def settled() -> bool:
                return (await count(config, "deadletter") >= 4
                        and await count(config, "ratings") >= 4)

            await wait_for(settled, timeout=60)
            await asyncio.sleep(1.0)  # let any late (wrong) judgment surface

    battles = {b.prompt_id: b for b in await events(config, "battles", Battle)}
    assert len(battles) == len(tags)
    dead = await events(config, "deadletter", DeadLetter)
    expected = {battles[f"p{i}"].id: r for i, (t, r) in enumerate(JUDGE_FAULTS.items()) if r}
    assert {d.ref: d.reason for d in dead} == expected and len(dead) == len(expected)
    assert all(d.stage == "judge" and d.attempts == 3 for d in dead)
    assert all(d.topic.endswith("battles") for d in dead)
    judgments = await events(config, "judgments", Judgment)
    good = {battles["p4"].id, battles["p5"].id}
    assert {j.battle_id for j in judgments} == good and len(judgments) == 2
    ratings = await events(config, "ratings", RatingUpdate)
    assert {u.battle_id for u in ratings} == good
    assert last_ratings(ratings) == {"target@v0": 2, "comp": 2}
    # retried as configured: 3 attempts per failing game, never more
    assert judge_calls["unparseable"] == judge_calls["out_of_range"] == 6
    assert judge_calls["two_verdicts"] == 6
    assert judge_calls["one_game"] == 1 + 3
    assert judge_calls["flaky"] == 4 and judge_calls["ok"] == 2
    assert (await audit(config)).ok


# -- 4: bad input next to good input --------------------------------------------------------


@both_brokers
async def test_non_object_json_and_oversized_prompts_are_dead_lettered_alone(
    make_config, stub
) -> None:
    config = make_config(stub.base_url, extra="[limits]\nmax_prompt_bytes = 2000\n")
    good = [prompt(f"p{i}", f"question {i}") for i in range(4)]
    bad = [
        (b"array", b"[1, 2]", "invalid_shape"),
        (b"null", b"null", "invalid_shape"),
        (b"big", json.dumps({"id": "big", "prompt": "x" * 2500}).encode(), "oversized"),
    ]
    mixed = [good[0], bad[0][:2], good[1], bad[1][:2], good[2], bad[2][:2], good[3]]
    await publish_raw(config, mixed)
    async with running_worker(config) as app:
        await wait_until_ready(app)

        async def settled() -> bool:
            return await count(config, "ratings") >= 8 and await count(config, "deadletter") >= 3

        await wait_for(settled, timeout=60)

    dead = await events(config, "deadletter", DeadLetter)
    assert sorted((d.key, d.reason) for d in dead) == sorted((k.decode(), r) for k, _, r in bad)
    assert all(d.stage == "intake" for d in dead)
    assert {d.key: d.original for d in dead}["null"] == "null"
    gens = await events(config, "generations", Generation)
    assert sorted({g.prompt_id for g in gens}) == [f"p{i}" for i in range(4)] and len(gens) == 8
    ratings = await events(config, "ratings", RatingUpdate)
    assert last_ratings(ratings) == {"target@v0": 4, "comp": 4}


# -- 6: an API key never leaves the process -------------------------------------------------


@both_brokers
@pytest.mark.parametrize("as_mounted", [False, True], ids=["plain", "trailing-newline"])
async def test_api_key_never_appears_in_worker_logs_or_dead_letters(
    make_config, tmp_path, workers, as_mounted: bool
) -> None:
    """A key never reaches a log line, a topic or a changelog, whatever whitespace it carries
    (a key read from a mounted secret file usually ends with a newline)."""
    secret = "sk-fault-test-5f1e2d3c4b5a69788796"
    variable = secret + "\n" if as_mounted else secret
    seen_auth: list[str] = []

    def handler(path: str, body: dict[str, Any]) -> Reply:
        if body["model"] == "k":  # a proxy that echoes the request headers in its errors
            auth = next(h for _, b, h in reversed(stub.requests) if b.get("model") == "k")
            auth = auth.get("Authorization", "")
            seen_auth.append(auth)
            if len(seen_auth) % 2:
                return Reply(status=502, body=f"bad gateway; request had Authorization: {auth}")
            return Reply(status=401, body=json.dumps({"error": f"invalid api key {auth!r}"}))
        return length_judge(path, body)

    with OpenAIStub(handler) as stub:
        url = stub.base_url
        players = (player("target", url, "t", role="target")
                   + player("keyed", url, "k", api_key_env="ARENA_FAULT_KEY", max_retries=1))
        config = make_config(url, players=players)
        cfg_file = tmp_path / "worker.toml"
        cfg_file.write_bytes(msgspec.toml.encode(config))
        await publish_raw(config, [prompt("p0", "q0")])
        worker = WorkerProcess(cfg_file, tmp_path / "worker.log",
                               env={"ARENA_FAULT_KEY": variable})
        workers.append(worker)
        worker.start()

        async def dead_lettered() -> bool:  # the player's failure, then the battle-less prompt
            return (await count(config, "deadletter") >= 2
                    and await count(config, "generations") >= 2)

        await wait_for(dead_lettered, timeout=60)
        assert worker.signal(signal.SIGTERM) == 0

    assert seen_auth == [f"Bearer {secret}"] * 2  # the key was used: first a 502, then a 401
    log = worker.log()
    assert "model.retry" in log and "deadletter" in log
    assert secret not in log
    for topic in ("deadletter", "generations"):
        raw = b"".join(r.value for r in await read_all(config, topic))
        assert secret.encode() not in raw, topic
    for table in ("pending", "judged", "prompt_digests"):
        assert secret.encode() not in await raw_log(config, changelog_topic(config.app_id, table))
    letter, no_battle = await events(config, "deadletter", DeadLetter)
    assert letter.stage == "generate" and letter.reason == "http_401" and letter.attempts == 2
    assert "invalid api key" in letter.error
    # the target's only opponent failed: the prompt formed no battle, and says so
    assert (no_battle.reason, no_battle.ref) == ("no_battle", "p0")
    assert "no answer from keyed" in no_battle.error
