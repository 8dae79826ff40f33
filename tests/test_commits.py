"""The commit rule and the hole detector of :mod:`arena_stream.commits`, without a broker.

The fault tests (``test_faults.py``) check the same end to end with a real
worker that is killed; these pin down each decision on its own.
"""

from __future__ import annotations

import asyncio
import gc
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from intervaltree import IntervalTree

from arena_stream.kafka.commits import GAP_PROBES, STUCK_CHECKS, CommitGuard, commit_point


def no_gaps(offset: int) -> int | None:
    return None


def test_commit_point_stops_at_the_first_unfinished_offset() -> None:
    assert commit_point(0, {0, 1, 2, 4}, no_gaps) == 3
    assert commit_point(5, {5, 6}, no_gaps) == 7


def test_commit_point_never_steps_over_the_committed_offset_itself() -> None:
    # faust's own rule commits 10 here: offset 5 (still being judged) would be lost
    assert commit_point(5, {6, 7, 8, 9}, no_gaps) == 5
    # and with nothing committed, it took any run: 3..5 past unfinished 0..2
    assert commit_point(0, {3, 4, 5}, no_gaps) == 0


def test_commit_point_counts_log_gaps_as_done() -> None:
    gaps = IntervalTree()
    gaps.addi(3, 6)  # offsets 3, 4, 5 hold no records (transaction markers)

    def gap_end(offset: int) -> int | None:
        found = gaps.at(offset)
        return max(iv.end for iv in found) if found else None

    assert commit_point(0, {0, 1, 2, 6}, gap_end) == 7
    assert commit_point(0, {0, 1, 2}, gap_end) == 6


class Message:
    """Stands in for faust's ConsumerMessage (weak-referenceable, like it)."""

    def __init__(self, tp: str, offset: int, generation_id: int = 1) -> None:
        self.tp = tp
        self.topic = tp
        self.offset = offset
        self.generation_id = generation_id
        self.acked = False


class FakeConsumer:
    def __init__(self) -> None:
        self.app = SimpleNamespace(
            rebalancing=False,
            should_stop=False,
            consumer_generation_id=1,
            flow_control=SimpleNamespace(is_active=lambda: True),
        )
        self.flow_active = True
        self._committed_offset: dict[str, int | None] = defaultdict(lambda: None)
        self._acked_index: dict[str, set[int]] = defaultdict(set)
        self._gap: dict[str, IntervalTree] = defaultdict(IntervalTree)
        self.sought: list[tuple[str, int]] = []

    def assignment(self) -> set[str]:
        return {"t-0"}

    async def seek(self, tp: str, offset: int) -> None:
        self.sought.append((tp, offset))


def guarded(committed: int) -> tuple[FakeConsumer, CommitGuard]:
    consumer = FakeConsumer()
    consumer._committed_offset["t-0"] = committed
    return consumer, CommitGuard(consumer)


def rounds(guard: CommitGuard, n: int) -> None:
    for _ in range(n):
        asyncio.run(guard.heal())


def test_an_event_still_in_a_stream_is_waited_for_not_redelivered() -> None:
    consumer, guard = guarded(committed=3)
    held = [Message("t-0", o) for o in range(3, 8)]  # queued in a slow agent
    for m in held:
        guard.delivered(m)
    consumer._acked_index["t-0"].update({4, 5, 6, 7})
    rounds(guard, STUCK_CHECKS + 2)
    assert consumer.sought == []


def test_a_dropped_event_is_redelivered_by_seeking_back_to_it() -> None:
    consumer, guard = guarded(committed=3)
    later = [Message("t-0", o) for o in range(4, 8)]
    dropped = Message("t-0", 3)
    for m in (dropped, *later):
        guard.delivered(m)
    del dropped  # fetched, then dropped without an acknowledgement
    gc.collect()
    consumer._acked_index["t-0"].update({4, 5, 6, 7})
    rounds(guard, STUCK_CHECKS - 1)
    assert consumer.sought == []  # one round is not enough: it may be on its way
    rounds(guard, 1)
    assert consumer.sought == [("t-0", 3)]
    again = Message("t-0", 3)  # the seek delivers it again; it waits in a stream
    guard.delivered(again)
    rounds(guard, STUCK_CHECKS + 1)
    assert consumer.sought == [("t-0", 3)]


def test_a_skipped_event_does_not_count_and_is_redelivered() -> None:
    consumer, guard = guarded(committed=0)
    stale = Message("t-0", 0, generation_id=0)  # fetched before the last rebalance
    assert guard.is_stale(stale)
    fresh: list[Any] = [Message("t-0", o) for o in (1, 2)]
    assert not guard.is_stale(fresh[0])
    guard.delivered(stale)
    for m in fresh:
        guard.delivered(m)
    stale.acked = True  # the stream skipped it and acknowledged it
    guard.stale_acks.add(stale)
    consumer._acked_index["t-0"].update({1, 2})
    rounds(guard, STUCK_CHECKS)
    assert consumer.sought == [("t-0", 0)]


def test_nothing_is_sought_while_a_rebalance_is_running() -> None:
    consumer, guard = guarded(committed=0)
    guard.delivered(Message("t-0", 5))  # 0..4 never delivered
    consumer.app.rebalancing = True
    rounds(guard, STUCK_CHECKS + 1)
    assert consumer.sought == []
    consumer.app.rebalancing = False
    rounds(guard, STUCK_CHECKS)
    assert consumer.sought == [("t-0", 0)]


def test_an_offset_no_record_has_becomes_a_gap_after_repeated_probes() -> None:
    consumer, guard = guarded(committed=10)
    keep = []
    for probe in range(GAP_PROBES):
        m = Message("t-0", 12)  # every seek to 10 delivers 12 first: 10 and 11 are markers
        keep.append(m)
        guard.delivered(m)
        consumer._acked_index["t-0"].add(12)
        m.acked = True
        rounds(guard, STUCK_CHECKS)
        assert consumer.sought[-1] == ("t-0", 10), probe
    guard.delivered(Message("t-0", 12))
    rounds(guard, STUCK_CHECKS)
    assert len(consumer.sought) == GAP_PROBES
    assert sorted((iv.begin, iv.end) for iv in consumer._gap["t-0"]) == [(10, 12)]


# -- issue 13: the guard on the code faust really runs -----------------------------------------


def tiny_app() -> Any:
    from arena_stream.config import loads
    from arena_stream.streams.app import create_app
    from tests.conftest import config_text

    config = loads(config_text(bootstrap="127.0.0.1:1", url="http://127.0.0.1:1/v1",
                               prefix="c.", app_id="commits-test"))
    return create_app(config).app


async def test_agents_iterate_on_the_python_stream_iterator_the_guard_patches() -> None:
    """faust's compiled iterator inlines Message.ack: the guard would never see an ack."""
    app = tiny_app()
    stream = app.stream(app.topic("c.prompts"))
    iterator = stream.__aiter__()
    try:
        assert iterator.ag_code.co_name == "_py_aiter"
    finally:
        await iterator.aclose()


class SlowSends:
    """A producer buffer whose sends each take longer than faust's 0.1 s flush patience."""

    def __init__(self) -> None:
        from faust.transport.producer import ProducerBuffer

        self.buffer = ProducerBuffer()
        self.buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))
        self.buffer._started.set()  # as a started producer's buffer is
        self.sent: list[int] = []

    def put(self, n: int) -> None:
        async def publish_message(fut: Any, wait: bool = False) -> None:
            await asyncio.sleep(0.3)  # a slow broker, a full client buffer
            self.sent.append(n)

        channel = SimpleNamespace(publish_message=publish_message)
        self.buffer.put(SimpleNamespace(message=SimpleNamespace(channel=channel)))  # type: ignore[arg-type]


async def test_the_flush_before_a_commit_waits_for_every_buffered_table_write() -> None:
    from arena_stream.kafka import commits

    commits.install(tiny_app())  # patches faust's producer buffer, like any guarded app
    slow = SlowSends()
    for n in range(3):
        slow.put(n)
    drain = asyncio.ensure_future(type(slow.buffer)._handle_pending(slow.buffer))
    try:
        await asyncio.sleep(0.35)  # one send done, a lull longer than 0.1 s before the next
        await slow.buffer.flush()
        assert slow.buffer.size == 0 and slow.sent == [0, 1, 2]
    finally:
        drain.cancel()


async def drain(batches: list[tuple[int, int]], *, on_message: Any = None,
                on_fetch: Any = None) -> tuple[list[int], Any, Any, Any]:
    """faust's own fetch loop (``Consumer._drain_messages``) on a real, unstarted consumer,
    fed the given batches of offsets: the offsets it handed to the agents, and the consumer,
    its guard and its partition."""
    from aiokafka.structs import ConsumerRecord
    from faust.types import TP

    from arena_stream.kafka import commits

    app = tiny_app()
    consumer = app.consumer
    tp = TP("c.judgments", 0)
    app.topics._acking_topics.add(tp.topic)
    guard = commits.guard_of(consumer)
    assert guard is not None
    pending = [{tp: [ConsumerRecord(tp.topic, 0, o, 0, 0, b"k", b"v", None, 1, 1, [])
                     for o in range(first, last + 1)]} for first, last in batches]
    stop = asyncio.Event()
    seen: list[int] = []

    async def fetch(active_partitions: Any, timeout: float) -> Any:
        if on_fetch is not None:
            await on_fetch(consumer, guard, tp, len(pending))
        if pending:
            return pending.pop(0)
        stop.set()
        return None

    async def callback(message: Any) -> None:
        seen.append(message.offset)
        if on_message is not None:
            await on_message(consumer, guard, tp, message, seen)

    async def seek(partition: Any, offset: int) -> None:
        return None

    consumer._getmany = fetch  # type: ignore[method-assign]
    consumer._get_active_partitions = lambda: {tp}  # type: ignore[method-assign]
    consumer._seek = seek  # type: ignore[method-assign]
    consumer.highwater = lambda partition: 100  # type: ignore[method-assign]
    consumer.callback = callback
    await asyncio.wait_for(consumer._drain_messages(SimpleNamespace(_stopped=stop)), timeout=10)
    return seen, consumer, guard, tp


async def test_a_seek_in_the_middle_of_a_batch_redelivers_instead_of_losing() -> None:
    """The guard seeks back while faust is half through a batch (a commit round runs while
    an agent takes a message). Without the guard's batch filter the refetched records look
    older than the read offset faust moved on to, and are dropped for good: the offset the
    seek was for never comes back."""

    async def seek_back_at_3(consumer: Any, guard: Any, tp: Any, message: Any,
                             seen: list[int]) -> None:
        if message.offset == 3 and len(seen) == 4:
            await consumer.seek(tp, 1)  # what CommitGuard.heal does for a dropped offset 1
            guard.sought(tp, 1)

    seen, consumer, _, tp = await drain([(0, 9), (1, 9)], on_message=seek_back_at_3)
    assert seen == [0, 1, 2, 3, *range(1, 10)]  # 4..9 of the first batch wait for the refetch
    assert not consumer._gap.get(tp)


async def test_a_seek_while_a_fetch_is_waiting_keeps_the_fetch_it_asked_for() -> None:
    """The guard seeks while faust waits for the next batch: that batch is the refetch the
    seek asked for (the client drops what it held for the partition), so it must be kept."""

    async def seek_during_second_fetch(consumer: Any, guard: Any, tp: Any, left: int) -> None:
        if left == 1:
            await consumer.seek(tp, 1)
            guard.sought(tp, 1)

    seen, _, _, _ = await drain([(0, 9), (1, 9)], on_fetch=seek_during_second_fetch)
    assert seen == [*range(10), *range(1, 10)]


async def test_a_jump_in_the_offsets_read_is_never_committed_as_done() -> None:
    """faust reads 0..9, then 12..15 (a batch fetched before a seek took effect looks just
    like this): it would record 10..11 as a log gap, done, and commit past them. The guard
    leaves them a hole, to be sought back to (and a gap only after two probes)."""
    from arena_stream.kafka.commits import commit_point

    seen, consumer, _, tp = await drain([(0, 9), (12, 15)])
    assert seen == [*range(10), *range(12, 16)]
    gaps = consumer._gap.get(tp)
    assert not gaps
    assert commit_point(0, set(seen), lambda o: None) == 10


def test_an_idle_partition_is_not_reported_as_a_stuck_commit() -> None:
    """faust's livelock check reads the time of each partition's last commit: a partition
    with nothing in flight counts as committed now; one waiting on work keeps its time."""
    from arena_stream.kafka.commits import mark_caught_up

    idle, working, acked = ("t", 0), ("t", 1), ("t", 2)
    stamps = {idle: 1.0, working: 1.0, acked: 1.0}
    consumer = SimpleNamespace(
        _thread=SimpleNamespace(tp_last_committed_at=stamps),
        _unacked_messages=[SimpleNamespace(tp=working)],
        _acked=defaultdict(list, {acked: [7]}),
        assignment=lambda: {idle, working, acked},
    )
    mark_caught_up(consumer, 500.0)
    assert stamps == {idle: 500.0, working: 1.0, acked: 1.0}
