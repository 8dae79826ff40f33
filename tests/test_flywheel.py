"""The training flywheel on the embedded broker: thresholds, jobs, versions, hot swap."""

from __future__ import annotations

import pytest

from arena_stream.schemas import (
    DPOPair,
    Generation,
    JobStatus,
    ModelVersion,
    SFTSample,
    TrainingJob,
    decode_jobs_record,
)
from arena_stream.trainers.service import TrainerService
from tests.helpers import count, events, prompt, publish_raw, wait_for
from tests.openai_stub import OpenAIStub, Reply, completion
from tests.test_restart_audit import run_until

TRAINING = """
[training]
enabled = true
sft_batch = 3
dpo_batch = 3
schedule = ["sft", "dpo"]
base_checkpoint = "smollm2"
model_dir = "{model_dir}"
max_steps = 2
batch_size = 2
max_length = 128
learning_rate = 1e-3
"""


def training_config(make_config, url: str, tmp_path) -> object:
    text = TRAINING.format(model_dir=tmp_path / "models")
    config = make_config(url, extra="")
    # make_config writes [training] enabled = false; replace that section
    import msgspec

    from arena_stream.config import loads

    raw = msgspec.toml.encode(config).decode().split("[training]")[0]
    return loads(raw + text)


async def jobs_of(config) -> list[TrainingJob]:
    from arena_stream.kafka.io import read_all

    records = [decode_jobs_record(r.value) for r in await read_all(config, "jobs")]
    return [r for r in records if isinstance(r, TrainingJob)]


async def test_threshold_fires_one_job_for_exactly_those_samples(make_config, stub, tmp_path):
    config = training_config(make_config, stub.base_url, tmp_path)
    await publish_raw(config, [prompt(f"p{i}", f"q{i}") for i in range(4)])
    await run_until(config, "jobs", 1, sft=4)
    jobs = await jobs_of(config)
    sft = await events(config, "sft", SFTSample)
    assert len(jobs) == 1 and len(sft) == 4
    job = jobs[0]
    assert job.kind == "sft" and job.id == "job-0001-sft" and job.base_version == 0
    assert job.sample_ids == [s.id for s in sft[:3]] and job.offsets == {"0": [0, 2]}
    assert job.hyperparameters["max_steps"] == 2 and job.round == 0

    # a restarted worker (trigger included) recovers its table and fires nothing new
    await publish_raw(config, [prompt("p0", "q0")])
    await run_until(config, "ratings", 8)
    assert [j.id for j in await jobs_of(config)] == ["job-0001-sft"]


@pytest.mark.slow
async def test_trained_version_is_published_hot_swapped_and_plays(make_config, tmp_path):
    from tests.conftest import length_judge

    served: list[str] = []

    def handler(path: str, body: dict) -> Reply:
        if path.endswith("/load_lora_adapter"):
            served.append(body["lora_name"])
            return Reply(body={})
        if body.get("model", "").startswith("t-v") or body.get("model") in served:
            return Reply(body=completion("the trained target answers at length now"))
        return length_judge(path, body)

    with OpenAIStub(handler) as stub:
        config = training_config(make_config, stub.base_url, tmp_path)
        await publish_raw(config, [prompt(f"p{i}", f"q{i}") for i in range(4)])
        await run_until(config, "jobs", 1)

        job = (await jobs_of(config))[0]
        trainer = TrainerService(config)
        await trainer.load_history()
        version = await trainer.run(job)
        assert version is not None and version.version == 1 and version.kind == "sft"
        assert (tmp_path / "models" / "target" / "versions.json").is_file()
        statuses = [s for s in map(decode_jobs_record, [r.value for r in
                    await _records(config, "jobs")]) if isinstance(s, JobStatus)]
        assert [s.state for s in statuses if s.state != "progress"] == ["started", "finished"]
        progress = [s.progress for s in statuses if s.state == "progress"]
        assert progress and all(p is not None and p.step >= 1 for p in progress)
        assert progress[-1].eta_s == 0.0 and progress[-1].step == progress[-1].max_steps
        assert statuses[-1].metrics["steps"] >= 1
        models = await events(config, "models", ModelVersion)
        assert [(m.name, m.version, m.job_id) for m in models] == [("target", 1, job.id)]

        # the worker swaps in v1 (vLLM runtime LoRA loading), then the next battles name it
        await publish_raw(config, [prompt("after", "a question after training")])
        async with _worker(config) as app:
            async def played_by_v1() -> bool:
                gens = await events(config, "generations", Generation)
                return any(g.model == "target@v1" for g in gens)

            await wait_for(played_by_v1, timeout=60)
            await wait_for(lambda: _dpo_job_emitted(config), timeout=30)
            assert app.runtime.client("target").version == 1
        load = [b for p, b, _ in stub.requests if p.endswith("/load_lora_adapter")]
        assert load == [{"lora_name": "target-v1", "lora_path": version.path}]
        after = [g for g in await events(config, "generations", Generation)
                 if g.prompt_id == "after" and g.player == "target"]
        assert after[0].model == "target@v1" and after[0].version == 1
        dpo_job = (await jobs_of(config))[1]
        assert dpo_job.kind == "dpo" and dpo_job.base_version == 1
        assert len(dpo_job.sample_ids) == 3 and await count(config, "dpo") >= 3
        assert all(isinstance(p, DPOPair) for p in await events(config, "dpo", DPOPair))


async def _records(config, key):
    from arena_stream.kafka.io import read_all

    return await read_all(config, key)


async def _dpo_job_emitted(config) -> bool:
    return len(await jobs_of(config)) >= 2


def _worker(config):
    from contextlib import asynccontextmanager

    from arena_stream.streams.worker import running_worker, wait_until_ready

    @asynccontextmanager
    async def run():
        async with running_worker(config) as app:
            await wait_until_ready(app)
            yield app

    return run()


async def test_time_trigger_fires_a_partial_batch(make_config, stub, tmp_path):
    config = training_config(make_config, stub.base_url, tmp_path)
    import msgspec

    config = msgspec.structs.replace(config, training=msgspec.structs.replace(
        config.training, sft_batch=100, dpo_batch=100, max_wait_s=2.0, min_batch=2))
    await publish_raw(config, [prompt(f"p{i}", f"q{i}") for i in range(3)])
    async with _worker(config):
        async def fired() -> bool:
            return bool(await jobs_of(config))

        await wait_for(fired, timeout=60)
    jobs = await jobs_of(config)
    assert len(jobs) == 1 and jobs[0].kind == "sft" and len(jobs[0].sample_ids) == 3
