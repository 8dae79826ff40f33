"""Reading any topic back for a window of time or offsets, writing it out, re-judging it.

Correct on the embedded broker too: its ``offsets_for_times`` answers 0 for a
time past the end (Apache Kafka answers "none"), and its end offsets can
undercount. So the broker's answer is only a starting hint: every record is
checked against the window by its own timestamp, and reading stops at the
true end (:func:`arena_stream.broker.true_end_offsets`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from arena_stream.config import Config
from arena_stream.kafka.broker import Quirks
from arena_stream.kafka.io import consumer, partitions, read_all, topic_name
from arena_stream.schemas import Battle, Judgment, encode

if TYPE_CHECKING:  # the judges (model clients) are imported only by rejudge
    from arena_stream.judges.base import Judge

T = TypeVar("T")


class Row(msgspec.Struct):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    value: Any  # the decoded JSON, or the raw text when it is not JSON


def parse_time(value: str | float | None) -> float | None:
    """Unix seconds from unix seconds or an ISO-8601 time (naive means UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except ValueError:
        pass
    text = value.replace("Z", "+00:00")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


async def start_offsets(config: Config, key: str, from_time: float) -> dict[int, int]:
    """Per partition, an offset at or before the first record at ``from_time``."""
    quirks = Quirks.for_broker(config.broker)
    async with consumer(config) as c:
        tps = await partitions(c, topic_name(config, key))
        hints = await c.offsets_for_times({tp: int(from_time * 1000) for tp in tps})
    out = {}
    for tp in tps:
        hint = hints.get(tp)
        # Tansu answers 0 instead of None past the end: a hint of 0 says nothing.
        if hint is None:
            out[tp.partition] = 0 if quirks.offsets_for_times_past_end_is_zero else -1
        else:
            out[tp.partition] = hint.offset
    return out


async def read_window(
    config: Config,
    key: str,
    *,
    from_time: float | None = None,
    to_time: float | None = None,
    from_offset: int | None = None,
    to_offset: int | None = None,
) -> list[Row]:
    """Records of a topic inside the window, partition by partition in offset order."""
    ids: list[int] = []
    if from_offset is not None or to_offset is not None:  # one metadata look-up for both
        async with consumer(config) as c:
            ids = [tp.partition for tp in await partitions(c, topic_name(config, key))]
    start: dict[int, int] | None = None
    if from_offset is not None:
        start = dict.fromkeys(ids, from_offset)
    elif from_time is not None:
        start = await start_offsets(config, key, from_time)
        start = {p: o for p, o in start.items() if o >= 0} or {}
        if not start:
            return []
    end = None
    if to_offset is not None:
        end = dict.fromkeys(ids, to_offset + 1)
    records = await read_all(config, key, start=start, end=end)
    rows = []
    for r in records:
        ts = r.timestamp / 1000.0
        if from_time is not None and ts < from_time:
            continue
        if to_time is not None and ts > to_time:
            continue
        rows.append(Row(r.topic, r.partition, r.offset, r.timestamp,
                        r.key.decode("utf-8", "replace") if r.key is not None else None,
                        _value(r.value)))
    return rows


def _value(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw.decode("utf-8", "replace")


def write_rows(rows: Iterable[Row], path: str | Path) -> int:
    """Write rows as Parquet (``.parquet``) or JSON lines (anything else)."""
    rows = list(rows)
    path = Path(path)
    if path.suffix == ".parquet":
        import polars as pl

        frame = pl.DataFrame(
            {
                "topic": [r.topic for r in rows],
                "partition": [r.partition for r in rows],
                "offset": [r.offset for r in rows],
                "timestamp_ms": [r.timestamp_ms for r in rows],
                "key": [r.key for r in rows],
                # JSON text: every event type fits one column; polars' json_decode
                # or any Parquet reader turns it back into fields.
                "value": [json.dumps(r.value, ensure_ascii=False) for r in rows],
            },
            schema={"topic": pl.String, "partition": pl.Int32, "offset": pl.Int64,
                    "timestamp_ms": pl.Int64, "key": pl.String, "value": pl.String},
        )
        frame.write_parquet(path)
    else:
        with open(path, "wb") as f:
            for r in rows:
                f.write(msgspec.json.encode(r) + b"\n")
    return len(rows)


async def events_in_window(
    config: Config, key: str, kind: type[T], **window: Any
) -> tuple[list[tuple[Row, T]], list[Row]]:
    """Every record of a topic in the window decoded as ``kind``, and the records that are not.

    ``window`` is :func:`read_window`'s keywords. Records come partition by
    partition, each in offset order.
    """
    rows = await read_window(config, key, **window)
    good: list[tuple[Row, T]] = []
    bad: list[Row] = []
    for row in rows:
        try:
            good.append((row, msgspec.convert(row.value, kind)))
        except msgspec.ValidationError:
            bad.append(row)
    return good, bad


async def judgments_in_window(
    config: Config, *, from_time: float | None = None, to_time: float | None = None,
    key: str = "judgments",
) -> list[tuple[int, Judgment]]:
    """(offset, judgment) for every judgment in the window, in log order.

    The judgments topic has one partition, so offset order is the order the
    ratings agent applied them in. ``key``: another topic of judgments (a
    ``rejudge`` topic's full name).
    """
    good, _ = await events_in_window(config, key, Judgment, from_time=from_time,
                                     to_time=to_time)
    return [(row.offset, judgment) for row, judgment in good]


def read_judgments(
    config: Config, *, from_time: float | None = None, to_time: float | None = None,
    key: str = "judgments",
) -> list[Judgment]:
    """Every judgment in the window (for synchronous callers such as the CLI)."""
    import asyncio

    found = asyncio.run(judgments_in_window(config, from_time=from_time, to_time=to_time,
                                            key=key))
    return [j for _, j in found]


# --------------------------------------------------------------------------- re-judging


async def battles_in_window(
    config: Config, *, from_time: float | None = None, to_time: float | None = None
) -> tuple[list[Battle], int]:
    """The battles in the window, each once (delivery is at least once), and how many
    records were not battles (left out, counted)."""
    rows = await read_window(config, "battles", from_time=from_time, to_time=to_time)
    seen: set[str] = set()
    out: list[Battle] = []
    bad = 0
    for row in rows:
        try:
            battle = msgspec.convert(row.value, Battle)
        except msgspec.ValidationError:
            bad += 1
            continue
        if battle.id not in seen:
            seen.add(battle.id)
            out.append(battle)
    return out, bad


REJUDGE_CHUNK = 1000  # battles scheduled at once (the judge's concurrency caps the calls)


@dataclass
class RejudgeReport:
    """What one ``rejudge`` run did."""

    topic: str
    battles: int = 0  # in the window, each once
    already: int = 0  # judged by this judge in an earlier run: skipped
    judged: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # JudgeFailed reason -> battles
    not_battles: int = 0  # records on the battles topic that are not battles


async def rejudge(
    config: Config,
    judge: Judge,
    topic: str,
    *,
    from_time: float | None = None,
    to_time: float | None = None,
    concurrency: int = 8,
) -> RejudgeReport:
    """Replay the battles topic through ``judge`` into ``topic`` (one partition, kept).

    Never writes the judgments or ratings topics: the live ratings stay
    untouched. Idempotent: battles already in ``topic`` are skipped, so a run
    that was stopped, or that left failures, is finished by running it again.
    A battle the judge fails on is counted by reason and not written.
    """
    from arena_stream.judges.base import JudgeFailed
    from arena_stream.kafka.broker import TopicPlan, ensure_topics
    from arena_stream.kafka.io import ensure_ready, producer
    from arena_stream.ratings.style import battle_style

    await ensure_ready(config)
    await ensure_topics(config, {topic: TopicPlan(1, keep=True)})
    report = RejudgeReport(topic=topic)
    battles, report.not_battles = await battles_in_window(config, from_time=from_time,
                                                          to_time=to_time)
    report.battles = len(battles)
    done = {j.battle_id for _, j in await judgments_in_window(config, key=topic)}
    todo = [b for b in battles if b.id not in done]
    report.already = len(battles) - len(todo)
    gate = asyncio.Semaphore(max(1, concurrency))
    async with producer(config) as out:

        async def one(battle: Battle) -> None:
            async with gate:
                try:
                    verdict = await judge.judge(battle)
                except JudgeFailed as exc:
                    report.failed[exc.reason] = report.failed.get(exc.reason, 0) + 1
                    return
            if verdict.style is None:
                verdict.style = battle_style(battle)
            await out.send_and_wait(topic, encode(verdict), key=battle.prompt_id.encode())
            report.judged += 1

        for start in range(0, len(todo), REJUDGE_CHUNK):  # bounded work in flight
            await asyncio.gather(*(one(b) for b in todo[start:start + REJUDGE_CHUNK]))
    return report
