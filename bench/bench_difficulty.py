"""Benchmark: in-process difficulty ratings, batched or one prompt at a time.

The log-prob difficulty rater (``arena_stream.judges.difficulty.LogprobDifficulty``)
rates one prompt at a time, so that a prompt's rating never depends on which other
prompts share its batch. This measures what that costs and what it buys, for the
bundled SmolLM2-135M with float weights and with ``quantize = true`` (int8
linear layers, dynamic activation scales):

* batched: every prompt rated at once by its own rater (the engine groups them);
* one at a time: one rater, its prompts in turn (what ``testset build`` does);
* batched again: the same as the first, to see how far two batched runs differ.

Prompts: the first ``--prompts`` of tests/data/varied_prompts.jsonl. Model loading
and one warm-up rating are not timed. Times are wall seconds; differences are the
largest absolute difference of a prompt's 0..10 rating between two runs.

    python bench/bench_difficulty.py --prompts 24 --out bench/results/difficulty.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import command_line, load_average, machine, now_utc

PROMPTS = Path(__file__).resolve().parents[1] / "tests" / "data" / "varied_prompts.jsonl"


async def rate_batched(client: Any, rows: list[dict[str, Any]]) -> tuple[float, list[float]]:
    from arena_stream.judges.difficulty import LogprobDifficulty

    started = time.perf_counter()
    readings = await asyncio.gather(*(LogprobDifficulty(client, model="smollm2").rate(r)
                                      for r in rows))
    return time.perf_counter() - started, [r.difficulty or 0.0 for r in readings]


async def rate_in_turn(client: Any, rows: list[dict[str, Any]]) -> tuple[float, list[float]]:
    from arena_stream.judges.difficulty import LogprobDifficulty

    rater = LogprobDifficulty(client, model="smollm2")
    started = time.perf_counter()
    readings = [await rater.rate(r) for r in rows]
    return time.perf_counter() - started, [r.difficulty or 0.0 for r in readings]


def largest_gap(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


async def amain(args: argparse.Namespace) -> str:
    import torch

    from arena_stream.config import JudgeConfig
    from arena_stream.models.clients import build_client

    rows = [json.loads(line) for line in PROMPTS.read_text().splitlines()][: args.prompts]
    load0 = load_average()
    lines = [
        "# In-process difficulty ratings: batched or one prompt at a time",
        "",
        f"- command: `{command_line()}`",
        f"- machine: {machine()}; CPU only, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads",
        f"- prompts: the first {len(rows)} of tests/data/varied_prompts.jsonl",
        "",
        "| weights | batched (s) | one at a time (s) | batched again (s) | "
        "max diff batched vs one at a time | max diff batched vs batched again |",
        "|---|---|---|---|---|---|",
    ]
    for quantize in (False, True):
        spec = JudgeConfig(model="smollm2", quantize=quantize, concurrency=len(rows))
        client = build_client(spec, "bench")
        await client.ready()
        await rate_in_turn(client, rows[:1])  # warm-up
        t_batched, batched = await rate_batched(client, rows)
        t_turn, in_turn = await rate_in_turn(client, rows)
        t_again, again = await rate_batched(client, rows)
        name = "int8 (quantize = true)" if quantize else "float32"
        lines.append(f"| {name} | {t_batched:.1f} | {t_turn:.1f} | {t_again:.1f} | "
                     f"{largest_gap(batched, in_turn):.4f} | {largest_gap(batched, again):.4f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    lines += ["", f"- date: {now_utc()}; 1/5/15-minute load average before: {load0}, after: "
              f"{load_average()}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    text = asyncio.run(amain(args))
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
