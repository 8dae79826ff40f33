"""The whole flywheel in one process.

Without ``--config`` this is the embedded default: it starts the embedded
broker, runs the stream agents with SmolLM2-135M as target, competitors and
judge, and the trainer. The prompts are played in shards (``--rounds``, like
the paper's iterations on fresh data): after each shard, training jobs fired
by the losses are waited for, so the next shard is played by the newest
target version. It exits with the final leaderboard once every prompt is
judged. With ``--config`` the same runs against your cluster and servers.
"""

from __future__ import annotations

import argparse

from arena_stream.cli.arguments import INPUT_HELP, add_input_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML configuration (default: the embedded default)")
    parser.add_argument("--prompts",
                        help=f"prompts (default: the bundled prompt set): {INPUT_HELP}")
    add_input_arguments(parser)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N prompts")
    parser.add_argument(
        "--rounds", type=int, default=0,
        help="prompt shards played one after another (default: 2 with training, else 1)",
    )
    parser.add_argument("--no-train", action="store_true", help="do not run training jobs")
    parser.add_argument("--no-eval", action="store_true",
                        help="do not play the held-out set ([evaluation] heldout)")
    parser.add_argument("--job-timeout", type=float, default=900.0,
                        help="seconds to wait for training jobs between shards")
    parser.add_argument("--json", action="store_true", help="print the final standings as JSON")


def main(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    import msgspec

    from arena_stream.cli.arguments import input_options
    from arena_stream.cli.checks import require_environment
    from arena_stream.cli.flywheel_run import run_flywheel
    from arena_stream.config import load, secrets
    from arena_stream.datasets.prompts import bundled_prompts_path, read_prompts
    from arena_stream.kafka.broker import broker_for
    from arena_stream.logging import redact

    config = load(args.config)
    redact(*secrets(config))
    if args.no_train:
        config = msgspec.structs.replace(
            config, training=msgspec.structs.replace(config.training, enabled=False)
        )
    if args.no_eval:
        config = msgspec.structs.replace(
            config, evaluation=msgspec.structs.replace(config.evaluation, heldout=None)
        )
    require_environment(config, "run")  # secrets, files, model directory: before starting
    path = args.prompts or str(bundled_prompts_path())
    found = read_prompts(path, config.limits, *input_options(args))
    lines = found.good
    for n, reason in found.bad:
        print(f"{path}:{n}: skipped: {reason}", file=sys.stderr)
    for note in found.notes(path):
        print(note, file=sys.stderr)
    if args.limit:
        lines = lines[: args.limit]
    if not lines:
        print("no prompts to play", file=sys.stderr)
        return 1
    rounds = args.rounds or (2 if config.training.enabled else 1)
    with broker_for(config) as live:
        result = asyncio.run(
            run_flywheel(live, lines, rounds=rounds, job_timeout=args.job_timeout,
                         as_json=args.json)
        )
    return result
