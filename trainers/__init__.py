"""Training jobs of the flywheel: one TRL trainer per kind (SFT, DPO), LoRA by default.

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

from arena_stream.config import TrainingConfig
from arena_stream.schemas.events import Event, TrainingJob
from arena_stream.trainers.common import (
    LogSink,
    PreparedJob,
    TrainResult,
    UnsupportedJobKind,
    job_config,
)

__all__ = ["PreparedJob", "TrainResult", "UnsupportedJobKind", "prepare_job", "run_job"]

def run_job(
    job: TrainingJob,
    samples: Sequence[Event],
    cfg: TrainingConfig,
    *,
    base_model: str,
    parent_adapter: str | None,
    out_dir: Path,
    on_log: LogSink | None = None,
    system_prompt: str | None = None,
) -> TrainResult:
    """Train one new version of the target on ``samples`` and save it under ``out_dir``.

    ``base_model`` is the checkpoint every version shares (``"smollm2"`` or a
    path); ``parent_adapter`` the previous version's adapter (or full
    checkpoint when ``cfg.lora`` is False), ``None`` for the first version.
    ``job.hyperparameters`` override fields of ``cfg`` for this job only.
    ``on_log`` gets each logging step (``step``, ``loss``, ``learning_rate``,
    ...) on the main process. ``system_prompt`` is the target player's own: samples
    are formatted as the target sees them when it plays.
    """
    return prepare_job(
        job, samples, cfg, base_model=base_model, parent_adapter=parent_adapter,
        out_dir=out_dir, on_log=on_log, system_prompt=system_prompt,
    ).run()


def prepare_job(
    job: TrainingJob,
    samples: Sequence[Event],
    cfg: TrainingConfig,
    *,
    base_model: str,
    parent_adapter: str | None,
    out_dir: Path,
    on_log: LogSink | None = None,
    system_prompt: str | None = None,
) -> PreparedJob:
    """Everything :func:`run_job` does short of training: the trainer for this job, set up.

    Validation errors (an unknown kind, samples of the wrong type, none at all)
    surface here, before any model is loaded.
    """
    from arena_stream.arena.kinds import UnknownKind, kind

    try:
        entry = kind(job.kind)
    except UnknownKind as exc:
        raise UnsupportedJobKind(f"job {job.id}: {exc}") from None
    cfg = job_config(cfg, job)
    if not samples:
        raise ValueError(f"job {job.id}: no samples to train on")
    for sample in samples:
        if not isinstance(sample, entry.sample):
            raise TypeError(
                f"job {job.id} ({job.kind}) needs {entry.sample.__name__} samples, "
                f"got {type(sample).__name__}"
            )
    return entry.prepare()(  # type: ignore[no-any-return]
        list(samples), cfg, base_model=base_model, parent_adapter=parent_adapter,
        out_dir=Path(out_dir), on_log=on_log, system_prompt=system_prompt,
    )
