"""Training jobs and versions are input like any other: validated before they are trusted."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import msgspec
import pytest

from arena_stream.kafka.io import producer, read_all, topic_name
from arena_stream.schemas import JobStatus, Message, SFTSample, TrainingJob, decode_jobs_record
from arena_stream.streams.worker import prepare
from arena_stream.trainers.service import TrainerService, finite
from tests.helpers import wait_for
from tests.test_flywheel import training_config


def job(**kw: object) -> TrainingJob:
    fields: dict[str, object] = dict(
        id="job-0001-sft", kind="sft", base_model="target", base_version=0,
        sample_ids=["s1"], topic="x.train.sft", offsets={"0": [0, 0]},
        hyperparameters={"learning_rate": 1e-4},
    )
    fields.update(kw)
    return TrainingJob(**fields)  # type: ignore[arg-type]


@pytest.fixture
def service(make_config, stub, tmp_path) -> TrainerService:
    return TrainerService(training_config(make_config, stub.base_url, tmp_path))


@pytest.mark.parametrize(("fields", "why"), [
    ({"base_model": "/root/.ssh"}, "is not the target"),
    ({"id": "../../etc"}, "is not a plain name"),
    ({"id": "a/b"}, "is not a plain name"),
    ({"kind": "ppo"}, "unknown training kind"),
    ({"hyperparameters": {"max_steps": 1e9}}, "max_steps = 1000000000.0 is outside"),
    ({"hyperparameters": {"model_dir": "/tmp"}}, "'model_dir' is not a hyperparameter"),
    ({"hyperparameters": {"learning_rate": float("nan")}}, "is not a number"),
    ({"hyperparameters": {"dpo_beta": 0.1}}, "'dpo_beta' is not a hyperparameter a sft job"),
    ({"sample_ids": []}, "0 samples"),
    ({"offsets": {"0": [5, 2]}}, "is not a range"),
])
def test_a_job_from_anyone_who_can_write_the_topic_is_checked(
    service: TrainerService, fields: dict[str, object], why: str
) -> None:
    problem = service.job_problem(job(**fields))
    assert problem is not None and why in problem
    assert service.job_problem(job()) is None


async def test_a_refused_job_is_reported_failed_and_nothing_is_written(
    service: TrainerService, tmp_path: Path
) -> None:
    config = service.config
    await prepare(config)
    async with producer(config) as p:
        bad = job(id="job-9999-sft", base_model="/root/.ssh")
        await p.send_and_wait(topic_name(config, "jobs"), msgspec.json.encode(bad),
                              key=bad.id.encode())
    stop = asyncio.Event()
    serving = asyncio.create_task(service.serve(stop))

    async def refused() -> bool:
        statuses = [decode_jobs_record(r.value) for r in await read_all(config, "jobs")]
        return any(isinstance(s, JobStatus) and s.state == "failed" for s in statuses)

    try:
        await wait_for(refused, timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(serving, 30)
    [status] = [s for r in await read_all(config, "jobs")
                if isinstance(s := decode_jobs_record(r.value), JobStatus)]
    assert status.message.startswith("refused: base_model '/root/.ssh' is not the target")
    assert not (Path(config.training.model_dir) / "root").exists()


async def test_a_garbage_record_inside_a_jobs_range_does_not_fail_the_job(
    service: TrainerService,
) -> None:
    config = service.config
    await prepare(config)

    def sample(i: int) -> bytes:
        return msgspec.json.encode(SFTSample(
            id=f"s{i}", battle_id=f"s{i}", prompt_id="p", winner="c", loser="t", margin=4.0,
            messages=[Message("user", "q"), Message("assistant", "a")]))

    async with producer(config) as p:
        for value in (sample(1), b"{not a sample", b'{"id": 3}', sample(2)):
            await p.send_and_wait(topic_name(config, "sft"), value, key=b"k")
    got = await service.samples(job(sample_ids=["s1", "s2"], offsets={"0": [0, 3]}))
    assert [s.id for s in got] == ["s1", "s2"]


def test_metrics_that_json_cannot_carry_are_dropped() -> None:
    assert finite({"loss": math.nan, "steps": 4, "ok": True, "lr": math.inf, "x": 0.5}) == {
        "steps": 4.0, "x": 0.5}
    assert json.loads(msgspec.json.encode(finite({"a": 1.0}))) == {"a": 1.0}
