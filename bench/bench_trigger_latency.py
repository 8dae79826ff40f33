"""Benchmark: from a training threshold being crossed to the training job starting.

A real ``arena-stream worker`` subprocess (stub players and judge from
``bench/common.py``; the judge makes the target lose every battle clearly, so
every battle routes one SFT sample) and a :class:`TrainerService` in this
process, on the embedded broker. Training is on with ``schedule = ["sft"]``
and a small ``sft_batch``.

Each cycle publishes ``sft_batch`` prompts and waits for the job's "finished"
status. The latency of a cycle is the record timestamp of the trainer's
``JobStatus`` "started" minus the record timestamp of the SFT sample that
completed the batch (the job's highest offset on ``train.sft``), split into
sample -> ``TrainingJob`` record (the worker's trigger) and job -> "started"
(the trainer picking it up).

**The training itself is skipped**: the trainer's ``_train`` is replaced by one
that returns at once (no ``python -m trainers`` child), so the job finishes,
publishes its ``ModelVersion`` (the worker hot-swaps to it) and frees the
trigger for the next cycle. Everything up to "started" is the real code path.

    python bench/bench_trigger_latency.py --cycles 10 --sft-batch 4
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    Harness,
    command_line,
    config_toml,
    load_average,
    machine,
    median,
    now_utc,
    percentile,
    reader_config,
    stub_server,
)


def make_trainer(config: Any, model_dir: Path) -> Any:
    from arena_stream.trainers.service import TrainerService

    class NoTrainingService(TrainerService):
        """The real service with the training step replaced by an instant result."""

        async def _train(self, job: Any, samples: list[Any], status: Any) -> dict[str, Any]:
            return {"path": str(model_dir / job.id), "adapter": True,
                    "metrics": {"samples": len(samples)}}

    return NoTrainingService(config)


async def jobs_log(config: Any) -> list[tuple[Any, int]]:
    from arena_stream.kafka.io import read_all
    from arena_stream.schemas import decode_jobs_record

    return [(decode_jobs_record(r.value), r.timestamp) for r in await read_all(config, "jobs")]


async def amain(args: argparse.Namespace) -> str:
    from arena_stream.config import loads
    from arena_stream.kafka.broker import EmbeddedBroker
    from arena_stream.kafka.io import read_all
    from arena_stream.schemas import JobStatus, TrainingJob
    from arena_stream.streams.worker import prepare

    load0 = load_average()
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-trigger-") as tmpdir:
        tmp = Path(tmpdir)
        with EmbeddedBroker() as broker, stub_server() as (url, _):
            tag = uuid.uuid4().hex[:8]
            training = (f'[training]\nenabled = true\nsft_batch = {args.sft_batch}\n'
                        f'schedule = ["sft"]\nmodel_dir = "{tmp / "models"}"\n'
                        'base_checkpoint = "smollm2"\n')
            text = config_toml(bootstrap=broker.address, url=url, tag=tag,
                               data_dir=str(tmp / "data"), partitions=args.partitions,
                               training=training)
            path = tmp / "arena.toml"
            path.write_text(text)
            config = loads(text)
            await prepare(config)
            exe = str(Path(sys.executable).with_name("arena-stream"))
            h = Harness(path, config, [[exe, "worker", "--config", str(path)]], tmp / "logs")
            h.start_workers()
            stop = asyncio.Event()
            trainer = make_trainer(config, tmp / "models")
            serving = asyncio.create_task(trainer.serve(stop))
            reader = reader_config(config)
            try:
                await h.warm_up(n=args.sft_batch)  # the first job fires here (not measured)
                for cycle in range(args.cycles + 1):
                    want = cycle + 1
                    if cycle:
                        await h.publish(args.sft_batch)
                    deadline = time.monotonic() + args.timeout
                    while time.monotonic() < deadline:
                        done = [s for s, _ in await jobs_log(reader)
                                if isinstance(s, JobStatus) and s.state == "finished"]
                        if len(done) >= want:
                            break
                        await asyncio.sleep(0.2)
                    else:
                        raise TimeoutError(f"cycle {cycle}: job {want} did not finish")
                    print(f"cycle {cycle}: job {want} finished", file=sys.stderr, flush=True)
                    # Let the trigger take the "finished" status in before the next samples
                    # come, so that a job waits for its threshold, not for the previous job.
                    await asyncio.sleep(1.0)
            finally:
                stop.set()
                await asyncio.wait_for(serving, 10)
                h.stop_workers()
            sft_ts = {r.offset: r.timestamp for r in await read_all(reader, "sft")}
            log = await jobs_log(reader)
            started = {s.job_id: ts for s, ts in log
                       if isinstance(s, JobStatus) and s.state == "started"}
            jobs = [(j, ts) for j, ts in log if isinstance(j, TrainingJob)]
            for j, job_ts in jobs[1:]:  # the warm-up's job is not measured
                crossed = sft_ts[j.offsets["0"][1]]
                rows.append({"total": (started[j.id] - crossed) / 1000.0,
                             "trigger": (job_ts - crossed) / 1000.0,
                             "pickup": (started[j.id] - job_ts) / 1000.0})
    total = [r["total"] for r in rows]
    lines = [
        "# Training trigger latency",
        "",
        f"- command: `{command_line()}`",
        f"- machine: {machine()}",
        f"- date: {now_utc()}; 1/5/15-minute load average before: {load0}, after: "
        f"{load_average()}",
        f"- setup: one `arena-stream worker` subprocess and a TrainerService in the bench "
        f"process, embedded broker, stub players and judge in their own process; "
        f'sft_batch {args.sft_batch}, schedule ["sft"], {args.partitions} partitions; '
        f"{len(rows)} measured jobs (the warm-up's first job left out). **Training is "
        "skipped** (the service's `_train` returns at once); the measured path ends at the "
        "trainer's `JobStatus` \"started\" record, which precedes training.",
        "",
        "| seconds | median | p90 | max |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (("total", "threshold crossed -> job started"),
                       ("trigger", "  sample record -> TrainingJob record (worker)"),
                       ("pickup", "  TrainingJob record -> \"started\" record (trainer)")):
        xs = [r[key] for r in rows]
        lines.append(f"| {label} | {median(xs):.3f} | {percentile(xs, 90):.3f} | "
                     f"{max(xs, default=float('nan')):.3f} |")
    lines += ["", f"Target < 5 s: {'met' if total and max(total) < 5 else 'missed'} "
              f"(worst of {len(total)}: {max(total, default=float('nan')):.3f} s)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=10)
    p.add_argument("--sft-batch", type=int, default=4)
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    text = asyncio.run(amain(args))
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
