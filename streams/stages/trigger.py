"""trigger: training buffers that fire a job when enough samples have piled up.

Reads every kind's training buffer (``train.sft``, ``train.dpo``) and
``train.jobs`` (to learn when the job in flight ends). Its state is one
:class:`TriggerState` record (``buffers["flywheel"]``), read and written once
per batch of events by the wiring: the samples waiting per kind, the jobs
emitted so far and the job in flight. ``[training] schedule`` (e.g. sft then
dpo) says which kind fires next; a job fires when that kind has its batch
threshold of samples (or, with ``max_wait_s``, when the oldest has waited that
long) and no job is in flight. The job lists exactly the sample ids and the
offset range it covers; the state and the job id change together, so a
restart re-sends the *same* job id at most, which the trainer runs once. A
failed job's samples go back to the front of its buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from arena_stream.arena.kinds import KINDS, kind
from arena_stream.config import TrainingConfig
from arena_stream.schemas import JobStatus, TrainingJob, decode, decode_jobs_record
from arena_stream.streams.stages.base import (
    Clock,
    Outcome,
    Record,
    Retention,
    StateValue,
    Store,
    wall_clock,
)

TABLE = "buffers"
STATE_KEY = "flywheel"


class Waiting(msgspec.Struct, array_like=True):
    """A buffered sample: its id and its offset on the kind's topic (one partition)."""

    id: str
    offset: int


class InFlight(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    samples: list[Waiting]


class TriggerState(StateValue, kw_only=True):
    """``buffers["flywheel"]``: what waits, what runs, how many jobs fired."""

    waiting: dict[str, list[Waiting]] = {}  # kind -> samples in arrival order
    first_ts: dict[str, float] = {}  # kind -> when its oldest waiting sample arrived
    jobs: int = 0
    in_flight: InFlight | None = None
    last_offset: dict[str, int] = {}  # topic -> last offset folded into this state
    base_version: int = 0  # the newest version a finished job produced


class SeenSample(StateValue, kw_only=True):
    """``buffers["seen:<kind>:<id>"]``: the offset a sample was buffered at (once)."""

    offset: int


RETENTION = Retention(
    keep_s=lambda config: config.state.done_retention_s,
    applies=lambda value: isinstance(value, SeenSample),
    why="a sample is buffered again only when routing re-sends it, which routed prevents; the "
        "trigger's own state (one record) never expires",
)


@dataclass
class TriggerContext:
    training: TrainingConfig
    target: str  # the target player's name (TrainingJob.base_model)
    kind_of_topic: dict[str, str]  # full topic name -> kind name, for every buffer topic
    topic_of_kind: dict[str, str]  # kind name -> full topic name (TrainingJob.topic)
    serving_version: Callable[[], int]  # the version the target runs now
    now: Clock = wall_clock


def next_job(state: TriggerState, ctx: TriggerContext, now: float) -> TrainingJob | None:
    """The job to fire now, if any (the caller commits it to the state)."""
    training = ctx.training
    if state.in_flight is not None or not training.enabled:
        return None
    schedule = training.schedule
    index = state.jobs
    entry = kind(schedule[index % len(schedule)])
    waiting = state.waiting.get(entry.name, [])
    waited = now - state.first_ts.get(entry.name, now)
    timed_out = training.max_wait_s > 0 and waited >= training.max_wait_s
    if len(waiting) >= entry.batch(training):
        chosen = waiting[: entry.batch(training)]
    elif timed_out and len(waiting) >= max(1, training.min_batch):
        chosen = list(waiting)
    else:
        return None
    offsets = [w.offset for w in chosen]
    return TrainingJob(
        id=f"job-{index + 1:04d}-{entry.name}", kind=entry.name, round=index // len(schedule),
        base_model=ctx.target,
        base_version=max(state.base_version, ctx.serving_version()),
        sample_ids=[w.id for w in chosen], topic=ctx.topic_of_kind[entry.name],
        offsets={"0": [min(offsets), max(offsets)]},
        hyperparameters=entry.hyperparameters(training), ts=now,
    )


def trigger(record: Record, state: TriggerState, store: Store, ctx: TriggerContext) -> Outcome:
    """Fold one buffer or jobs record into ``state`` (changed in place) and fire what is due."""
    out = Outcome()
    if record.offset <= state.last_offset.get(record.topic, -1):
        return out  # redelivered: already in the state
    now = ctx.now()
    kind_name = ctx.kind_of_topic.get(record.topic)
    if kind_name is not None:
        sample = decode(record.value or b"", KINDS[kind_name].sample)
        seen_key = f"seen:{kind_name}:{sample.id}"  # type: ignore[attr-defined]
        seen: SeenSample | None = store.table(TABLE).get(seen_key)
        if seen is None or seen.offset == record.offset:
            out.write(TABLE, seen_key, SeenSample(offset=record.offset))
            waiting = state.waiting.setdefault(kind_name, [])
            if not waiting:
                state.first_ts[kind_name] = now
            waiting.append(Waiting(sample.id, record.offset))  # type: ignore[attr-defined]
        else:
            out.count("trigger.repeated_sample")  # the same sample routed twice
    else:
        _job_record(record, state, now)
    state.last_offset[record.topic] = record.offset
    job = next_job(state, ctx, now)
    if job is not None:
        waiting = state.waiting[job.kind]
        n = len(job.sample_ids)
        taken, state.waiting[job.kind] = waiting[:n], waiting[n:]
        state.first_ts[job.kind] = now
        state.jobs += 1
        state.in_flight = InFlight(id=job.id, kind=job.kind, samples=taken)
        out.emit("jobs", job.id, job)
        out.count("jobs.emitted")
    return out


def _job_record(record: Record, state: TriggerState, now: float) -> None:
    status = decode_jobs_record(record.value or b"")
    flight = state.in_flight
    if not isinstance(status, JobStatus) or status.state not in ("finished", "failed"):
        return
    if flight is None or flight.id != status.job_id:
        return
    if status.state == "failed":  # the samples are not lost: back to the front of the buffer
        state.waiting[flight.kind] = flight.samples + state.waiting.get(flight.kind, [])
        state.first_ts.setdefault(flight.kind, now)
    if status.version is not None:  # the version this job produced is the new base
        state.base_version = max(state.base_version, status.version)
    state.in_flight = None
