"""Commit a source offset only once the work before it was done.

Every agent is idempotent, so a redelivered event costs a little work; an event
whose offset is committed before it was processed is lost for good after a
crash. faust (0.15) commits for its streams with three holes, each one measured
here to lose prompts or battles after a SIGKILL (``tests/test_faults.py``):

1. **Its commit rule can step over unfinished work.** It commits through the
   first run of consecutive acknowledged offsets. With nothing committed yet
   (or ``0`` committed, which it reads as nothing) any run is taken, and with
   ``c`` committed a run starting at ``c + 1`` is taken. So when a judge with
   several calls in flight finishes a later battle first, the earlier battle's
   offset is committed while it is still being judged.
2. **Skipped events are acknowledged as if processed.** A stream skips an event
   fetched under an older consumer generation, or taken while flow control is
   off during a rebalance, and acknowledges it. The seek that follows a
   rebalance usually redelivers it, but the offset may be committed first.
   Likewise, when the worker stops, an agent cancelled in the middle of an
   event (or of a ``take_events`` batch) acknowledges it as its stream closes,
   and the last commit takes it.
3. **A fetched event can be dropped without an acknowledgement** (the fetch
   loop stops midway when the generation changes). Nothing redelivers it
   unless a seek happens to follow.

:func:`install` corrects all three for one app, for every broker:

* the commit point moves only through offsets that were acknowledged *after
  being processed*, starting exactly at the committed offset (or the
  partition's first offset when nothing is committed); log gaps (transaction
  markers, compaction) count as done;
* an acknowledgement given while the event is stale (older generation, flow
  control off, or the app stopping) does not count: the event will be
  redelivered; so a graceful stop leaves the events it was finishing to be
  redone rather than risk committing one it abandoned;
* a partition whose commit point waits for an offset that no live message
  holds while later offsets were delivered is sought back to that offset, so
  the dropped or skipped event is delivered again (the agents ignore the
  repeats). When the seek shows the offset does not exist in the log (twice),
  it is recorded as a gap.

This module replaces a few methods of faust's consumer classes, for apps that
opt in (``app.arena_safe_commits``); it reads and writes the consumer's own
bookkeeping (``_acked``, ``_acked_index``, ``_gap``, ``_committed_offset``), so
it is tied to faust-streaming 0.15 and checked by the fault tests.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import structlog

log = structlog.get_logger(__name__)

STUCK_CHECKS = 2  # consecutive commit rounds a hole must persist before a seek
GAP_PROBES = 2  # seeks that must land past an offset before it counts as a log gap


def commit_point(start: int, done: Collection[int], gap_end: Callable[[int], int | None]) -> int:
    """The offset to commit: ``start`` moved past every consecutive finished offset.

    ``done`` holds offsets acknowledged after processing; ``gap_end(o)`` is the
    end (exclusive) of a log gap containing ``o``, or None. The result equals
    ``start`` when the event at ``start`` is not finished, whatever comes later.
    """
    end = start
    while True:
        if end in done:
            end += 1
            continue
        after_gap = gap_end(end)
        if after_gap is not None and after_gap > end:
            end = after_gap
            continue
        return end


class _PartitionWatch:
    """What the guard knows of one partition beyond faust's own bookkeeping."""

    __slots__ = ("base", "delivered", "highest", "probe", "stuck", "suspect")

    def __init__(self) -> None:
        self.base: int | None = None  # where reading starts when nothing is committed
        self.delivered: dict[int, weakref.ref[Any]] = {}  # offset -> latest message object
        self.highest = -1  # highest offset delivered since the last seek
        self.probe: int | None = None  # offset just sought to, until a message arrives
        self.stuck: tuple[int, int] | None = None  # (offset, consecutive checks)
        self.suspect: tuple[int, int, int] | None = None  # (offset, first offset seen, probes)


class CommitGuard:
    """Per-consumer state: delivered messages, holes, probes. See the module docstring."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.partitions: dict[Any, _PartitionWatch] = {}
        self.stale_acks: weakref.WeakSet[Any] = weakref.WeakSet()
        # Seeks the guard made: a count per partition (records fetched before the latest
        # seek of their partition are dropped, the seek fetches them again) and the read
        # offset faust must resume from once the batch in progress is over.
        self.seeks: dict[Any, int] = {}
        self.resume_at: dict[Any, int] = {}
        self.fetched_after: dict[Any, int] = {}  # the seek counts when the last batch came

    def watch(self, tp: Any) -> _PartitionWatch:
        w = self.partitions.get(tp)
        if w is None:
            w = self.partitions[tp] = _PartitionWatch()
        return w

    # -- hooks called from the patched consumer ------------------------------------------

    def delivered(self, message: Any) -> None:
        w = self.watch(message.tp)
        offset = message.offset
        w.delivered[offset] = weakref.ref(message)
        if offset > w.highest:
            w.highest = offset
        if w.probe is not None:
            sought, w.probe = w.probe, None
            if offset > sought:
                _, _, probes = w.suspect if w.suspect and w.suspect[0] == sought else (0, 0, 0)
                w.suspect = (sought, offset, probes + 1)
            else:
                w.suspect = None

    def is_stale(self, message: Any) -> bool:
        """True when an acknowledgement now would be a skip, not a finished event."""
        app = self.consumer.app
        return (
            message in self.stale_acks
            or app.should_stop
            or not app.flow_control.is_active()
            or message.generation_id != app.consumer_generation_id
        )

    def start_of(self, tp: Any) -> int | None:
        committed = self.consumer._committed_offset.get(tp)
        if committed is not None:
            return int(committed)
        w = self.partitions.get(tp)
        return w.base if w is not None else None

    def after_seek(self, bases: dict[Any, int]) -> None:
        """faust sought every partition to its committed offset: forget the old positions."""
        for w in self.partitions.values():
            w.highest = -1
            w.stuck = None
            w.probe = None
        for tp, base in bases.items():
            self.watch(tp).base = base

    def committed(self, tp: Any, offset: int) -> None:
        w = self.partitions.get(tp)
        if w is None:
            return
        for old in [o for o in w.delivered if o < offset]:
            del w.delivered[old]
        if w.suspect is not None and w.suspect[0] < offset:
            w.suspect = None

    # -- the hole detector, run before each commit --------------------------------------

    def holes(self) -> list[tuple[Any, int]]:
        """Partitions whose commit point waits for an event that no live message holds."""
        consumer = self.consumer
        app = consumer.app
        if app.rebalancing or not app.flow_control.is_active() or not consumer.flow_active:
            return []  # faust seeks to the committed offsets once the rebalance is over
        assigned = consumer.assignment()
        found = []
        for tp in list(self.partitions):
            w = self.partitions[tp]
            if tp not in assigned:
                del self.partitions[tp]
                continue
            start = self.start_of(tp)
            gaps = consumer._gap.get(tp)
            if (
                start is None
                or w.probe is not None
                or start in consumer._acked_index[tp]
                or (gaps and gaps.at(start))
            ):
                w.stuck = None
                continue
            ref = w.delivered.get(start)
            if ref is None:
                if w.highest < start:
                    w.stuck = None  # not fetched yet
                    continue
            else:
                message = ref()
                if message is not None and not message.acked and message not in self.stale_acks:
                    w.stuck = None  # delivered and still waiting in a stream: in flight
                    continue
            checks = w.stuck[1] + 1 if w.stuck and w.stuck[0] == start else 1
            w.stuck = (start, checks)
            if checks >= STUCK_CHECKS:
                found.append((tp, start))
        return found

    async def heal(self) -> None:
        consumer = self.consumer
        for tp, offset in self.holes():
            w = self.watch(tp)
            w.stuck = None
            if w.suspect and w.suspect[0] == offset and w.suspect[2] >= GAP_PROBES:
                # Seeking here twice delivered a later offset first: no record has it.
                consumer._gap[tp].addi(offset, w.suspect[1])
                consumer._gap[tp].merge_overlaps()
                log.warning("commits.gap", tp=str(tp), offset=offset, until=w.suspect[1])
                w.suspect = None
                continue
            log.warning(
                "commits.redeliver",
                tp=str(tp),
                offset=offset,
                highest_delivered=w.highest,
                why="an event before later finished ones was skipped or dropped unprocessed",
            )
            w.probe = offset
            w.highest = -1
            await consumer.seek(tp, offset)
            self.sought(tp, offset)

    def sought(self, tp: Any, offset: int) -> None:
        """The guard moved ``tp`` back to ``offset``, possibly in the middle of a batch.

        faust's fetch loop may be inside a batch fetched before the seek: its next
        records for ``tp`` would look like a jump past ``offset`` (faust records the
        jump as a log gap: real offsets marked done), and the record a message in
        flight sets as read would make the refetched ``offset`` look old (dropped).
        So those records are dropped (:func:`guarded_batch`; the seek fetches them
        again) and the read offset is put back before the next batch.
        """
        self.seeks[tp] = self.seeks.get(tp, 0) + 1
        self.resume_at[tp] = offset

    def fetched(self) -> None:
        """A batch just came from the client; faust's fetch loop holds no message now.

        The client discards what it held for a partition when it is sought, so this
        batch is after every seek made so far: remember the counts it is after, and put
        back the read offsets of those seeks (a message faust was handing over while
        the guard sought may have moved them on).
        """
        for tp, offset in self.resume_at.items():
            self.consumer._read_offset[tp] = offset if offset else None
        self.resume_at.clear()
        self.fetched_after = dict(self.seeks)


async def guarded_batch(guard: CommitGuard, records: AsyncIterator[tuple[Any, Any]],
                        acks_enabled_for: Callable[[str], bool]) -> AsyncIterator[tuple[Any, Any]]:
    """faust's records of one fetch, less those fetched before the guard sought their partition.

    Only the records passed on count as delivered, so a probe after a seek is
    answered by a record fetched after it, never by one left over from before.
    """
    async for tp, message in records:
        if guard.seeks.get(tp, 0) != guard.fetched_after.get(tp, 0):
            continue  # fetched before a seek of its partition: fetched again after it
        if acks_enabled_for(message.topic):
            guard.delivered(message)
        yield tp, message


def install(app: Any) -> None:
    """Make ``app``'s consumer commit only finished work (see the module docstring)."""
    _patch_faust()
    _GUARDED.add(app)


_GUARDED: weakref.WeakSet[Any] = weakref.WeakSet()  # apps whose consumers the guard watches


def guard_of(consumer: Any) -> CommitGuard | None:
    if consumer.app not in _GUARDED:
        return None
    guard = consumer.__dict__.get("_arena_commit_guard")
    if guard is None:
        guard = consumer.__dict__["_arena_commit_guard"] = CommitGuard(consumer)
    return guard


def mark_caught_up(consumer: Any, now: float) -> None:
    """Tell faust's livelock check that a partition with nothing in flight is committed.

    faust logs "Has not committed TP ... (report as bug)" when a partition's last
    commit is older than ``broker_commit_livelock_soft_timeout`` at the moment new
    records arrive. A partition that was simply idle (no prompts for five minutes,
    the usual case while a training job runs) then raises that error on its first
    new record, before the next commit round. A partition with no event being
    processed and no acknowledgement waiting has its commit point at its last
    finished event, which is exactly what the check wants to know; a partition
    that really waits on unfinished work keeps its old time, so a stuck commit is
    still reported.
    """
    stamps = getattr(getattr(consumer, "_thread", None), "tp_last_committed_at", None)
    if stamps is None:
        return
    busy = {message.tp for message in list(consumer._unacked_messages)}
    for tp in consumer.assignment():
        if tp not in busy and not consumer._acked.get(tp):
            stamps[tp] = now


def _patch_faust() -> None:
    import faust.streams
    from faust.transport.consumer import Consumer
    from faust.transport.producer import ProducerBuffer
    from faust.types.tuples import Message

    # faust's compiled stream iterator (faust/_cython/streams) inlines Message.ack and
    # Consumer.ack, so none of the patches below would see an agent's acknowledgement.
    # The Python iterator does the same work through the methods patched here; it is
    # chosen whenever this is None (tests/test_commits.py checks which one runs).
    faust.streams._CStreamIterator = None

    if getattr(Consumer, "_arena_commit_guard_patched", False):
        return
    Consumer._arena_commit_guard_patched = True  # type: ignore[attr-defined]

    original_getmany = Consumer.getmany
    original_wait_next_records = Consumer._wait_next_records
    original_send_pending = ProducerBuffer._send_pending
    original_message_ack = Message.ack
    original_ack = Consumer.ack
    original_new_offset = Consumer._new_offset
    original_perform_seek = Consumer.perform_seek
    original_add_gap = Consumer._add_gap
    original_commit = Consumer.commit

    async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        guard = guard_of(self)
        records = original_getmany(self, timeout)
        if guard is not None:
            records = guarded_batch(guard, records, self.app.topics.acks_enabled_for)
        async for item in records:
            yield item

    async def _wait_next_records(self: Any, timeout: float) -> Any:
        result = await original_wait_next_records(self, timeout)
        guard = guard_of(self)
        if guard is not None:
            guard.fetched()
        return result

    async def send_pending(self: Any, fut: Any) -> None:
        self.__dict__["_arena_sending"] = self.__dict__.get("_arena_sending", 0) + 1
        try:
            await original_send_pending(self, fut)
        finally:
            self.__dict__["_arena_sending"] -= 1

    async def flush_buffer(self: Any) -> None:
        # faust gives up on the buffer after any 0.1 s without a send, so table writes
        # could still wait behind an offset it then commits. Wait until nothing is
        # queued and nothing is being handed to the client.
        while self.size or self.__dict__.get("_arena_sending", 0):
            if self.state != "running":
                raise RuntimeError("cannot flush: producer not running")
            self.message_sent.clear()
            await self.message_sent.wait()

    def message_ack(self: Any, consumer: Any, n: int = 1) -> bool:
        # A stream that skips an event acknowledges it at once, before any await:
        # the conditions that made it skip still hold here. Remember the message,
        # so that another stream finishing it later does not make it count.
        guard = guard_of(consumer) if consumer is not None else None
        if guard is not None and not self.acked and guard.is_stale(self):
            guard.stale_acks.add(self)
        return original_message_ack(self, consumer, n)

    def ack(self: Any, message: Any) -> bool:
        # Reached only through Message.ack, which has just recorded a stale message.
        guard = guard_of(self)
        if guard is None or message not in guard.stale_acks:
            return original_ack(self, message)
        message.acked = True  # done with, as far as waiting for it goes; not finished
        self._unacked_messages.discard(message)
        return False

    def _new_offset(self: Any, tp: Any) -> int | None:
        guard = guard_of(self)
        if guard is None:
            return original_new_offset(self, tp)
        start = guard.start_of(tp)
        if start is None:
            return None
        acked = self._acked[tp]
        done = set(acked)
        gaps = self._gap.get(tp)
        end = commit_point(start, done, lambda o: _gap_end(gaps, o) if gaps else None)
        if end == start:
            return None
        acked[:] = sorted(o for o in done if o >= end)
        self._acked_index[tp].difference_update([o for o in done if o < end])
        if gaps:
            gaps.chop(0, end)
        guard.committed(tp, end)
        return end

    async def perform_seek(self: Any) -> None:
        await original_perform_seek(self)
        guard = guard_of(self)
        if guard is None:
            return
        assigned = [tp for tp in self.assignment() if self.app.topics.acks_enabled_for(tp.topic)]
        uncommitted = [tp for tp in assigned if self._committed_offset.get(tp) is None]
        bases = dict(await self.earliest_offsets(*uncommitted)) if uncommitted else {}
        guard.after_seek({tp: int(o) for tp, o in bases.items() if o is not None})

    async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        # faust infers a log gap from a jump in the offsets it reads, and counts the
        # offsets as done. A jump is also what a seek racing a fetch looks like (the
        # client may hand over a batch fetched before the seek took effect), and then
        # real, unprocessed offsets would be committed. Our topics have no gaps (no
        # compaction on consumed topics, no transaction markers without exactly_once),
        # so a jump is treated as a hole: the guard seeks back to it, and an offset
        # that really holds no record is recorded as a gap only after two probes
        # (CommitGuard.heal).
        if guard_of(self) is not None:
            log.debug("commits.jump_ignored", tp=str(tp), start=offset_from, end=offset_to)
            return
        await original_add_gap(self, tp, offset_from, offset_to)

    async def commit(self: Any, *args: Any, **kwargs: Any) -> bool:
        guard = guard_of(self)
        if guard is not None and not self.should_stop:
            await guard.heal()
        done = await original_commit(self, *args, **kwargs)
        if guard is not None:
            mark_caught_up(self, time.monotonic())
        return done

    Consumer.getmany = getmany  # type: ignore[method-assign]
    Consumer._wait_next_records = _wait_next_records  # type: ignore[method-assign]
    ProducerBuffer._send_pending = send_pending  # type: ignore[method-assign]
    ProducerBuffer.flush = flush_buffer  # type: ignore[method-assign]
    Message.ack = message_ack  # type: ignore[method-assign]
    Consumer.ack = ack  # type: ignore[method-assign]
    Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]
    Consumer._add_gap = _add_gap  # type: ignore[method-assign]
    Consumer.commit = commit  # type: ignore[method-assign]


# -- for agents whose state is a fold over their topic in offset order ---------------------


def redo(event: Any) -> None:
    """Leave ``event`` unfinished: its offset is not committed and it is delivered again.

    For an agent that must apply events in offset order and sees one arrive
    before an earlier one (which faust skipped or dropped): the commit point
    stops at the earlier one, and the guard seeks back to it.
    """
    guard = guard_of(event.app.consumer)
    if guard is None:
        raise RuntimeError("commits.install(app) was not called; an event cannot be redone")
    guard.stale_acks.add(event.message)


def nothing_between(app: Any, tp: Any, start: int, offset: int) -> bool:
    """True when no record of ``tp`` in ``start .. offset - 1`` needs processing.

    Those offsets are all log gaps, or below the committed offset (which moves
    only past finished offsets and gaps).
    """
    consumer = app.consumer
    committed = consumer._committed_offset.get(tp)
    if committed is not None:
        start = max(start, int(committed))
    if start >= offset:
        return True
    gaps = consumer._gap.get(tp)
    if not gaps:
        return False
    return commit_point(start, (), lambda o: _gap_end(gaps, o)) >= offset


def committed_offset(app: Any, tp: Any) -> int | None:
    """The offset committed for partition ``tp`` by this app's consumer (None: nothing yet).

    Everything before it was processed: no redelivery can bring it back.
    """
    consumer = app.consumer
    committed = consumer._committed_offset.get(tp)
    return int(committed) if committed is not None else None


def first_offset(app: Any, tp: Any) -> int | None:
    """The first offset of partition ``tp`` as of the last seek, when known."""
    guard = guard_of(app.consumer)
    watch = guard.partitions.get(tp) if guard is not None else None
    return watch.base if watch is not None else None


def _gap_end(gaps: Any, offset: int) -> int | None:
    found = gaps.at(offset)
    return max(iv.end for iv in found) if found else None
