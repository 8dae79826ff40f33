"""The flywheel's stream side: training buffers that fire jobs, and hot-swapping new versions.

**trigger** consumes ``train.sft``, ``train.dpo`` and ``train.jobs``. It keeps,
in one table record, the samples waiting per kind, the jobs emitted so far and
the job in flight. The schedule (``training.schedule``, e.g. sft then dpo)
says which kind fires next; a job fires when that kind has ``<kind>_batch``
samples (or, with ``max_wait_s``, when the oldest has waited that long) and no
job is in flight. The job lists exactly the sample ids and offsets it covers;
state and job id change in one table write, so a restart re-sends the *same*
job id at most, which the trainer runs once. A failed job's samples go back
to the front of the buffer.

**models watcher**: every worker tails ``arena.models`` from the start with
its own group-less consumer, so each one switches its target client to the
newest version, whichever partitions it owns. Before the agents start, the
worker applies the versions already published (:func:`load_versions`), so a
restarted worker never answers with an older version than the newest one.
(Holding the agents back until the watcher caught up instead was tried and
rejected: agents that stall on their first events at start-up were measured
to lose work after a later SIGKILL; see docs/reliability.md.)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import msgspec
import structlog

from arena_stream.config import Config
from arena_stream.schemas import (
    DPOPair,
    JobStatus,
    ModelVersion,
    SFTSample,
    TrainingJob,
    decode,
    decode_jobs_record,
)
from arena_stream.streams.runtime import Runtime, table_writes_for

log = structlog.get_logger("arena_stream.flywheel")

STATE_KEY = "flywheel"
TRIGGER_BATCH = 500  # events per state write at most
TRIGGER_WITHIN_S = 0.05  # how long a partial batch waits for more events


def empty_state() -> dict[str, Any]:
    return {
        "pending": {"sft": [], "dpo": [], "ppo": []},
        "jobs": 0,
        "in_flight": None,
        "first_ts": {},
        "last_offset": {},
    }


def hyperparameters(config: Config, kind: str) -> dict[str, Any]:
    t = config.training
    return {
        "lora": t.lora,
        "lora_r": t.lora_r,
        "lora_alpha": t.lora_alpha,
        "lora_dropout": t.lora_dropout,
        "learning_rate": t.learning_rate,
        "epochs": t.epochs,
        "max_steps": t.max_steps,
        "batch_size": t.batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "max_length": t.max_length,
        "seed": t.seed,
        **({"dpo_beta": t.dpo_beta} if kind == "dpo" else {}),
    }


def next_job(
    config: Config,
    state: dict[str, Any],
    base_version: int,
    now: float,
    *,
    topic_of: Callable[[str], str],
) -> TrainingJob | None:
    """The job to fire now, if any (pure: the caller commits the new state)."""
    if state["in_flight"] is not None or not config.training.enabled:
        return None
    schedule = config.training.schedule
    index = state["jobs"]
    kind = schedule[index % len(schedule)]
    pending = state["pending"][kind]
    batch = config.training.sft_batch if kind == "sft" else config.training.dpo_batch
    waited = now - state["first_ts"].get(kind, now)
    timed_out = config.training.max_wait_s > 0 and waited >= config.training.max_wait_s
    if len(pending) >= batch:
        chosen = pending[:batch]
    elif timed_out and len(pending) >= max(1, config.training.min_batch):
        chosen = list(pending)
    else:
        return None
    offsets = [o for _, o in chosen]
    return TrainingJob(
        id=f"job-{index + 1:04d}-{kind}",
        kind=kind,
        round=index // len(schedule),
        base_model=config.target.name,
        base_version=base_version,
        sample_ids=[i for i, _ in chosen],
        topic=topic_of(kind),
        offsets={"0": [min(offsets), max(offsets)]},
        hyperparameters=hyperparameters(config, kind),
        ts=now,
    )


def register(
    app: faust.App,
    config: Config,
    rt: Runtime,
    topics: dict[str, faust.TopicT],
    tables: dict[str, faust.TableT],
    send: Callable[[str, str, Any], Awaitable[None]],
) -> None:
    buffers = tables["buffers"]
    names = {k: topics[k].get_topic_name() for k in ("sft", "dpo", "jobs")}
    kinds = {names["sft"]: "sft", names["dpo"]: "dpo"}
    channel = app.topic(
        names["sft"], names["dpo"], names["jobs"], key_serializer="raw", value_serializer="raw"
    )

    def topic_of(kind: str) -> str:
        return names.get(kind, names["sft"])

    @app.agent(channel, name="trigger")
    async def trigger(stream: faust.StreamT) -> None:
        # The state is one table record that grows with the samples waiting, so it is
        # written back once per batch of events, not once per event: per event, every
        # sample re-encoded and re-sent the whole buffer, quadratic in the backlog
        # (bench/results/pipeline.md). faust acks a batch's events only after the batch is
        # done, and a redelivered batch is idempotent (last_offset, the seen: keys).
        async for batch in stream.take_events(TRIGGER_BATCH, within=TRIGGER_WITHIN_S):
            state = buffers.get(STATE_KEY) or empty_state()
            for event in batch:
                table_writes_for(event)
                try:
                    await _trigger(event, state)
                except Exception:
                    log.exception(
                        "trigger.error", topic=event.message.topic, offset=event.message.offset
                    )
            buffers[STATE_KEY] = state

    async def _trigger(event: Any, state: dict[str, Any]) -> None:
        msg = event.message
        if msg.offset <= state["last_offset"].get(msg.topic, -1):
            return  # redelivered: this record is already in the state
        now = time.time()
        kind = kinds.get(msg.topic)
        if kind is not None:
            sample = decode(msg.value, SFTSample if kind == "sft" else DPOPair)
            seen_key = f"seen:{kind}:{sample.id}"
            first = buffers.get(seen_key)
            if first is not None and first != msg.offset:
                return  # the same sample routed twice
            buffers[seen_key] = msg.offset
            if not state["pending"][kind]:
                state["first_ts"][kind] = now
            state["pending"][kind].append([sample.id, msg.offset])
        else:
            status = decode_jobs_record(msg.value)
            flight = state["in_flight"]
            ended = isinstance(status, JobStatus) and status.state in ("finished", "failed")
            if ended and flight and flight["id"] == status.job_id:
                if status.state == "failed":  # the samples are not lost: back to the front
                    k = flight["kind"]
                    state["pending"][k] = flight["samples"] + state["pending"][k]
                    state["first_ts"].setdefault(k, now)
                    log.warning(
                        "job.failed_requeued",
                        job_id=status.job_id,
                        samples=len(flight["samples"]),
                        reason=status.message,
                    )
                if status.version is not None:  # the version this job produced is the new base
                    state["base_version"] = max(state.get("base_version", 0), status.version)
                state["in_flight"] = None
        state["last_offset"][msg.topic] = msg.offset
        base_version = max(state.get("base_version", 0), rt.client(config.target.name).version)
        job = next_job(config, state, base_version, now, topic_of=topic_of)
        if job is not None:
            k = job.kind
            taken = state["pending"][k][: len(job.sample_ids)]
            state["pending"][k] = state["pending"][k][len(job.sample_ids) :]
            state["first_ts"][k] = now
            state["jobs"] += 1
            state["in_flight"] = {"id": job.id, "kind": k, "samples": taken}
            await send(job.id, "jobs", job)
            rt.counters["jobs.emitted"] += 1
            log.info(
                "job.emitted",
                job_id=job.id,
                kind=k,
                samples=len(job.sample_ids),
                base_version=base_version,
                round=job.round,
            )

    if config.training.max_wait_s > 0:

        @app.timer(interval=max(1.0, config.training.max_wait_s / 4))
        async def tick() -> None:
            # Tables can only change inside an event, so the clock is a message.
            await send("tick", "jobs", JobStatus(job_id="", state="tick", ts=time.time()))

    @app.task
    async def watch_models() -> None:
        from arena_stream.kafka.io import tail

        async for record in tail(config, "models"):
            try:
                version = decode(record.value, ModelVersion)
            except msgspec.MsgspecError as exc:
                log.warning("models.bad_record", offset=record.offset, error=str(exc))
                continue
            await apply_version(rt, version)


async def load_versions(rt: Runtime) -> None:
    """Apply the newest published version of each player, before any agent runs."""
    from arena_stream.kafka.io import read_all

    newest: dict[str, ModelVersion] = {}
    for record in await read_all(rt.config, "models"):
        try:
            version = decode(record.value, ModelVersion)
        except msgspec.MsgspecError:
            continue  # the watcher logs it
        if version.name not in newest or version.version > newest[version.name].version:
            newest[version.name] = version
    for version in newest.values():
        await apply_version(rt, version)


async def apply_version(rt: Runtime, version: ModelVersion) -> None:
    """Switch a player's client to ``version`` if it is newer than what it runs."""
    try:
        player = rt.config.player(version.name)
    except KeyError:
        return
    client = rt.client(player.name)
    if version.version <= client.version:
        return
    await client.use_version(version.version, version.path, version.served_name)
    rt.versions[player.name] = msgspec.to_builtins(version)
    log.info(
        "model.swapped",
        player=player.name,
        version=version.version,
        path=version.path,
        round=version.round,
    )
