"""The target's versions: lineage, held-out evaluation and the paper's per-round numbers.

Reads the ``models``, ``jobs``, ``judgments``, ``ratings`` and training-buffer
topics and prints one row per target version (``target@v0`` is the base): its
parent, the job and kind that made it, the samples it learned from, the round it
played (battles, win/loss/tie against each opponent, SFT samples and DPO pairs
selected with the thresholds used, Elo), and its held-out rating with the 95%
interval and verifier pass rate. The last line says in plain words whether the
newest version beat ``v0`` on the held-out set. See arena_stream/arena/lineage.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the arena's TOML configuration")
    parser.add_argument("--json", action="store_true", help="print the lineage as JSON")


def main(args: argparse.Namespace) -> int:
    import asyncio

    import msgspec

    from arena_stream.config import load

    config = load(args.config)
    try:
        lineage = asyncio.run(read_lineage(config))
    except KeyError as exc:
        print(f"arena-stream versions: error: {exc.args[0]} (has a worker run with this "
              "config?)", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(msgspec.to_builtins(lineage), indent=2))
    else:
        print_lineage(lineage)
    return 0


async def read_lineage(config: Any) -> Any:
    """The lineage of ``config``'s target from its topics."""
    from arena_stream.arena.kinds import KINDS
    from arena_stream.arena.lineage import build_lineage
    from arena_stream.kafka.io import read_all
    from arena_stream.schemas import (
        Judgment,
        ModelVersion,
        RatingUpdate,
        TrainingJob,
        decode_jobs_record,
    )

    async def records(key: str) -> list[bytes]:
        return [r.value for r in await read_all(config, key) if r.value is not None]

    jobs = []
    for raw in await records("jobs"):
        try:
            job = decode_jobs_record(raw)
        except Exception:
            continue  # the stream dead-letters what it cannot read
        if isinstance(job, TrainingJob):
            jobs.append(job)
    samples = {name: decoded(await records(entry.topic), entry.sample)
               for name, entry in KINDS.items()}
    return build_lineage(
        config.target.name,
        models=decoded(await records("models"), ModelVersion),
        jobs=jobs,
        judgments=decoded(await records("judgments"), Judgment),
        ratings=decoded(await records("ratings"), RatingUpdate),
        sft=samples.get("sft", []), dpo=samples.get("dpo", []),
        thresholds=config.routing, rounds=config.evaluation.rounds,
    )


def decoded(values: list[bytes], kind: type[Any]) -> list[Any]:
    """The values that decode as ``kind``; the stream dead-letters anything else."""
    import msgspec

    decoder = msgspec.json.Decoder(kind)
    out = []
    for value in values:
        try:
            out.append(decoder.decode(value))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return out


def lineage_lines(lineage: Any) -> list[str]:
    """The lineage as plain text lines (``versions`` and the end of ``run``)."""
    lines = []
    for row in lineage.versions:
        made = ("base model" if row.parent is None else
                f"from v{row.parent} by {row.job_id} ({row.kind}, training round "
                f"{row.training_round}) on {row.samples} samples"
                + (f" ({row.samples_topic}: {', '.join(row.sample_ids[:3])}"
                   f"{', ...' if row.samples > 3 else ''})" if row.samples_topic else ""))
        lines.append(f"{row.model}: {made}")
        h = row.heldout
        if h is not None:
            rate = ("" if h.pass_rate is None else
                    f", passed every check on {h.passed}/{h.prompts} prompts ({h.pass_rate:.0%})")
            lines.append(f"  held-out: {h.rating:.1f} [{h.lower:.1f}, {h.upper:.1f}] "
                         f"(95% CI, {h.battles} battles){rate}")
        else:
            lines.append("  held-out: not evaluated")
        if row.battles:
            against = "; ".join(
                f"{o} {r.wins}-{r.losses}-{r.ties} (win rate {row.win_rate.get(o, 0):.0%})"
                for o, r in row.vs.items())
            elo = "-" if row.elo is None else f"{row.elo:.1f}"
            s = row.selected
            lines.append(f"  played {row.battles} battles, W-L-T vs {against}; Elo {elo}")
            lines.append(f"  selected from them: {s.sft_samples} SFT samples (lost by >= "
                         f"{s.sft_margin:g}), {s.dpo_pairs} DPO pairs (decided by >= "
                         f"{s.dpo_margin:g})")
        else:
            lines.append("  played no battles outside the held-out set")
    lines.append(lineage.verdict)
    return lines


def print_lineage(lineage: Any) -> None:
    for line in lineage_lines(lineage):
        print(line)


def version_table(lineage: Any) -> None:
    """One row per version: what the issue's report shows (a rich table)."""
    from rich.console import Console
    from rich.table import Table

    opponents = sorted({o for row in lineage.versions for o in row.vs})
    table = Table(title=None)
    for col in ("version", "made by", "samples", "battles",
                *(f"win rate vs {o}" for o in opponents), "held-out pass",
                "held-out rating [95% CI]", "Elo"):
        table.add_column(col, justify="left" if col in ("version", "made by") else "right")
    for row in lineage.versions:
        h = row.heldout
        table.add_row(
            row.model, "base" if row.parent is None else f"{row.kind} on v{row.parent}",
            str(row.samples), str(row.battles),
            *(f"{row.win_rate[o]:.0%}" if o in row.win_rate else "-" for o in opponents),
            "-" if h is None or h.pass_rate is None else f"{h.passed}/{h.prompts}",
            "-" if h is None else f"{h.rating:.1f} [{h.lower:.1f}, {h.upper:.1f}]",
            "-" if row.elo is None else f"{row.elo:.1f}",
        )
    Console(width=160).print(table)
