"""What every stage shares: the record it reads, the outcome it returns, the state it keeps.

A stage is a plain function: it takes one :class:`Record` (a Kafka message,
whatever broker it came from), the stage's typed state (a :class:`Store`) and
a small context, and returns an :class:`Outcome`: the events to send and the
state to write. It sends nothing and writes nothing itself. The faust wiring
(:mod:`arena_stream.streams.app`) sends the outcome's events, waits for the
broker's acknowledgements, and only then writes the state, so a crash in
between repeats the work (every output has a deterministic id) and never
records work as done whose output was lost.

Because a stage never touches Kafka, each one is tested without a broker
(``tests/test_stages.py``): feed it records, look at what it returns.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from arena_stream.kafka.deadletter import dead_letter
from arena_stream.schemas import DeadLetter, Event

S = TypeVar("S", bound=msgspec.Struct)

Clock = Callable[[], float]


class StateValue(msgspec.Struct, kw_only=True):
    """Base of every table value.

    ``v`` is the schema version, so a stored shape can evolve. ``at``,
    ``partition`` and ``offset`` say when and from which input record the value
    was written; the wiring stamps them, and expiry (:class:`Retention`) reads them.
    """

    v: int = 1
    at: float = 0.0
    partition: int = -1
    offset: int = -1


@dataclass(frozen=True)
class Retention:
    """How long a table keeps a key, declared next to the table.

    A key goes once its value is older than ``keep_s`` (a function of the
    config), ``applies`` holds for it, and the input offset it was written from
    is committed: from then on no redelivery can bring back the record that
    made it, so forgetting it cannot make the stage do that work twice.
    ``why`` says what the window protects beyond redelivery.
    """

    keep_s: Callable[[Any], float]  # the config -> seconds
    why: str
    applies: Callable[[Any], bool] = lambda value: True


@dataclass(frozen=True)
class Record:
    """One message a stage reads: where it is in the log, and its bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0

    @property
    def key_text(self) -> str | None:
        return self.key.decode("utf-8", errors="replace") if self.key is not None else None


@dataclass(frozen=True)
class Emit:
    """An event to send: the topic's registry key (``"battles"``), the Kafka key, the event."""

    topic: str
    key: str
    event: Event


@dataclass(frozen=True)
class Write:
    """A table write: ``value`` None deletes the key."""

    table: str
    key: str
    value: msgspec.Struct | None


@dataclass
class Outcome:
    """What a stage decided for one record (or one batch)."""

    emits: list[Emit] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    counters: collections.Counter[str] = field(default_factory=collections.Counter)
    # Leave the record unfinished: it is not acknowledged and comes back (rate: a
    # judgment that arrived before an earlier one).
    redo: bool = False

    def emit(self, topic: str, key: str, event: Event) -> None:
        self.emits.append(Emit(topic, key, event))

    def write(self, table: str, key: str, value: msgspec.Struct | None) -> None:
        self.writes.append(Write(table, key, value))

    def dead(self, letter: DeadLetter) -> None:
        """Send ``letter`` to the dead-letter topic and count it by stage and reason."""
        self.emit("deadletter", letter.ref or letter.key or "", letter)
        self.counters[f"deadletter.{letter.stage}.{letter.reason}"] += 1

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def merge(self, other: Outcome) -> None:
        self.emits.extend(other.emits)
        self.writes.extend(other.writes)
        self.counters.update(other.counters)
        self.redo = self.redo or other.redo

    def dead_letters(self) -> list[DeadLetter]:
        return [e.event for e in self.emits if isinstance(e.event, DeadLetter)]

    def events(self, topic: str) -> list[Any]:
        return [e.event for e in self.emits if e.topic == topic]


class Table(Protocol, Generic[S]):
    """A stage's view of one table: typed values by key."""

    def get(self, key: str) -> S | None: ...

    def items(self) -> Iterator[tuple[str, S]]: ...


class Store(Protocol):
    """The tables a stage may read, by name."""

    def table(self, name: str) -> Table[Any]: ...


class MemoryTable(Generic[S]):
    """A table in a dict: what tests give a stage, and what :meth:`MemoryStore.apply` updates."""

    def __init__(self) -> None:
        self.data: dict[str, S] = {}

    def get(self, key: str) -> S | None:
        return self.data.get(key)

    def items(self) -> Iterator[tuple[str, S]]:
        return iter(list(self.data.items()))


class MemoryStore:
    """Tables in dicts, for running stages without a broker (tests, offline replays)."""

    def __init__(self) -> None:
        self.tables: dict[str, MemoryTable[Any]] = collections.defaultdict(MemoryTable)

    def table(self, name: str) -> MemoryTable[Any]:
        return self.tables[name]

    def apply(self, outcome: Outcome) -> Outcome:
        """Write an outcome's state, as the wiring does once its events are acknowledged."""
        for w in outcome.writes:
            data = self.tables[w.table].data
            if w.value is None:
                data.pop(w.key, None)
            else:
                data[w.key] = w.value
        return outcome


def failure(
    stage: str, reason: str, error: str, record: Record | None, *, ref: str | None = None,
    attempts: int = 0, topic: str | None = None,
) -> DeadLetter:
    """A dead letter for ``record`` (its bytes kept), or for no record (a sweep's report)."""
    if record is None:
        return dead_letter(stage=stage, reason=reason, error=error, topic=topic or "", ref=ref,
                           attempts=attempts)
    return dead_letter(
        stage=stage, reason=reason, error=error, topic=record.topic,
        partition=record.partition, offset=record.offset, key=record.key,
        original=record.value, ref=ref, attempts=attempts,
    )


def wall_clock() -> float:
    return time.time()
