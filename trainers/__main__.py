"""Run one training job from files: ``python -m arena_stream.trainers --job JOB.json ...``.

Two uses. The trainer service runs each job in a child process, so the
memory a run takes (model, optimiser, allocator caches) is returned to the
system when the job ends. And on a multi-GPU box the same command runs under
``accelerate launch -m arena_stream.trainers ...``: every process trains its shard, and
only the main process writes the result file and prints progress.

Progress goes to stdout as one JSON object per line,
``{"event": "log", "step": 3, "max_steps": 8, "loss": 0.71, "tokens_per_second": 410.2,
"eta_s": 12.5, ...}`` (the first and last steps, and at most one every
``[training] progress_every_s`` between), and a last ``{"event": "result", ...}``
line; everything else (library logging) goes to stderr. Exit status: 0 done, 3 a
job kind with no registry entry (:mod:`arena_stream.arena.kinds`), anything else a
failure (with its traceback on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import msgspec

from arena_stream.config import TrainingConfig
from arena_stream.schemas.events import Event, TrainingJob

EXIT_UNSUPPORTED = 3
PROG = "python -m arena_stream.trainers"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m arena_stream.trainers",
        description="Train one new target version (LoRA adapter or checkpoint) from a job file.",
    )
    parser.add_argument("--job", required=True, type=Path, help="TrainingJob as JSON")
    parser.add_argument(
        "--samples", required=True, type=Path,
        help="JSON lines: SFTSample rows for an sft job, DPOPair rows for a dpo job",
    )
    parser.add_argument(
        "--config", type=Path, default=None,
        help="TOML: the arena-stream config (its [training] table is used) or a bare "
        "[training] table's keys; default: built-in training defaults",
    )
    parser.add_argument("--out", required=True, type=Path, help="directory for the new version")
    parser.add_argument(
        "--parent-adapter", default=None,
        help="previous version's adapter (full checkpoint when lora = false)",
    )
    parser.add_argument(
        "--base-model", default=None,
        help="base checkpoint name or path; default: the config's model for the job's "
        "player, else smollm2",
    )
    parser.add_argument(
        "--result", required=True, type=Path, help="where to write the TrainResult as JSON"
    )
    return parser.parse_args(argv)


def read_config(path: Path | None) -> tuple[TrainingConfig, dict[str, Any]]:
    """The training settings from ``path`` and the whole decoded document (for player lookup).

    Only ``[training]`` is validated: a trainer box needs no broker or judge
    settings, and should not fail on them.
    """
    if path is None:
        return TrainingConfig(), {}
    document = msgspec.toml.decode(path.read_bytes())
    table = document.get("training", document) if isinstance(document, dict) else {}
    try:
        return msgspec.convert(table, TrainingConfig), document
    except msgspec.ValidationError as exc:
        raise SystemExit(f"{path}: [training]: {exc}") from None


def default_base_model(document: dict[str, Any], player: str) -> str:
    """The model the job's player runs, as the config names it; ``smollm2`` otherwise."""
    for entry in document.get("players", []):
        if isinstance(entry, dict) and entry.get("name") == player and entry.get("model"):
            return str(entry["model"])
    return "smollm2"


def player_system_prompt(document: dict[str, Any], player: str) -> str | None:
    """The system prompt the job's player plays with: training formats samples the same way."""
    for entry in document.get("players", []):
        if isinstance(entry, dict) and entry.get("name") == player:
            prompt = entry.get("system_prompt")
            return str(prompt) if prompt else None
    return None


def read_samples(path: Path, row_type: type[Event]) -> list[Event]:
    decoder = msgspec.json.Decoder(row_type)
    with path.open("rb") as handle:
        return [decoder.decode(line) for line in handle if line.strip()]


def is_main_process() -> bool:
    """True outside accelerate/torchrun, and on rank 0 inside them."""
    return os.environ.get("RANK", "0") == "0"


def emit(event: str, payload: dict[str, Any]) -> None:
    if is_main_process():
        sys.stdout.write(json.dumps({"event": event, **payload}) + "\n")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from arena_stream.arena.kinds import UnknownKind, kind
    from arena_stream.trainers import UnsupportedJobKind, run_job

    job = msgspec.json.decode(args.job.read_bytes(), type=TrainingJob)
    try:
        entry = kind(job.kind)
    except UnknownKind as exc:
        print(f"{PROG}: job {job.id}: {exc}", file=sys.stderr)
        return EXIT_UNSUPPORTED
    cfg, document = read_config(args.config)
    samples = read_samples(args.samples, entry.sample)
    base_model = args.base_model or default_base_model(document, job.base_model)
    try:
        result = run_job(
            job, samples, cfg, base_model=base_model, parent_adapter=args.parent_adapter,
            out_dir=args.out, on_log=lambda entry: emit("log", entry),
            system_prompt=player_system_prompt(document, job.base_model),
        )
    except UnsupportedJobKind as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_UNSUPPORTED
    if is_main_process():
        args.result.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.result.with_name(args.result.name + ".tmp")
        tmp.write_bytes(msgspec.json.encode(result))
        os.replace(tmp, args.result)  # a reader never sees half a result
        emit("result", msgspec.to_builtins(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
