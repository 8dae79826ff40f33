"""Tokens and cost of the arena so far, by model and by judge, from the topics.

Reads the generations and judgments topics and prices them with the
config's ``price_in_per_mtok`` / ``price_out_per_mtok`` (US dollars per
million prompt / completion tokens) of each [[players]] entry and [judge].
Cost per battle divides what a model's answers (or the judge's games) cost by
the judged battles it took part in; the total divides everything by all judged
battles. Token counts are the models' own where they reported them, else
estimates, and the output says how many are estimates. With [budget] usd set,
it also says how much of the budget is left. See arena_stream/arena/costs.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arena_stream.arena.costs import CostReport


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the arena's TOML configuration")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def main(args: argparse.Namespace) -> int:
    import asyncio

    import msgspec

    from arena_stream.arena.costs import cost_report
    from arena_stream.config import load
    from arena_stream.kafka.io import read_all
    from arena_stream.schemas import Generation, Judgment

    config = load(args.config)

    async def read() -> tuple[list[Any], list[Any]]:
        return await read_all(config, "generations"), await read_all(config, "judgments")

    try:
        generations, judgments = asyncio.run(read())
    except KeyError as exc:
        print(f"arena-stream costs: error: {exc.args[0]} (has a worker run with this config?)",
              file=sys.stderr)
        return 2
    report = cost_report(config, _decoded(generations, Generation), _decoded(judgments, Judgment))
    if args.json:
        print(json.dumps(msgspec.to_builtins(report), indent=2))
    else:
        print_report(report)
    return 0


def _decoded(records: list[Any], kind: type[Any]) -> list[Any]:
    """The records that decode as ``kind``; the stream dead-letters anything else."""
    import msgspec

    decoder = msgspec.json.Decoder(kind)
    out = []
    for record in records:
        try:
            out.append(decoder.decode(record.value))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return out


def _usd(x: float | None) -> str:
    if x is None:
        return "-"
    return f"${x:,.2f}" if abs(x) >= 1 or x == 0 else f"${x:.6f}"


def print_report(report: CostReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    models = Table(title="Players (generations)")
    for col in ("model", "answers", "failed", "prompt tok", "completion tok", "estimated",
                "cost", "battles", "cost/battle"):
        models.add_column(col, justify="left" if col == "model" else "right")
    for m in report.models:
        models.add_row(m.model + ("" if m.priced else " (no price)"), str(m.generations),
                       str(m.failed), f"{m.prompt_tokens:,}", f"{m.completion_tokens:,}",
                       str(m.estimated), _usd(m.cost_usd), str(m.battles),
                       _usd(m.cost_per_battle_usd))
    console.print(models)
    judges = Table(title="Judges")
    for col in ("judge", "template", "judgments", "calls", "prompt tok", "completion tok",
                "estimated", "cost", "cost/battle"):
        judges.add_column(col, justify="left" if col in ("judge", "template") else "right")
    for j in report.judges:
        judges.add_row(j.judge + ("" if j.priced else " (no price)"), j.template_version,
                       str(j.judgments), str(j.calls), f"{j.prompt_tokens:,}",
                       f"{j.completion_tokens:,}", str(j.estimated_games), _usd(j.cost_usd),
                       _usd(j.cost_per_battle_usd))
    console.print(judges)
    print(f"total {_usd(report.total_cost_usd)} (generations {_usd(report.generation_cost_usd)}, "
          f"judge {_usd(report.judge_cost_usd)}) over {report.battles} judged battles: "
          f"{_usd(report.cost_per_battle_usd)} per battle")
    if report.budget_usd is not None:
        left = report.budget_left_usd or 0.0
        state = "spent: new prompts are not taken" if left <= 0 else f"{_usd(left)} left"
        print(f"budget {_usd(report.budget_usd)}: {state}")
    for note in report.notes:
        print(f"note: {note}")
