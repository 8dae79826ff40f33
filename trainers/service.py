"""The trainer service: consume training jobs, train, publish new versions.

Jobs come from ``arena.train.jobs``; each names its samples by id and offset
range on a training-buffer topic. The service reads exactly those samples,
runs the job in a child process (``python -m arena_stream.trainers``, which also runs under
``accelerate launch`` on multi-GPU machines), and publishes:

- ``JobStatus`` started / progress (step, loss, tokens/s, ETA: a :class:`TrainingProgress`,
  throttled by ``[training] progress_every_s``) / finished or failed on ``arena.train.jobs``;
- a ``ModelVersion`` on ``arena.models`` for each finished job.

A job id that already finished is never run again (the trigger may re-send a
job after a restart). A failed job publishes its reason; the trigger puts its
samples back in the buffer, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import structlog

from arena_stream import trainers
from arena_stream.arena.kinds import UnknownKind, hyperparameter_problems, kind
from arena_stream.config import Config
from arena_stream.kafka.io import (
    consumer,
    ensure_ready,
    partitions,
    producer,
    read_all,
    topic_name,
)
from arena_stream.schemas import (
    JobStatus,
    ModelVersion,
    TrainingJob,
    TrainingProgress,
    decode,
    decode_jobs_record,
    encode,
)
from arena_stream.trainers.common import TrainResult

log = structlog.get_logger(__name__)

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_JOB_SAMPLES = 1_000_000


def finite(metrics: dict[str, Any]) -> dict[str, float]:
    """Metrics that JSON can carry: a NaN loss encodes as null, and a version carrying one
    would then fail to decode everywhere it is read."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


class TrainerService:
    def __init__(self, config: Config, *, python: str | None = None) -> None:
        self.config = config
        self.python = python or sys.executable
        self.finished: set[str] = set()
        self.versions: dict[str, ModelVersion] = {}
        self.running: str | None = None

    async def load_history(self) -> None:
        """What earlier runs did: finished jobs and the newest version of each player."""
        for record in await read_all(self.config, "jobs"):
            with contextlib.suppress(msgspec.MsgspecError):
                status = decode_jobs_record(record.value)
                if isinstance(status, JobStatus) and status.state == "finished":
                    self.finished.add(status.job_id)
        for record in await read_all(self.config, "models"):
            with contextlib.suppress(msgspec.MsgspecError):
                v = decode(record.value, ModelVersion)
                cur = self.versions.get(v.name)
                if cur is None or v.version > cur.version:
                    self.versions[v.name] = v

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Run jobs as they arrive until ``stop`` is set.

        It checks first that the checkpoint to train from exists (a configuration
        error otherwise, reported once), then waits for the broker and lays the
        topics out if no worker has yet: it may start before or after the workers.
        """
        from arena_stream.models.preflight import check_base_checkpoint, require

        base = check_base_checkpoint(self.config)
        if base is not None:
            require([base])
        await ensure_ready(self.config, timeout=None)
        await self.load_history()
        stop = stop or asyncio.Event()
        jobs_topic = topic_name(self.config, "jobs")
        async with consumer(self.config) as c:
            tps = await partitions(c, jobs_topic)
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            while not stop.is_set():
                batch = await c.getmany(timeout_ms=500, max_records=50)
                for records in batch.values():
                    for record in records:
                        try:
                            job = decode_jobs_record(record.value)
                        except msgspec.MsgspecError as exc:
                            log.warning("trainer.bad_job", offset=record.offset, error=str(exc))
                            continue
                        if not isinstance(job, TrainingJob) or job.id in self.finished:
                            continue
                        problem = self.job_problem(job)
                        if problem is not None:
                            await self.refuse(job, problem)
                            continue
                        await self.run(job)

    def out_dir(self, job: TrainingJob) -> Path:
        return Path(self.config.training.model_dir).resolve() / job.base_model / job.id

    def job_problem(self, job: TrainingJob) -> str | None:
        """Why a record on the jobs topic must not be run (None: it may).

        The trainer writes under ``model_dir`` and trains with what a job says, so a
        job is checked as input from anyone who can write the topic: its kind has a
        registry entry, it trains the configured target, its id is a plain name (the
        new version's directory must stay inside ``model_dir``), its samples and
        offsets are sane, and its hyperparameters are on the allow-list, in bounds.
        """
        try:
            entry = kind(job.kind)
        except UnknownKind as exc:
            return str(exc)
        if job.base_model != self.config.target.name:
            return (f"base_model {job.base_model!r} is not the target "
                    f"({self.config.target.name!r})")
        if not SAFE_NAME.fullmatch(job.id) or ".." in job.id:
            return f"job id {job.id!r} is not a plain name ([A-Za-z0-9._-], no '..')"
        root = Path(self.config.training.model_dir).resolve()
        if not self.out_dir(job).is_relative_to(root):
            return f"job {job.id} would write outside {root}"
        if not 0 < len(job.sample_ids) <= MAX_JOB_SAMPLES:
            return f"{len(job.sample_ids)} samples (1..{MAX_JOB_SAMPLES} allowed)"
        first, last = job.offsets.get("0", [0, -1])
        if not 0 <= first <= last:
            return f"offset range {first}..{last} is not a range of the {entry.topic} buffer"
        problems = hyperparameter_problems(entry, job.hyperparameters)
        return "; ".join(problems) if problems else None

    async def refuse(self, job: TrainingJob, problem: str) -> None:
        log.warning("job.refused", job_id=job.id, reason=problem)
        async with producer(self.config) as p:
            status = JobStatus(job_id=job.id, state="failed", kind=job.kind,
                               message=f"refused: {problem}"[:2000], ts=time.time())
            await p.send_and_wait(topic_name(self.config, "jobs"), encode(status),
                                  key=job.id.encode())

    async def samples(self, job: TrainingJob) -> list[Any]:
        entry = kind(job.kind)
        first, last = job.offsets.get("0", [0, -1])
        wanted = set(job.sample_ids)
        records = await read_all(self.config, entry.topic, start={0: first}, end={0: last + 1})
        found: dict[str, Any] = {}
        for r in records:
            try:
                s = decode(r.value or b"", entry.sample)
            except msgspec.MsgspecError as exc:
                # Not a sample (another client wrote the buffer): it cannot be one of ours.
                log.warning("job.bad_sample_record", job_id=job.id, offset=r.offset, error=str(exc))
                continue
            if s.id in wanted and s.id not in found:
                found[s.id] = s
        missing = wanted - set(found)
        if missing:
            raise RuntimeError(f"{len(missing)} samples of {job.id} not found in {job.topic}")
        return [found[i] for i in job.sample_ids]

    async def run(self, job: TrainingJob) -> ModelVersion | None:
        self.running = job.id
        started = time.time()
        async with producer(self.config) as p:
            jobs_topic = topic_name(self.config, "jobs")

            async def status(state: str, message: str = "",
                             progress: TrainingProgress | None = None, **metrics: float) -> None:
                ev = JobStatus(job_id=job.id, state=state, kind=job.kind,  # type: ignore[arg-type]
                               message=message, metrics=finite(metrics), progress=progress,
                               ts=time.time())
                await p.send_and_wait(jobs_topic, encode(ev), key=job.id.encode())

            await status("started", f"{len(job.sample_ids)} samples")
            log.info("job.started", job_id=job.id, kind=job.kind, samples=len(job.sample_ids))
            try:
                samples = await self.samples(job)
                result = await self._train(job, samples, status)
            except Exception as exc:
                log.warning("job.failed", job_id=job.id, error=str(exc))
                await status("failed", f"{type(exc).__name__}: {exc}"[:2000])
                self.running = None
                return None
            parent = self.versions.get(job.base_model)
            number = (parent.version if parent else 0) + 1
            version = ModelVersion(
                name=job.base_model, version=number, parent_version=job.base_version,
                path=result.path, adapter=result.adapter, job_id=job.id,
                kind=job.kind, round=job.round, metrics=finite(result.metrics),
                served_name=f"{job.base_model}-v{number}", ts=time.time(),
            )
            await p.send_and_wait(topic_name(self.config, "models"), encode(version),
                                  key=job.base_model.encode())
            self.versions[job.base_model] = version
            self.finished.add(job.id)
            _record_version(Path(self.config.training.model_dir), version)
            metrics = finite(result.metrics)
            metrics["wall_seconds"] = time.time() - started
            done = JobStatus(job_id=job.id, state="finished", kind=job.kind, version=number,
                             message=f"published {job.base_model}@v{number}", metrics=metrics,
                             ts=time.time())
            await p.send_and_wait(jobs_topic, encode(done), key=job.id.encode())
            log.info("job.finished", job_id=job.id, version=number, path=version.path,
                     **{k: round(v, 4) for k, v in metrics.items()})
        self.running = None
        return version

    async def _train(self, job: TrainingJob, samples: list[Any], status: Any) -> TrainResult:
        """Run ``python -m arena_stream.trainers`` for the job and return its result."""
        out = self.out_dir(job)
        out.parent.mkdir(parents=True, exist_ok=True)
        parent = self.versions.get(job.base_model)
        with tempfile.TemporaryDirectory(prefix="arena-job-") as tmp:
            tmpdir = Path(tmp)
            (tmpdir / "job.json").write_bytes(encode(job))
            (tmpdir / "samples.jsonl").write_bytes(b"\n".join(encode(s) for s in samples) + b"\n")
            (tmpdir / "config.toml").write_bytes(msgspec.toml.encode(self.config))
            result_path = tmpdir / "result.json"
            cmd = [self.python, "-m", trainers.__name__, "--job", str(tmpdir / "job.json"),
                   "--samples", str(tmpdir / "samples.jsonl"),
                   "--config", str(tmpdir / "config.toml"), "--out", str(out),
                   "--result", str(result_path)]
            if parent is not None and parent.adapter:
                cmd += ["--parent-adapter", parent.path]
            if self.config.training.base_checkpoint:
                cmd += ["--base-model", self.config.training.base_checkpoint]
            env = child_env()
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
            )
            tail: list[str] = []
            assert proc.stdout is not None
            try:
                async for raw in proc.stdout:
                    line = raw.decode(errors="replace").rstrip()
                    tail = [*tail[-30:], line]
                    report = _progress(line)
                    if report is not None:
                        progress, metrics = report
                        log.info("job.progress", job_id=job.id, step=progress.step,
                                 max_steps=progress.max_steps, loss=progress.loss,
                                 tokens_per_second=_rounded(progress.tokens_per_second),
                                 eta_s=_rounded(progress.eta_s))
                        await status("progress", "", progress=progress, **metrics)
                code = await proc.wait()
            except asyncio.CancelledError:
                # Stopping the service must not leave a training process behind; the job
                # has no "finished" status, so it runs again on the next start.
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
            if code != 0 or not result_path.is_file():
                raise RuntimeError(f"trainer exited with {code}: " + " | ".join(tail[-8:]))
            return msgspec.json.decode(result_path.read_bytes(), type=TrainResult)


def tracking_problems(config: Config) -> str | None:
    """Why ``[training] report_to`` cannot work on this machine (a tracker not installed).

    Checked when the trainer starts (``arena-stream trainer`` / ``run`` / ``check``,
    :func:`arena_stream.cli.checks.tracking_check`), where the jobs will run,
    rather than at config load: a worker without the training stack loads the
    same file.
    """
    report_to = config.training.report_to
    if report_to == "none":
        return None
    from arena_stream.trainers.arguments import missing_integrations

    missing = missing_integrations(report_to)
    if not missing:
        return None
    return (f"training.report_to names {', '.join(map(repr, missing))}, not installed where "
            f"the trainer runs (pip install {' '.join(_PACKAGES.get(m, m) for m in missing)})")


# report_to names whose package is named otherwise
_PACKAGES = {"tensorboard": "tensorboardX", "azure_ml": "azureml-core", "comet_ml": "comet-ml"}


def child_env() -> dict[str, str]:
    """The training process's environment: the user's own, ``HF_HUB_OFFLINE`` included.

    Whether the hub may be reached is the user's choice (a base checkpoint given
    by hub id needs it once, then the cache serves); it is never forced here.
    """
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false"}


def _progress(line: str) -> tuple[TrainingProgress, dict[str, float]] | None:
    """A trainer progress line (``{"event": "log", "step": ..., "loss": ..., "eta_s": ...}``).

    Returns the typed progress and every number logged at that step; ``None``
    for any other line (library output, the result line, a line cut short).
    """
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("event") != "log" or "loss" not in data:
        return None
    try:
        progress = msgspec.convert(data, TrainingProgress)
    except msgspec.ValidationError:
        return None
    return progress, {k: float(v) for k, v in data.items()
                      if isinstance(v, int | float) and not isinstance(v, bool)}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _record_version(model_dir: Path, version: ModelVersion) -> None:
    """Keep ``<model_dir>/<player>/versions.json`` so offline tools find versions without Kafka."""
    manifest = model_dir / version.name / "versions.json"
    entries = json.loads(manifest.read_text()) if manifest.is_file() else []
    entries = [e for e in entries if e["version"] != version.version]
    entries.append({"version": version.version, "path": version.path, "job_id": version.job_id,
                    "kind": version.kind, "round": version.round})
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(sorted(entries, key=lambda e: e["version"]), indent=1))
