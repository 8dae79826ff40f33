"""Training jobs of the flywheel: SFT and DPO with TRL, LoRA by default.

:func:`run_job` is the one entry point: the trainer service calls it (or
``python -m trainers`` in a subprocess, which also runs under
``accelerate launch`` on a multi-GPU box) with a :class:`~schemas.TrainingJob`
and the buffered samples it names, and gets back where the new version was
saved and how training went.

Heavy imports (torch, transformers, TRL, peft) happen inside the functions, so
importing this package costs nothing for processes that never train.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from arena_stream.config import TrainingConfig
from arena_stream.schemas.events import DPOPair, SFTSample, TrainingJob
from arena_stream.trainers.common import (
    LogSink,
    PreparedJob,
    TrainResult,
    UnsupportedJobKind,
    job_config,
)

__all__ = ["PreparedJob", "TrainResult", "UnsupportedJobKind", "prepare_job", "run_job"]

T = TypeVar("T")


def run_job(
    job: TrainingJob,
    samples: Sequence[SFTSample] | Sequence[DPOPair],
    cfg: TrainingConfig,
    *,
    base_model: str,
    parent_adapter: str | None,
    out_dir: Path,
    on_log: LogSink | None = None,
) -> TrainResult:
    """Train one new version of the target on ``samples`` and save it under ``out_dir``.

    ``base_model`` is the checkpoint every version shares (``"smollm2"`` or a
    path); ``parent_adapter`` the previous version's adapter (or full
    checkpoint when ``cfg.lora`` is False), ``None`` for the first version.
    ``job.hyperparameters`` override fields of ``cfg`` for this job only.
    ``on_log`` gets each logging step (``step``, ``loss``, ``learning_rate``,
    ...) on the main process.
    """
    return prepare_job(
        job, samples, cfg, base_model=base_model, parent_adapter=parent_adapter,
        out_dir=out_dir, on_log=on_log,
    ).run()


def prepare_job(
    job: TrainingJob,
    samples: Sequence[SFTSample] | Sequence[DPOPair],
    cfg: TrainingConfig,
    *,
    base_model: str,
    parent_adapter: str | None,
    out_dir: Path,
    on_log: LogSink | None = None,
) -> PreparedJob:
    """Everything :func:`run_job` does short of training: the trainer for this job, set up.

    Validation errors (wrong sample type, unknown kind, PPO) surface here,
    before any model is loaded.
    """
    cfg = job_config(cfg, job)
    out_dir = Path(out_dir)
    if job.kind == "ppo":
        raise UnsupportedJobKind(ppo_requirements(job))
    if job.kind not in ("sft", "dpo"):
        raise UnsupportedJobKind(f"job {job.id}: unknown kind {job.kind!r}")
    if not samples:
        raise ValueError(f"job {job.id}: no samples to train on")
    if job.kind == "sft":
        from arena_stream.trainers.sft import prepare_sft

        return prepare_sft(
            _typed(job, samples, SFTSample), cfg, base_model=base_model,
            parent_adapter=parent_adapter, out_dir=out_dir, on_log=on_log,
        )
    from arena_stream.trainers.dpo import prepare_dpo

    return prepare_dpo(
        _typed(job, samples, DPOPair), cfg, base_model=base_model,
        parent_adapter=parent_adapter, out_dir=out_dir, on_log=on_log,
    )


def ppo_requirements(job: TrainingJob) -> str:
    """Why a PPO job cannot run yet, and what it would take.

    The paper's third stage trains a reward model on the judged battles and
    then runs PPO against it. Both are left out deliberately rather than
    approximated; this is where they plug in:

    1. a reward-model job: ``DPOPair`` rows as ``chosen``/``rejected`` into
       ``trl.RewardTrainer`` on a sequence-classification head over the base,
       saved as its own versioned artifact;
    2. a PPO job: prompts from ``arena.prompts`` (no answers needed), the
       current target adapter as policy, that reward model, and an online
       generation loop (TRL keeps PPO under ``trl.experimental``; GRPO/RLOO in
       ``trl`` take a reward function and are the likelier route);
    3. a ``TrainingJob`` that names the reward-model version to use.
    """
    return (
        f"job {job.id}: PPO is not implemented. It needs a trained reward model "
        "(trl.RewardTrainer on the DPO pairs), a prompt-only dataset and an online "
        "generation loop with the current target adapter as policy; see "
        "trainers.ppo_requirements. Use kind 'sft' or 'dpo', or drop 'ppo' from "
        "[training].schedule."
    )


def _typed(job: TrainingJob, samples: Sequence[object], kind: type[T]) -> list[T]:
    """The samples as a list of ``kind``, or a clear error naming the first mismatch."""
    for sample in samples:
        if not isinstance(sample, kind):
            raise TypeError(
                f"job {job.id} ({job.kind}) needs {kind.__name__} samples, "
                f"got {type(sample).__name__}"
            )
    return list(samples)  # type: ignore[arg-type]
