"""Plain aiokafka reading and writing, for everything outside the faust worker.

The CLI (publish, ratings, replay, audit), the trainer service and the
worker's models watcher use these: group-less consumers that read a topic
from a position, either to its true end (:func:`read_all`) or forever
(:func:`tail`), and a producer with the broker's quirks applied.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from arena_stream.config import Config
from arena_stream.kafka.broker import Quirks, client_settings, prepare, true_end_offsets
from arena_stream.kafka.topics import Topics

log = structlog.get_logger(__name__)


def topic_name(config: Config, key: str) -> str:
    return Topics(config.broker, config.app_id).name(key)


_prepared: set[tuple[str | None, str, str, int]] = set()


class Default:
    """The marker for "the configured timeout"."""


DEFAULT = Default()


async def ensure_ready(config: Config, *, timeout: float | Default | None = DEFAULT) -> None:
    """Wait for the broker and lay the topics out, once per process and configuration.

    Every reader and writer here goes through it, so any command may start
    before the broker or before the topics: it waits with a message instead of
    failing, and never lets a broker that auto-creates topics on a metadata
    request (the embedded one) create them with the wrong partition counts.
    Long-running commands call it first with ``timeout=None`` (wait for ever);
    others wait ``[broker] connect_timeout_s``.
    """
    key = (config.broker.bootstrap_servers, config.broker.topic_prefix, config.app_id,
           config.broker.partitions)
    if key in _prepared:
        return
    wait = config.broker.connect_timeout_s if isinstance(timeout, Default) else timeout
    await prepare(config, timeout=wait)
    _prepared.add(key)


@contextlib.asynccontextmanager
async def producer(config: Config) -> AsyncIterator[AIOKafkaProducer]:
    await ensure_ready(config)
    quirks = Quirks.for_broker(config.broker)
    p = AIOKafkaProducer(**client_settings(config), **quirks.producer_settings(), acks="all")
    try:  # stopped even when start fails (a broker gone since ensure_ready): no unclosed client
        await p.start()
        yield p
    finally:
        await p.stop()


@contextlib.asynccontextmanager
async def consumer(config: Config) -> AsyncIterator[AIOKafkaConsumer]:
    await ensure_ready(config)
    c = AIOKafkaConsumer(
        **client_settings(config),
        **Quirks.for_broker(config.broker).consumer_settings(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
    )
    try:  # stopped even when start fails, like the producer
        await c.start()
        yield c
    finally:
        await c.stop()


async def partitions(c: AIOKafkaConsumer, name: str) -> list[TopicPartition]:
    """The partitions of an existing topic (KeyError if there is none).

    All topics' metadata is asked, never one topic by name: a broker that
    auto-creates topics would create a misspelled one with the wrong partitions.
    The partitions are read from that same answer: ``c.topics()`` throws it away,
    and ``c.partitions_for_topic`` only knows the topics the consumer already
    tracks. Tansu answers every metadata request with all topics, which hid this;
    on Apache Kafka a consumer that assigns itself partitions tracks none, and
    every read found "no partitions" (the same request aiokafka's ``topics()`` makes).
    """
    cluster = await c._client.fetch_all_metadata()
    ids = cluster.partitions_for_topic(name) if name in cluster.topics() else None
    if not ids:
        raise KeyError(f"topic {name!r} does not exist")
    return [TopicPartition(name, p) for p in sorted(ids)]


async def read_all(
    config: Config,
    key: str,
    *,
    start: dict[int, int] | None = None,
    end: dict[int, int] | None = None,
) -> list[Any]:
    """Every record of a topic from ``start`` (default: the beginning) to its true end.

    ``start`` / ``end`` map partition -> offset (end exclusive). Records come
    back partition by partition, each in offset order.
    """
    name = topic_name(config, key)
    quirks = Quirks.for_broker(config.broker)
    out: list[Any] = []
    async with consumer(config) as c:
        tps = await partitions(c, name)
        c.assign(tps)
        ends = await true_end_offsets(c, tps, quirks)
        for tp in tps:
            stop = min(ends[tp], (end or {}).get(tp.partition, ends[tp]))
            first = (start or {}).get(tp.partition, 0)
            if first >= stop:
                continue
            c.seek(tp, first)
            while True:
                batch = await c.getmany(tp, timeout_ms=2000, max_records=5000)
                records = batch.get(tp, [])
                if not records:
                    if await c.position(tp) >= stop:
                        break
                    continue
                for r in records:
                    if r.offset >= stop:
                        break
                    out.append(r)
                if records[-1].offset + 1 >= stop:
                    break
    return out


async def tail(config: Config, *keys: str, from_beginning: bool = True) -> AsyncIterator[Any]:
    """Follow topics forever, all partitions, without a consumer group.

    Each record's ``topic`` attribute tells which topic it came from.
    """
    async with consumer(config) as c:
        tps = []
        for key in keys:
            tps.extend(await partitions(c, topic_name(config, key)))
        c.assign(tps)
        if from_beginning:
            await c.seek_to_beginning(*tps)
        else:
            await c.seek_to_end(*tps)
        while True:
            batch = await c.getmany(timeout_ms=500, max_records=1000)
            for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
                for record in batch[tp]:
                    yield record
