"""The faust application: topics and tables declared once, each agent a few lines around a stage.

Topology (every topic keyed by prompt id unless noted; docs/architecture.md draws it)::

    prompts ──intake──► prompts.checked ──admit──► prompts.accepted
    prompts.accepted ──generate-<player> (one agent per player)──► generations
    generations ──collect──► battles ──judge──► judgments (1 partition, the rating log)
    judgments ──rate + route──► ratings (key: model), leaderboard snapshots,
                               train.<kind> ──trigger──► train.jobs ──(trainer)──► models
    models ──(every worker tails it)──► the players switch to the newest version
    anything that fails ──► deadletter, with the reason and the original bytes

What each stage does is a plain function in :mod:`arena_stream.streams.stages`;
this module only connects them: it turns a faust event into a
:class:`~arena_stream.streams.stages.base.Record`, calls the stage, sends the
:class:`~arena_stream.streams.stages.base.Outcome`'s events, waits for the
broker's acknowledgements, and then writes the stage's state (:meth:`Wiring.finish`).
That order is what makes every stage idempotent under Kafka's at-least-once
delivery: work is recorded as done only once its output is safely in the log.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

import faust
import msgspec
import structlog

from arena_stream.arena.costs import Budget
from arena_stream.arena.kinds import KINDS
from arena_stream.config import Config
from arena_stream.kafka import commits
from arena_stream.kafka.broker import Quirks, TopicPlan, faust_broker_credentials
from arena_stream.kafka.topics import TOPICS, Topics
from arena_stream.logging import scrub_bytes
from arena_stream.ratings.elo import PairCount
from arena_stream.schemas import DeadLetter, Generation, encode
from arena_stream.streams.runtime import Runtime, table_writes_for
from arena_stream.streams.stages import (
    collect,
    evaluate,
    generate,
    intake,
    judge,
    rate,
    route,
    sweep,
    trigger,
    versions,
)
from arena_stream.streams.stages.base import Outcome, Record, Retention, StateValue, failure

log = structlog.get_logger("arena_stream.streams")

S = TypeVar("S", bound=msgspec.Struct)

RATE_BATCH = 200  # judgments per Elo book write at most
RATE_WITHIN_S = 0.01  # how long a partial batch waits for more judgments
TRIGGER_BATCH = 500  # buffer events per trigger state write at most
TRIGGER_WITHIN_S = 0.05

# Every table, with the type of its values (each a versioned msgspec Struct) and whether
# it is partitioned like the prompt topics (True) or has one partition.
TABLES: dict[str, tuple[type[msgspec.Struct], bool]] = {
    intake.TABLE: (intake.SeenPrompt, True),
    collect.TABLE: (collect.PendingPrompt, True),
    judge.TABLE: (judge.Judged, True),
    rate.TABLE: (rate.EloState, False),
    rate.LOG_TABLE: (rate.Counted, False),
    route.TABLE: (route.Routed, False),
    trigger.TABLE: (msgspec.Struct, False),  # two value types, see TriggerStore
}


class TypedTable(Generic[S]):
    """A faust table whose values are one msgspec Struct type.

    Each value is kept as its JSON text: faust's changelog codec is JSON, so the
    text travels as a JSON string and comes back as the same text on recovery,
    and in memory a string costs a fraction of the dict of builtins faust would
    otherwise hold. Every read decodes into the Struct, so a stored shape that no
    longer fits its type fails loudly at the read, never half-silently later.
    """

    def __init__(self, table: faust.TableT, kind: type[S]) -> None:
        self.table = table
        self.decoder = msgspec.json.Decoder(kind)

    def get(self, key: str) -> S | None:
        raw = self.table.get(key)
        return None if raw is None else self.decode(key, raw)

    def decode(self, key: str, raw: Any) -> Any:
        if isinstance(raw, str | bytes):
            return self.decoder.decode(raw)
        return msgspec.convert(raw, self.decoder.type)  # written before values were text

    def items(self) -> Iterator[tuple[str, S]]:
        for key, raw in list(self.table.items()):
            if raw is not None:
                yield key, self.decode(key, raw)

    def set(self, key: str, value: msgspec.Struct | None) -> None:
        if value is None:
            self.table.pop(key, None)
        else:
            self.table[key] = encode(value).decode()


class TriggerTable(TypedTable[Any]):
    """``buffers`` holds the trigger's state under one key and a record per buffered sample."""

    def __init__(self, table: faust.TableT) -> None:
        super().__init__(table, trigger.SeenSample)
        self.state = msgspec.json.Decoder(trigger.TriggerState)

    def decode(self, key: str, raw: Any) -> Any:
        decoder = self.state if key == trigger.STATE_KEY else self.decoder
        if isinstance(raw, str | bytes):
            return decoder.decode(raw)
        return msgspec.convert(raw, decoder.type)


class Overlay:
    """A table seen through the writes of a batch not yet written (rate, trigger)."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.pending: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.pending[key] if key in self.pending else self.base.get(key)

    def items(self) -> Iterator[tuple[str, Any]]:
        return self.base.items()


class FaustStore:
    """The stages' :class:`~arena_stream.streams.stages.base.Store` over the app's tables."""

    def __init__(self, tables: dict[str, Any]) -> None:
        self.tables = tables

    def table(self, name: str) -> Any:
        return self.tables[name]


class BatchStore(FaustStore):
    """A store whose writes are held back until the batch's events are acknowledged."""

    def __init__(self, tables: dict[str, Any]) -> None:
        super().__init__({name: Overlay(t) for name, t in tables.items()})

    def hold(self, outcome: Outcome, record: Record) -> None:
        for w in outcome.writes:
            self.tables[w.table].pending[w.key] = stamped(w.value, record)


def changelog_size(value: msgspec.Struct) -> int:
    """Bytes of a table value on its changelog: its JSON text, as a JSON string."""
    text = encode(value)
    return len(text) + text.count(b'"') + text.count(b"\\") + 2


def stamped(value: Any, record: Record) -> Any:
    """A table value marked with when and from which input record it was written."""
    if not isinstance(value, StateValue):
        return value
    return msgspec.structs.replace(value, at=time.time(), partition=record.partition,
                                   offset=record.offset)


class Reaper:
    """Deletes a table's expired keys (its :class:`Retention`), a few per event.

    faust ties a table write, a delete included, to the partition of the event being
    processed, so keys are reaped by the agent working on their partition, from a
    queue of (written at, key) per partition, oldest first. The queue is rebuilt
    from the table once per partition after a start or rebalance.
    """

    PER_EVENT = 16  # keys reaped per event at most: the work is spread, never a pause

    def __init__(self, app: faust.App, table: TypedTable[Any], rule: Retention,
                 keep_s: float, topic_of: Callable[[str, Any], str | None]) -> None:
        self.app = app
        self.table = table
        self.rule = rule
        self.keep_s = keep_s
        self.topic_of = topic_of  # (key, value) -> the input topic its offset is on
        self.queues: dict[int, collections.deque[tuple[float, str]]] = {}
        self.reaped = 0

    def noted(self, key: str, value: Any) -> None:
        if isinstance(value, StateValue) and value.partition in self.queues:
            self.queues[value.partition].append((value.at, key))

    def queue(self, partition: int) -> collections.deque[tuple[float, str]]:
        queue = self.queues.get(partition)
        if queue is None:
            found = sorted((v.at, k) for k, v in self.table.items()
                           if isinstance(v, StateValue) and v.partition == partition)
            queue = self.queues[partition] = collections.deque(found)
        return queue

    def reap(self, partition: int, now: float) -> None:
        from faust.types import TP

        queue = self.queue(partition)
        done = 0
        while queue and done < self.PER_EVENT:
            at, key = queue[0]
            if now - at < self.keep_s:
                return
            value = self.table.get(key)
            if value is None or value.at != at or not self.rule.applies(value):
                queue.popleft()  # rewritten since (queued again then), gone, or not finished
                continue
            topic = self.topic_of(key, value)
            committed = commits.committed_offset(self.app, TP(topic, partition)) if topic else None
            if committed is None or value.offset >= committed:
                return  # its input may still come again: wait
            self.table.set(key, None)
            queue.popleft()
            done += 1
        self.reaped += done


def record_of(event: Any) -> Record:
    msg = event.message
    return Record(topic=msg.topic, partition=msg.partition, offset=msg.offset, key=msg.key,
                  value=msg.value, timestamp_ms=int((msg.timestamp or 0) * 1000))


def create_app(config: Config, runtime: Runtime | None = None) -> Wiring:
    """Build the app for ``config`` with its agents wired; nothing is started or contacted."""
    datadir = Path(config.data_dir) / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    quirks = Quirks.for_broker(config.broker)
    settings: dict[str, Any] = dict(
        broker=f"kafka://{config.broker.bootstrap_servers}",
        store="memory://",
        autodiscover=False,
        topic_partitions=config.broker.partitions,
        topic_replication_factor=config.broker.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        web_enabled=False,  # the live page is arena_stream.web.live, served beside the worker
        broker_credentials=faust_broker_credentials(config),
        processing_guarantee="exactly_once" if config.broker.exactly_once else "at_least_once",
        datadir=str(datadir),
        stream_buffer_maxsize=1024,  # bounded in-flight work per stream
        # A rebalance must not wait for the events in flight to be acknowledged: with
        # several agents on one topic (one per player) faust's clearing of their queues
        # drops a message's remaining references unacknowledged, and the revoke waited
        # for it for ever ("wait_empty: Waiting for tasks"). The worker then fell out of
        # the group and nobody consumed its partitions again (two workers on Apache
        # Kafka, one killed: tests/test_faults.py). Not waiting is safe here: the commit
        # guard commits only finished work, acknowledgements of a past generation do not
        # count, and the new owner redoes what was in flight (every stage is idempotent).
        stream_wait_empty=False,
        logging_config=None,
    )
    settings.update(quirks.faust_settings())
    if config.broker.session_timeout_s is not None:
        session = config.broker.session_timeout_s
        settings.update(broker_session_timeout=session, broker_rebalance_timeout=session,
                        broker_heartbeat_interval=min(3.0, session / 3))
    app = faust.App(config.app_id, **settings)
    quirks.apply_to_faust(app)
    commits.install(app)  # faust's own commit rule can step over unfinished work
    wiring = Wiring(app, config, runtime or Runtime(config))
    wiring.register()
    return wiring


class Wiring:
    """Connects topics and tables to the stages for one app; see the module docstring."""

    def __init__(self, app: faust.App, config: Config, runtime: Runtime) -> None:
        self.app = app
        self.config = config
        self.runtime = runtime
        self.names = Topics(config.broker, config.app_id)
        self.topics = {
            spec.key: app.topic(self.names.name(spec.key),
                                partitions=self.names.partitions_of(spec.key),
                                key_serializer="raw", value_serializer="raw")
            for spec in TOPICS
        }
        self.faust_tables = {
            name: app.Table(name, default=None,
                            partitions=config.broker.partitions if partitioned else 1)
            for name, (_, partitioned) in TABLES.items()
        }
        self.tables: dict[str, Any] = {
            name: TypedTable(self.faust_tables[name], kind)
            for name, (kind, _) in TABLES.items() if name != trigger.TABLE
        }
        self.tables[trigger.TABLE] = TriggerTable(self.faust_tables[trigger.TABLE])
        self.store = FaustStore(self.tables)
        self.reapers, self.reapers_by_topic = self.retention()
        self.budget = Budget(config)
        self.snapshots = Snapshots(self.send)
        self.heldout = heldout_prompts(config)

    async def within_budget(self) -> None:
        """Hold the intake once the budget is spent: new prompts wait in their topic.

        What was admitted before still finishes (its cost is already committed), so the
        spend can pass the budget by what was in flight. Raising ``[budget] usd`` and
        restarting the workers lets the waiting prompts in.
        """
        if not self.budget.exhausted():
            return
        log.warning("budget.spent", why=self.budget.why())
        while self.budget.exhausted():
            await asyncio.sleep(60.0)

    async def count_spending(self) -> None:
        """Tally every generation and judgment ever sent (every worker sees the total)."""
        from arena_stream.kafka.io import tail

        names = {self.names.name(k): k for k in ("generations", "judgments")}
        async for record in tail(self.config, *names):
            if record.value is not None:
                self.budget.add_record(names[record.topic], record.value)

    def retention(self) -> tuple[dict[str, Reaper], dict[str, list[Reaper]]]:
        """A reaper per table that forgets finished work, keyed by table and by input topic."""
        name = self.names.name
        buffer_topic = {k.name: name(k.topic) for k in KINDS.values()}

        def fixed(topic: str) -> Callable[[str, Any], str | None]:
            return lambda key, value: topic

        def seen_sample(key: str, value: Any) -> str | None:  # "seen:<kind>:<id>"
            return buffer_topic.get(key.split(":", 2)[1]) if key.startswith("seen:") else None

        plan = [  # table, its rule, where its values' offsets are, the topics that reap it
            (intake.TABLE, intake.RETENTION, fixed(name("checked")), [name("checked")]),
            (collect.TABLE, collect.RETENTION, fixed(name("generations")), [name("generations")]),
            (judge.TABLE, judge.RETENTION, fixed(name("battles")), [name("battles")]),
            (rate.LOG_TABLE, rate.RETENTION, fixed(name("judgments")), [name("judgments")]),
            (route.TABLE, route.RETENTION, fixed(name("judgments")), [name("judgments")]),
            (trigger.TABLE, trigger.RETENTION, seen_sample, list(buffer_topic.values())),
        ]
        by_table: dict[str, Reaper] = {}
        by_topic: dict[str, list[Reaper]] = collections.defaultdict(list)
        for table, rule, topic_of, topics in plan:
            reaper = Reaper(self.app, self.tables[table], rule, rule.keep_s(self.config),
                            topic_of)
            by_table[table] = reaper
            for topic in topics:
                by_topic[topic].append(reaper)
        return by_table, dict(by_topic)

    # -- sending and finishing ------------------------------------------------------------

    async def enqueue(self, topic: str, key: str, event: Any) -> Any:
        """Hand a record to the producer; the returned future resolves on the broker's ack."""
        return await self.send_bytes(topic, key, self.encode(event))

    async def send_bytes(self, topic: str, key: str, value: bytes) -> Any:
        return await self.topics[topic].send(key=key.encode(), value=value)

    @staticmethod
    def encode(event: Any) -> bytes:
        """An event's bytes, secrets masked (a server that echoes the request's headers
        into an error message must not put an API key on a topic)."""
        return scrub_bytes(encode(event))

    async def send(self, topic: str, key: str, event: Any) -> None:
        await (await self.enqueue(topic, key, event))

    async def publish(self, outcome: Outcome,
                      encoded: list[tuple[str, str, bytes]] | None = None) -> None:
        """Send every event of ``outcome`` and wait until the broker has them all.

        Waiting for the acknowledgements, not just for the records to be queued, matters:
        the caller records the work as done in a table right after, and a table write can
        reach the broker before a queued record does (another partition, one batch per
        partition per request), so a crash in between would lose the output for good.
        """
        if encoded is None:
            encoded = [(e.topic, e.key, self.encode(e.event)) for e in outcome.emits]
        acks = [await self.send_bytes(topic, key, value) for topic, key, value in encoded]
        await asyncio.gather(*acks)
        self.runtime.counters.update(outcome.counters)
        self.observe(outcome, encoded)
        for e in outcome.emits:
            if isinstance(e.event, DeadLetter):
                d = e.event
                log.warning("deadletter", stage=d.stage, reason=d.reason, ref=d.ref,
                            error=d.error[:300])

    def observe(self, outcome: Outcome, encoded: list[tuple[str, str, bytes]]) -> None:
        """Feed what was sent to the worker's telemetry and budget."""
        telemetry = self.runtime.telemetry
        for e, (topic, _, value) in zip(outcome.emits, encoded, strict=True):
            # an answer without a call (reference, reused held-out answer) has no latency
            if isinstance(e.event, Generation) and not (e.event.ok and e.event.attempts == 0):
                telemetry.generation_seconds.labels(
                    e.event.player, "true" if e.event.ok else "false").observe(e.event.latency_s)
            if topic in ("judgments", "deadletter") and telemetry.judges is not None:
                with contextlib.suppress(msgspec.MsgspecError):
                    telemetry.judges.add_record(topic, value)

    def too_large(self, outcome: Outcome, encoded: list[tuple[str, str, bytes]]) -> list[str]:
        """What in ``outcome`` exceeds the largest record the broker takes."""
        limit = self.config.limits.max_record_bytes
        return [f"{topic} ({len(value)} bytes)" for topic, _, value in encoded
                if len(value) > limit] + [
            f"table {w.table} ({size} bytes)" for w in outcome.writes
            if w.value is not None and (size := changelog_size(w.value)) > limit
        ]

    def write(self, outcome: Outcome, record: Record) -> None:
        for w in outcome.writes:
            self.put(w.table, w.key, stamped(w.value, record))
        self.reap(record)

    def put(self, table: str, key: str, value: Any) -> None:
        self.tables[table].set(key, value)
        reaper = self.reapers.get(table)
        if reaper is not None and value is not None:
            reaper.noted(key, value)

    def reap(self, record: Record) -> None:
        """Expire what the tables fed by ``record``'s topic may forget (see Reaper)."""
        now = time.time()
        for reaper in self.reapers_by_topic.get(record.topic, ()):
            reaper.reap(record.partition, now)

    def internal_topics(self) -> dict[str, TopicPlan]:
        """faust's own topics for this app (table changelogs, its leader topic), as faust
        names and configures them, so they exist with the right layout before it starts."""
        plans = {}
        for table in self.faust_tables.values():
            topic = table.changelog_topic
            plans[topic.get_topic_name()] = TopicPlan(topic.partitions or 1, compacted=True)
        leader = self.app._leader_assignor._leader_topic  # faust names it
        plans[leader.get_topic_name()] = TopicPlan(1)
        return plans

    async def finish(self, outcome: Outcome, event: Any, stage: str) -> None:
        """Publish the outcome, then write its state; or leave the event to be redone.

        A record over the broker's limit would fail in the producer once the stage is
        done, and a table write over it would fail on every retry (the worker would
        crash-loop on the same input): such an outcome becomes one dead letter instead.
        """
        encoded = [(e.topic, e.key, self.encode(e.event)) for e in outcome.emits]
        too_large = self.too_large(outcome, encoded)
        if too_large:
            refused = Outcome()
            refused.dead(failure(
                stage, "oversized_output",
                f"the result would exceed {self.config.limits.max_record_bytes} bytes: "
                + ", ".join(too_large), record_of(event),
            ))
            outcome, encoded = refused, [(e.topic, e.key, self.encode(e.event))
                                         for e in refused.emits]
        await self.publish(outcome, encoded)
        self.write(outcome, record_of(event))
        if outcome.redo:
            commits.redo(event)

    async def run(self, stage: str, event: Any,
                  work: Callable[[Record], Outcome | Awaitable[Outcome]]) -> Outcome:
        """Run one stage on one event; anything unexpected is a dead letter, never a crash."""
        record = record_of(event)
        try:
            result = work(record)
            outcome = await result if inspect.isawaitable(result) else result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("stage.error", stage=stage, topic=record.topic, offset=record.offset)
            outcome = Outcome()
            outcome.dead(failure(stage, "internal_error", f"{type(exc).__name__}: {exc}",
                                 record))
        return outcome

    # -- the agents -----------------------------------------------------------------------

    def register(self) -> None:
        app, config, rt, topics = self.app, self.config, self.runtime, self.topics
        expected = [p.name for p in config.players]

        intake_ctx = intake.IntakeContext(limits=config.limits,
                                          decontaminator=rt.decontaminator)

        @app.agent(topics["prompts"], name="intake")
        async def intake_agent(stream: faust.StreamT) -> None:
            async for event in stream.events():
                await self.within_budget()
                out = await self.run("intake", event, partial(intake.intake, ctx=intake_ctx))
                await self.finish(out, event, "intake")

        if self.budget.enabled:
            app.task(self.count_spending)

        admit_ctx = intake.AdmitContext(round=rt.round)

        @app.agent(topics["checked"], name="admit")
        async def admit_agent(stream: faust.StreamT) -> None:
            async for event in stream.events():
                out = await self.run("intake", event,
                                     partial(intake.admit, store=self.store, ctx=admit_ctx))
                await self.finish(out, event, "intake")

        for player in config.players:
            self.generator(player.name, player.concurrency, expected)

        collect_ctx = collect.CollectContext(mode=config.battles.mode,
                                             target_player=config.target.name,
                                             expected_players=expected)

        @app.agent(topics["generations"], name="collect")
        async def collect_agent(stream: faust.StreamT) -> None:
            async for event in stream.events():
                out = await self.run("battle", event,
                                     partial(collect.collect, store=self.store, ctx=collect_ctx))
                await self.finish(out, event, "battle")

        sweep_ctx = sweep.SweepContext(battles=config.battles, expected_players=expected,
                                       generations_topic=self.names.name("generations"))

        @app.timer(interval=max(1.0, sweep_ctx.after_s / 4))
        async def sweep_timer() -> None:
            await self.publish(sweep.sweep(self.tables[collect.TABLE], sweep_ctx))

        judge_ctx = judge.JudgeContext(judge=rt.judge)

        @app.agent(topics["battles"], name="judge", concurrency=config.judge.concurrency)
        async def judge_agent(stream: faust.StreamT) -> None:
            seconds = rt.telemetry.judgment_seconds
            async for event in stream.events():
                started = time.perf_counter()
                out = await self.run("judge", event,
                                     partial(judge.judge, store=self.store, ctx=judge_ctx))
                if out.emits:  # not a battle already judged
                    verdict = "judged" if out.events("judgments") else "dead_letter"
                    seconds.labels(verdict).observe(time.perf_counter() - started)
                await self.finish(out, event, "judge")

        # Rating and routing share one agent on the judgments topic: with two agents on
        # one topic, faust's shutdown was seen to acknowledge an event one of them had not
        # processed (a judgment never rated). Both are idempotent on their own.
        app.agent(topics["judgments"], name="rate")(self.rate_agent)
        app.task(self.snapshots.run)

        self.trigger_wiring()

        @app.task
        async def watch_models() -> None:
            from arena_stream.kafka.io import tail

            target = config.target.name
            await self.evaluate(rt.client(target).version)  # the version this worker starts with
            async for rec in tail(config, "models"):
                version = versions.read_version(rec.value)
                if version is None or not rt.chain.accept(version):
                    continue  # unreadable, already taken, or not the next version
                if version.name not in rt.player_names:
                    continue
                if await versions.apply_version(rt.client(version.name), version):
                    rt.versions[version.name] = version
                if version.name == target and rt.client(target).version == version.version:
                    await self.evaluate(version.version)

    async def evaluate(self, version: int) -> None:
        """Publish the held-out set for ``version`` (ids make a repeat harmless; see evaluate)."""
        if not self.heldout:
            return
        await self.publish(evaluate.evaluate(version, self.heldout, time.time()))
        log.info("evaluation.published", version=version, prompts=len(self.heldout))

    def generator(self, player: str, concurrency: int, expected: list[str]) -> None:
        """One agent per player, so a slow player queues only its own work."""
        rt, config = self.runtime, self.config
        # the target is what an evaluation measures: only its opponents' answers are reused
        memo = (None if config.player(player).role == "target"
                else generate.HeldoutAnswers())

        def context() -> generate.GenerateContext:
            # Built per event: the client's version changes when a new one is published.
            return generate.GenerateContext(
                player=player, client=rt.client(player), rated_name=rt.rated_name(player),
                expected_players=expected, deadline_s=config.battles.deadline_s,
                heldout_answers=memo,
            )

        async def generate_agent(stream: faust.StreamT) -> None:
            async for event in stream.events():
                out = await self.run(f"generate.{player}", event,
                                     lambda r: generate.generate(r, context()))
                await self.finish(out, event, "generate")

        self.app.agent(self.topics["accepted"], name=f"generate-{player}",
                       concurrency=concurrency)(generate_agent)

    async def rate_agent(self, stream: faust.StreamT) -> None:
        """Judgments in batches: one Elo book read and write per batch.

        Every output of the batch is sent, then acknowledged together, before any
        table records the work as done. A crash in between makes the batch run again:
        outputs repeat (same ids, which readers and the trigger ignore), nothing is
        counted twice (the book's offset watermark, ``rating_log``).
        """
        route_ctx = route.RouteContext(routing=self.config.routing)
        rate_ctx = rate.RateContext(ratings=self.config.ratings, in_order=self.in_order)
        every = self.config.ratings.snapshot_every
        async for events in stream.take_events(RATE_BATCH, within=RATE_WITHIN_S):
            if not events:
                continue
            book = self.tables[rate.TABLE].get(rate.BOOK_KEY) or rate.EloState()
            before = book.judgments
            store = BatchStore(self.tables)
            batch = Outcome()
            redo: list[Any] = []
            stages: list[tuple[str, Callable[[Record], Outcome]]] = [
                ("route", partial(route.route, store=store, ctx=route_ctx)),
                ("ratings", partial(rate.rate, book=book, store=store, ctx=rate_ctx)),
            ]
            for event in events:
                for stage, work in stages:
                    out = await self.run(stage, event, work)
                    store.hold(out, record_of(event))
                    batch.merge(Outcome(emits=out.emits, counters=out.counters))
                    if out.redo:
                        redo.append(event)
            await self.publish(batch)
            self.write_held(store, events[-1])
            self.put(rate.TABLE, rate.BOOK_KEY, stamped(book, record_of(events[-1])))
            for event in redo:
                commits.redo(event)
            if every and book.judgments // every > before // every:
                self.snapshots.offer(book)

    def write_held(self, store: BatchStore, event: Any) -> None:
        """Write a batch's held table writes (every table here has one partition)."""
        table_writes_for(event)
        for name, overlay in store.tables.items():
            for key, value in overlay.pending.items():
                self.put(name, key, value)
        self.reap(record_of(event))

    def in_order(self, record: Record, last: int) -> bool:
        """Whether ``record`` may be applied after offset ``last``: nothing in between needs it."""
        if record.offset == last + 1:
            return True
        from faust.types import TP

        tp = TP(record.topic, record.partition)
        start = last + 1 if last >= 0 else commits.first_offset(self.app, tp)
        return start is None or commits.nothing_between(self.app, tp, start, record.offset)

    def trigger_wiring(self) -> None:
        config, rt = self.config, self.runtime
        names = {entry.name: self.names.name(entry.topic) for entry in KINDS.values()}
        ctx = trigger.TriggerContext(
            training=config.training, target=config.target.name,
            kind_of_topic={topic: kind for kind, topic in names.items()},
            topic_of_kind=names,
            serving_version=lambda: rt.client(config.target.name).version,
        )
        channel = self.app.topic(*names.values(), self.names.name("jobs"),
                                 key_serializer="raw", value_serializer="raw")

        @self.app.agent(channel, name="trigger")
        async def trigger_agent(stream: faust.StreamT) -> None:
            # The state is written back once per batch of events, not once per event:
            # per event, the whole buffer was re-encoded and re-sent, quadratic in the
            # backlog (bench/results/pipeline.md).
            async for events in stream.take_events(TRIGGER_BATCH, within=TRIGGER_WITHIN_S):
                if not events:
                    continue
                table = self.tables[trigger.TABLE]
                state = table.get(trigger.STATE_KEY) or trigger.TriggerState()
                store = BatchStore(self.tables)
                batch = Outcome()
                fold = partial(trigger.trigger, state=state, store=store, ctx=ctx)
                for event in events:
                    out = await self.run("train", event, fold)
                    store.hold(out, record_of(event))
                    batch.merge(out)
                await self.publish(batch)
                self.write_held(store, events[-1])
                self.put(trigger.TABLE, trigger.STATE_KEY, stamped(state, record_of(events[-1])))
                for job in batch.events("jobs"):
                    log.info("job.emitted", job_id=job.id, kind=job.kind,
                             samples=len(job.sample_ids), base_version=job.base_version)

        if config.training.max_wait_s > 0:
            from arena_stream.schemas import JobStatus

            @self.app.timer(interval=max(1.0, config.training.max_wait_s / 4))
            async def tick() -> None:
                # Tables change only inside an event, so the clock is a message.
                await self.send("jobs", "tick", JobStatus(job_id="", state="tick", ts=time.time()))


def heldout_prompts(config: Config) -> list[Any]:
    """``[evaluation] heldout``'s prompts; a file that is missing or has none is a config error."""
    source = config.evaluation.heldout
    if not source:
        return []
    from arena_stream.config import ConfigError
    from arena_stream.datasets.prompts import read_prompts, resolve_source

    path = resolve_source(source)
    if not Path(path).is_file():
        raise ConfigError(f"evaluation.heldout: file not found: {path}")
    found = read_prompts(path, config.limits)
    if found.bad or not found.good:
        first = f" (line {found.bad[0][0]}: {found.bad[0][1]})" if found.bad else ""
        raise ConfigError(f"evaluation.heldout: {path}: {len(found.good)} usable prompts, "
                          f"{len(found.bad)} bad{first}")
    return [line.prompt for line in found.good]


class Snapshots:
    """Bradley-Terry leaderboard snapshots, fitted off the rating path.

    The rate agent offers the book every ``snapshot_every`` judgments and goes on; one
    task fits and publishes them in order. When fits fall behind, only the newest book
    waiting is kept: a snapshot is a summary, not a log.
    """

    def __init__(self, send: Callable[[str, str, Any], Awaitable[None]]) -> None:
        self._send = send
        self._latest: tuple[list[PairCount], int] | None = None
        self._wake = asyncio.Event()

    def offer(self, book: rate.EloState) -> None:
        # A copy: the rate agent goes on changing the book while the fit runs in a thread.
        self._latest = ([msgspec.structs.replace(p) for p in book.pairs], book.judgments)
        self._wake.set()

    async def run(self) -> None:
        from arena_stream.ratings.snapshots import leaderboard_snapshot

        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._latest is None:
                continue
            pairs, judgments = self._latest
            self._latest = None
            try:
                snap = await asyncio.to_thread(leaderboard_snapshot, pairs, judgments)
                if snap is not None:
                    await self._send("leaderboard", "leaderboard", snap)
            except Exception as exc:  # a snapshot is a convenience; never stop the ratings
                log.warning("leaderboard.snapshot_failed", error=str(exc))
