"""Reading any topic back for a window of time or offsets, and writing it out.

Correct on the embedded broker too: its ``offsets_for_times`` answers 0 for a
time past the end (Apache Kafka answers "none"), and its end offsets can
undercount. So the broker's answer is only a starting hint: every record is
checked against the window by its own timestamp, and reading stops at the
true end (:func:`arena_stream.broker.true_end_offsets`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from arena_stream.config import Config
from arena_stream.kafka.broker import Quirks
from arena_stream.kafka.io import consumer, partitions, read_all, topic_name
from arena_stream.schemas import Judgment


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


async def judgments_in_window(
    config: Config, *, from_time: float | None = None, to_time: float | None = None
) -> list[tuple[int, Judgment]]:
    """(offset, judgment) for every judgment in the window, in log order.

    The judgments topic has one partition, so offset order is the order the
    ratings agent applied them in.
    """
    rows = await read_window(config, "judgments", from_time=from_time, to_time=to_time)
    out = []
    for row in rows:
        try:
            out.append((row.offset, msgspec.convert(row.value, Judgment)))
        except msgspec.ValidationError:
            continue
    return out


def read_judgments(
    config: Config, *, from_time: float | None = None, to_time: float | None = None
) -> list[Judgment]:
    """Every judgment in the window (for synchronous callers such as the CLI)."""
    import asyncio

    found = asyncio.run(judgments_in_window(config, from_time=from_time, to_time=to_time))
    return [j for _, j in found]
