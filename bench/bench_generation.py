"""Benchmark: request batching of the in-process model (LocalEngine, bundled SmolLM2-135M).

The same ``--requests`` fixed prompts are answered by a
``TransformersClient`` (``backend = "transformers"``, ``model = "smollm2"``,
greedy, ``max_tokens`` 48) in two ways, alternating within each run so that
both see the same machine load:

* one at a time: each ``complete()`` awaited before the next is sent;
* concurrently: all ``complete()`` calls in flight at once, which the engine's
  worker thread groups into padded ``generate`` calls (``concurrency`` =
  ``--requests``, so one batch).

tokens/s = completion tokens the model produced (up to and including its end
token; what the client reports as ``completion_tokens``) / wall seconds.
Model loading and one small warm-up batch are not timed.

    python bench/bench_generation.py --runs 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import command_line, load_average, machine, median, now_utc

SUBJECTS = [
    "rainbows", "tides", "volcanoes", "photosynthesis", "compilers", "bread dough", "glaciers",
    "bees", "bridges", "vaccines", "black holes", "coffee roasting", "earthquakes", "batteries",
    "clouds", "magnets", "rivers", "deserts", "the internet", "seasons", "lightning", "yeast",
    "sourdough", "solar panels", "airplane wings", "coral reefs", "fossils", "wind turbines",
    "antibiotics", "tea", "chess openings", "recycling",
]


def prompts(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Explain {SUBJECTS[i % len(SUBJECTS)]} to a child "
              "in three sentences."}] for i in range(n)]


async def one_at_a_time(client: Any, batch: list[list[dict[str, str]]]) -> tuple[float, int,
                                                                                   list[str]]:
    started = time.perf_counter()
    out = [await client.complete(m) for m in batch]
    return time.perf_counter() - started, sum(c.completion_tokens for c in out), [
        c.text for c in out]


async def concurrent(client: Any, batch: list[list[dict[str, str]]]) -> tuple[float, int,
                                                                                list[str]]:
    started = time.perf_counter()
    out = await asyncio.gather(*(client.complete(m) for m in batch))
    return time.perf_counter() - started, sum(c.completion_tokens for c in out), [
        c.text for c in out]


async def amain(args: argparse.Namespace) -> str:
    import torch

    from arena_stream.config import ModelConfig
    from arena_stream.models.clients import TransformersClient

    spec = ModelConfig(backend="transformers", model="smollm2", max_tokens=args.max_tokens,
                       concurrency=args.requests, temperature=0.0, max_retries=0)
    client = TransformersClient(spec, "bench")
    engine = client.engine
    load0 = load_average()
    started = time.perf_counter()
    await engine.wait_ready()
    load_s = time.perf_counter() - started
    await asyncio.gather(*(client.complete(m, max_tokens=8) for m in prompts(4)))  # warm-up
    batch = prompts(args.requests)
    seq: list[tuple[float, int]] = []
    par: list[tuple[float, int]] = []
    ratios: list[float] = []
    same = 0
    for run in range(args.runs):
        first_batches = engine.batches
        wall_c, tok_c, text_c = await concurrent(client, batch)
        calls = engine.batches - first_batches
        print(f"run {run}: concurrent {tok_c} tokens in {wall_c:.1f}s", file=sys.stderr,
              flush=True)
        wall_s, tok_s, text_s = await one_at_a_time(client, batch)
        seq.append((wall_s, tok_s))
        par.append((wall_c, tok_c))
        ratios.append((tok_c / wall_c) / (tok_s / wall_s))
        same = sum(a == b for a, b in zip(text_c, text_s, strict=False))
        print(f"run {run}: one at a time {tok_s} tokens in {wall_s:.1f}s "
              f"({tok_s / wall_s:.1f}/s); concurrent {tok_c} tokens in {wall_c:.1f}s "
              f"({tok_c / wall_c:.1f}/s) in {calls} generate call(s); ratio {ratios[-1]:.2f}",
              file=sys.stderr, flush=True)
    seq_rate = median([t / w for w, t in seq])
    par_rate = median([t / w for w, t in par])
    lines = [
        "# Local generation: request batching (LocalEngine, SmolLM2-135M-Instruct)",
        "",
        f"- command: `{command_line()}`",
        f"- machine: {machine()}; CPU only, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads",
        f"- date: {now_utc()}; 1/5/15-minute load average before: {load0}, after: "
        f"{load_average()}",
        f"- setup: {args.requests} fixed prompts, greedy, max_tokens {args.max_tokens}, "
        f"{args.runs} runs (each: concurrent, then one at a time); model load "
        f"{load_s:.1f} s and a warm-up batch not timed",
        "",
        "| mode | median tokens/s | per run (tokens / s) |",
        "|---|---:|---|",
        f"| one at a time | {seq_rate:.1f} | "
        + ", ".join(f"{t} / {w:.1f}" for w, t in seq) + " |",
        f"| {args.requests} concurrent (batched) | {par_rate:.1f} | "
        + ", ".join(f"{t} / {w:.1f}" for w, t in par) + " |",
        "",
        f"Ratio (concurrent / one at a time, per run, same run): "
        f"{', '.join(f'{r:.2f}' for r in ratios)}; median **{median(ratios):.2f}x** "
        f"(target >= 3x). Identical answers in both modes: {same} of {args.requests} "
        "(left padding changes the arithmetic slightly, so greedy answers may differ).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    text = asyncio.run(amain(args))
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
