"""Experiment tracking and TRL pass-through: report_to, [training.trl_args], progress events.

Fast tests check the config (names read from the installed transformers / TRL),
the progress callback on a fake trainer state with a fake clock, and the
progress event as it travels. The slow one trains a real SFT job with
``report_to = "tensorboard"`` and a passed-through argument.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import msgspec
import pytest

from arena_stream.arena.kinds import kind
from arena_stream.config import ConfigError, TrainingConfig, loads
from arena_stream.schemas import JobStatus, TrainingProgress, decode_jobs_record, encode
from arena_stream.trainers import arguments
from arena_stream.trainers.common import ProgressCallback, trl_config_args
from arena_stream.trainers.dpo import dpo_args
from arena_stream.trainers.service import _progress
from tests.conftest import config_text


def load_training(extra: str) -> TrainingConfig:
    text = config_text(bootstrap="127.0.0.1:1", url="http://127.0.0.1:1/v1", prefix="x.",
                       app_id="x", extra=extra)
    return loads(text, source="arena.toml").training


def problems(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_training(extra)
    return str(info.value).splitlines()


# -- report_to -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ['"none"', '"all"', '"tensorboard"', '"wandb"', '"mlflow"',
                                   '["tensorboard", "mlflow"]', '"comet_ml"'])
def test_report_to_takes_what_transformers_takes(value: str) -> None:
    training = load_training(f"report_to = {value}")
    assert training.report_to == msgspec.toml.decode(f"v = {value}")["v"]


def test_report_to_typos_and_bad_lists_are_refused() -> None:
    (line,) = problems('report_to = "tensorbord"')
    assert line.startswith("arena.toml: training.report_to: 'tensorbord' is not an integration")
    assert "did you mean 'tensorboard'?" in line
    assert "did you mean" not in problems('report_to = "nowhere-at-all"')[0]
    assert '"none" and "all" stand alone' in problems('report_to = ["none", "wandb"]')[0]
    assert "empty list" in problems("report_to = []")[0]


def test_integration_names_are_the_installed_transformers_own() -> None:
    """Read from its source without importing it; the same as the imported table."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    assert arguments.integrations() == tuple(INTEGRATION_TO_CALLBACK)


def test_the_trainer_checks_at_start_that_the_trackers_are_installed(tmp_path: Path) -> None:
    import importlib.util

    from arena_stream.cli.checks import environment_checks

    def checks(report_to: str) -> list[Any]:
        text = config_text(bootstrap="127.0.0.1:1", url="http://127.0.0.1:1/v1", prefix="x.",
                           app_id="x", extra=f'report_to = {report_to}\n'
                           f'model_dir = "{tmp_path}"\n').replace("enabled = false", "")
        config = loads(text)
        return [c for c in environment_checks(config, "trainer") if "tracking" in c.name]

    (ok,) = checks('"tensorboard"')  # tensorboardX is a dev dependency
    assert ok.ok and ok.name == "experiment tracking (tensorboard)"
    if importlib.util.find_spec("wandb") is None:
        (missing,) = checks('["tensorboard", "wandb"]')
        assert not missing.ok
        assert "'wandb', not installed where the trainer runs (pip install wandb)" \
            in missing.detail
    assert checks('"none"') == []


# -- trl_args --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["SFTConfig", "DPOConfig"])
def test_trl_argument_names_read_from_source_are_the_classes_own(name: str) -> None:
    """Read without importing TRL (seconds of torch at every config load); the same set."""
    import dataclasses

    import trl

    real = {f.name for f in dataclasses.fields(getattr(trl, name)) if f.init}
    assert arguments._source_fields("trl", name) == real
    assert arguments.trl_fields(f"trl:{name}") == real


def test_trl_args_accepts_real_arguments_and_overridable_defaults() -> None:
    training = load_training('[training.trl_args]\nwarmup_steps = 3\nmax_grad_norm = 0.5\n'
                             'lr_scheduler_type = "cosine"\n'
                             '[training.trl_kind_args.dpo]\nlabel_smoothing = 0.1\n')
    assert training.trl_args == {"warmup_steps": 3, "max_grad_norm": 0.5,
                                 "lr_scheduler_type": "cosine"}
    assert training.trl_kind_args == {"dpo": {"label_smoothing": 0.1}}


def test_trl_args_unknown_names_get_a_suggestion() -> None:
    (line,) = problems("[training.trl_args]\nweight_decy = 0.1\n")
    assert line == ("arena.toml: training.trl_args.weight_decy: SFTConfig and DPOConfig have "
                    "no such argument (did you mean 'weight_decay'?)")
    (line,) = problems('[training.trl_kind_args.sft]\npackin_strategy = "bfd"\n')
    assert line == ("arena.toml: training.trl_kind_args.sft.packin_strategy: SFTConfig has "
                    "no such argument (did you mean 'packing_strategy'?)")


def test_a_kind_specific_argument_in_the_shared_table_says_where_it_goes() -> None:
    (line,) = problems("[training.trl_args]\nlabel_smoothing = 0.1\n")
    assert line == ("arena.toml: training.trl_args.label_smoothing: SFTConfig has no such "
                    "argument; it is for dpo jobs only: put it under "
                    "[training.trl_kind_args.dpo]")
    # with only DPO jobs scheduled it is fine where it is
    assert load_training('schedule = ["dpo"]\n[training.trl_args]\nlabel_smoothing = 0.1\n')


def test_arguments_arena_stream_sets_are_refused_with_the_reason() -> None:
    lines = problems('[training.trl_args]\noutput_dir = "/tmp/x"\nlearning_rate = 0.1\n'
                     '[training.trl_kind_args.sft]\npacking = true\n'
                     '[training.trl_kind_args.ppo]\nfoo = 1\n')
    assert any("training.trl_args.output_dir: not passed through: each job writes its "
               "version under [training] model_dir" in x for x in lines)
    assert any("training.trl_args.learning_rate: not passed through: set by [training] "
               "learning_rate" in x for x in lines)
    assert any("training.trl_kind_args.sft.packing: not passed through" in x for x in lines)
    assert any("training.trl_kind_args: unknown training kind 'ppo'" in x for x in lines)
    assert len(lines) == 4


def test_pass_through_arguments_reach_the_trl_configs(tmp_path: Path) -> None:
    from trl import DPOConfig, SFTConfig

    cfg = TrainingConfig(report_to=["tensorboard"], trl_args={
        "max_grad_norm": 0.5, "lr_scheduler_type": "cosine", "weight_decay": 0.01,
    }, trl_kind_args={"dpo": {"label_smoothing": 0.3}})
    sft = SFTConfig(**trl_config_args(cfg, tmp_path / "job-1", "sft",
                                      {"completion_only_loss": True}))
    assert (sft.max_grad_norm, sft.weight_decay) == (0.5, 0.01)
    assert sft.lr_scheduler_type == "cosine"  # overrides our "constant"
    assert sft.report_to == ["tensorboard"] and sft.run_name == "job-1"
    assert sft.output_dir == str(tmp_path / "job-1")
    dpo = DPOConfig(**trl_config_args(cfg, tmp_path / "job-2", "dpo", {"beta": 0.2}))
    assert (dpo.label_smoothing, dpo.beta, dpo.max_grad_norm) == (0.3, 0.2, 0.5)
    assert dpo.learning_rate == sft.learning_rate == cfg.learning_rate
    # DPO's own step size, when set, for DPO jobs only; a job records what it resolves to
    slow = msgspec.structs.replace(cfg, dpo_learning_rate=5e-6)
    dpo = DPOConfig(**trl_config_args(slow, tmp_path / "job-3", "dpo", dpo_args(slow)))
    sft = SFTConfig(**trl_config_args(slow, tmp_path / "job-4", "sft", {}))
    assert (dpo.learning_rate, sft.learning_rate) == (5e-6, cfg.learning_rate)
    assert kind("dpo").hyperparameters(cfg)["dpo_learning_rate"] == cfg.learning_rate
    assert kind("dpo").hyperparameters(slow)["dpo_learning_rate"] == 5e-6
    assert "dpo_learning_rate" not in kind("sft").hyperparameters(slow)
    # a config built in code is held to the same rule
    owned = TrainingConfig(trl_args={"save_strategy": "steps"})
    with pytest.raises(ValueError, match="save_strategy set by arena-stream itself"):
        trl_config_args(owned, tmp_path, "sft", {})


# -- progress --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_reports_speed_and_eta_and_is_throttled() -> None:
    """A fake trainer state (step, max_steps, logs) and clock drive the callback."""
    clock, sent = Clock(), []
    progress = ProgressCallback(sent.append, every_s=10.0, clock=clock)
    progress.begin()
    for step in range(1, 11):  # 2 s per step, 100 tokens per step
        clock.now += 2.0
        progress.handle({"loss": 1.0 / step, "learning_rate": 1e-4,
                         "num_tokens": 100.0 * step}, step, True, max_steps=10,
                        epoch=step / 10)
    assert [r["step"] for r in sent] == [1, 6, 10]  # first, every 10 s, last
    first = sent[0]
    assert first["eta_s"] == pytest.approx(18.0)  # 2 s a step, 9 steps left
    assert first["tokens_per_second"] == pytest.approx(50.0)
    assert (first["elapsed_s"], first["max_steps"], first["epoch"]) == (2.0, 10, 0.1)
    assert sent[1]["eta_s"] == pytest.approx(8.0) and sent[-1]["eta_s"] == 0.0
    assert len(progress.losses) == 10  # every loss is kept for the result
    # not the main process: nothing reported; a summary without loss: ignored
    quiet: list[dict[str, Any]] = []
    other = ProgressCallback(quiet.append, clock=clock)
    other.handle({"loss": 1.0}, 1, False, max_steps=2)
    other.handle({"train_runtime": 3.0}, 2, True, max_steps=2)
    assert quiet == [] and other.losses == [1.0]


def test_a_progress_line_becomes_a_typed_plain_json_event() -> None:
    line = ('{"event": "log", "step": 3, "loss": 0.7, "learning_rate": 0.0002, "max_steps": 8,'
            ' "elapsed_s": 6.0, "eta_s": 10.0, "tokens_per_second": 412.5, "grad_norm": 1.5}')
    parsed = _progress(line)
    assert parsed is not None
    progress, metrics = parsed
    assert progress == TrainingProgress(step=3, max_steps=8, loss=0.7, learning_rate=0.0002,
                                        tokens_per_second=412.5, elapsed_s=6.0, eta_s=10.0)
    assert metrics["grad_norm"] == 1.5
    status = JobStatus(job_id="j", state="progress", kind="sft", progress=progress,
                       metrics=metrics, ts=1.0)
    wire = encode(status)
    assert msgspec.json.decode(wire)["progress"]["eta_s"] == 10.0  # plain JSON
    assert decode_jobs_record(wire) == status
    assert _progress('{"event": "result", "path": "x"}') is None
    assert _progress('{"event": "log", "step": 3, "loss": 0.7') is None  # cut short
    assert _progress("Some library output") is None


def test_follow_views_show_a_running_job_with_its_eta() -> None:
    from arena_stream.cli.progress import Tracker
    from arena_stream.config import default_config

    tracker = Tracker(default_config())
    progress = TrainingProgress(step=12, max_steps=40, loss=0.7123, tokens_per_second=812.4,
                                elapsed_s=30.0, eta_s=65.0)
    tracker.feed("jobs", encode(JobStatus(job_id="job-3", state="progress", progress=progress)))
    assert tracker.job_line("job-3") == "job-3:progress step 12/40 loss 0.712 812 tok/s ETA 1m05s"
    tracker.feed("jobs", encode(JobStatus(job_id="job-3", state="finished", version=2)))
    assert tracker.job_line("job-3") == "job-3:finished"


FAKE_TRAINER = """#!/bin/sh
# Stands in for `python -m arena_stream.trainers`: prints what a job prints, writes a result.
while [ $# -gt 0 ]; do
  case "$1" in --result) result="$2"; shift;; --out) out="$2"; shift;; esac
  shift
done
mkdir -p "$out"
echo '{"event": "log", "step": 1, "max_steps": 2, "loss": 0.9, "elapsed_s": 1.5,'\
' "eta_s": 1.5, "tokens_per_second": 120.0, "grad_norm": 2.0}'
echo 'a library writes here too'
echo '{"event": "log", "step": 2, "max_steps": 2, "loss": 0.5, "elapsed_s": 3.0, "eta_s": 0.0}'
printf '{"path": "%s", "adapter": true, "metrics": {"steps": 2.0}}' "$out" > "$result"
"""


async def test_the_trainer_service_publishes_progress_on_the_jobs_topic(
    make_config, stub, tmp_path: Path,
) -> None:
    """Through a real broker: the job's progress lines become typed progress events."""
    from arena_stream.kafka.io import producer, read_all, topic_name
    from arena_stream.schemas import Message, SFTSample, TrainingJob
    from arena_stream.streams.worker import prepare
    from arena_stream.trainers.service import TrainerService
    from tests.test_flywheel import training_config

    config = training_config(make_config, stub.base_url, tmp_path)
    await prepare(config)
    sample = SFTSample(id="s1", battle_id="b1", prompt_id="p", winner="c", loser="t",
                       margin=4.0, messages=[Message("user", "q"), Message("assistant", "a")])
    async with producer(config) as p:
        await p.send_and_wait(topic_name(config, "sft"), encode(sample), key=b"p")
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_TRAINER)
    fake.chmod(0o755)
    service = TrainerService(config, python=str(fake))
    job = TrainingJob(id="job-0001-sft", kind="sft", base_model="target", base_version=0,
                      sample_ids=["s1"], topic="x", offsets={"0": [0, 0]})
    version = await service.run(job)
    assert version is not None and version.version == 1
    statuses = [s for r in await read_all(config, "jobs")
                if isinstance(s := decode_jobs_record(r.value), JobStatus)]
    assert [s.state for s in statuses] == ["started", "progress", "progress", "finished"]
    first, last = statuses[1], statuses[2]
    assert first.progress == TrainingProgress(step=1, max_steps=2, loss=0.9, elapsed_s=1.5,
                                              eta_s=1.5, tokens_per_second=120.0)
    assert first.metrics["grad_norm"] == 2.0 and first.kind == "sft"
    assert last.progress is not None and last.progress.eta_s == 0.0


# -- slow: a real job ------------------------------------------------------------------------


@pytest.mark.slow
def test_sft_job_reports_to_tensorboard_and_gets_the_passed_arguments(tmp_path: Path) -> None:
    pytest.importorskip("tensorboardX", reason="TensorBoard writer not installed")
    from arena_stream import trainers
    from tests.test_trainers import make_job, sft_samples

    samples = sft_samples()[:4]
    cfg = TrainingConfig(learning_rate=1e-3, max_steps=2, batch_size=2, max_length=96,
                         report_to="tensorboard", progress_every_s=0.0,
                         trl_args={"max_grad_norm": 0.25, "weight_decay": 0.01})
    sent: list[dict[str, Any]] = []
    out = tmp_path / "job-tb"
    prepared = trainers.prepare_job(make_job("sft", samples), samples, cfg, base_model="smollm2",
                                    parent_adapter=None, out_dir=out, on_log=sent.append)
    args = prepared.trainer.args
    assert (args.max_grad_norm, args.weight_decay, args.run_name) == (0.25, 0.01, "job-tb")
    names = [type(c).__name__ for c in prepared.trainer.callback_handler.callbacks]
    assert "TensorBoardCallback" in names
    prepared.run()
    events = list(out.glob("runs/*/events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    assert [r["step"] for r in sent] == [1, 2]
    assert sent[0]["eta_s"] >= 0 and sent[-1]["eta_s"] == 0.0
    assert sent[0]["tokens_per_second"] > 0
