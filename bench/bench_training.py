"""Training throughput of the flywheel's jobs: LoRA SFT and DPO on the local SmolLM2.

Each measured run is a complete :func:`trainers.run_job` with a fresh LoRA
adapter; the time is the trainer's own ``train()`` call, so model loading,
dataset tokenisation and saving are left out and the figures are the cost of
the training steps themselves. A first, unrecorded run warms up
the allocator and kernels, which otherwise make the first run of a process
several times slower than the rest. Medians over the measured runs are written
as a Markdown table with the command, machine and date, so figures from
different machines can sit side by side.

    python bench/bench_training.py --runs 3 --steps 6
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import shlex
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from arena_stream.config import TrainingConfig  # noqa: E402
from arena_stream.schemas.events import DPOPair, Message, SFTSample, TrainingJob  # noqa: E402

TOPICS = ["rivers", "volcanoes", "bread", "bridges", "tides", "compilers", "bees", "glaciers"]
OPENERS = [
    "Here is a short explanation.",
    "In brief:",
    "The key idea is simple.",
    "Let us go through it step by step.",
]
FACTS = [
    "It depends on pressure, temperature and time.",
    "Engineers measure it carefully before building anything.",
    "Small changes add up over many years.",
    "The process repeats in a cycle that can be observed.",
    "Most textbooks describe it with a simple diagram.",
    "It was first studied systematically in the nineteenth century.",
    "Modern instruments make the measurement precise.",
    "A common misconception is that it happens quickly.",
]


def answer(rng: random.Random, topic: str, sentences: int) -> str:
    body = " ".join(rng.choice(FACTS) for _ in range(sentences))
    return f"{rng.choice(OPENERS)} When it comes to {topic}, {body[0].lower()}{body[1:]}"


def battles(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """``n`` (question, winner, loser) triples with answers of about 60-120 tokens."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        question = f"Can you explain how {topic} work and why they matter? (question {i})"
        out.append((question, answer(rng, topic, rng.randint(5, 9)), answer(rng, topic, 3)))
    return out


def sft_samples(triples: list[tuple[str, str, str]]) -> list[SFTSample]:
    return [
        SFTSample(
            id=f"s{i}", battle_id=f"b{i}", prompt_id=f"p{i}",
            messages=[Message("user", q), Message("assistant", good)],
            winner="competitor", loser="target@v0", margin=4.0,
        )
        for i, (q, good, _) in enumerate(triples)
    ]


def dpo_pairs(triples: list[tuple[str, str, str]]) -> list[DPOPair]:
    return [
        DPOPair(
            id=f"d{i}", battle_id=f"b{i}", prompt_id=f"p{i}", prompt=[Message("user", q)],
            chosen=good, rejected=bad, chosen_model="competitor", rejected_model="target@v0",
            margin=4.0,
        )
        for i, (q, good, bad) in enumerate(triples)
    ]


def one_run(kind: str, samples: list[Any], cfg: TrainingConfig, model: str) -> dict[str, float]:
    from arena_stream import trainers

    job = TrainingJob(
        id=f"bench-{kind}", kind=kind, base_model="target", base_version=0,  # type: ignore[arg-type]
        sample_ids=[s.id for s in samples], topic="bench",
    )
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        result = trainers.run_job(
            job, samples, cfg, base_model=model, parent_adapter=None, out_dir=Path(tmp)
        )
    return result.metrics


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return (
        f"{os.cpu_count()} logical CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu}; "
        f"{device}; torch {torch.__version__} with {torch.get_num_threads()} threads"
    )


def versions() -> str:
    import peft
    import transformers
    import trl

    return ", ".join(f"{m.__name__} {m.__version__}" for m in (transformers, trl, peft))


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| job | runs | steps/run | batch | tokens/step | tokens/s | samples/s | s/step "
        "| loss first → last |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['kind']} | {r['runs']} | {r['steps']} | {r['batch']} | {r['tokens_per_step']:.0f} "
        f"| {r['tokens_per_second']:.1f} | {r['samples_per_second']:.2f} "
        f"| {r['seconds_per_step']:.2f} | {r['loss_first']:.3f} → {r['loss_last']:.3f} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["sft", "dpo"], choices=["sft", "dpo"])
    parser.add_argument("--runs", type=int, default=3, help="measured runs per job kind")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "training.md")
    args = parser.parse_args(argv)

    cfg = TrainingConfig(
        max_steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
        lora_r=args.lora_r, lora_alpha=2 * args.lora_r, learning_rate=2e-4, seed=0,
    )
    triples = battles(args.samples)
    data = {"sft": sft_samples(triples), "dpo": dpo_pairs(triples)}
    warm = TrainingConfig(max_steps=2, batch_size=args.batch_size, max_length=args.max_length)
    one_run(args.kinds[0], data[args.kinds[0]], warm, args.model)  # warm-up, not recorded

    load_before = os.getloadavg()[0]
    rows = []
    for kind in args.kinds:
        runs = []
        for i in range(args.runs):
            metrics = one_run(kind, data[kind], cfg, args.model)
            print(f"{kind} run {i + 1}: {metrics['tokens_per_second']:.1f} tokens/s, "
                  f"{metrics['seconds_per_step']:.2f} s/step", file=sys.stderr)
            runs.append(metrics)

        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(m[key] for m in runs)

        rows.append({
            "kind": kind, "runs": args.runs, "steps": args.steps, "batch": args.batch_size,
            "tokens_per_step": med("tokens") / args.steps,
            "tokens_per_second": med("tokens_per_second"),
            "samples_per_second": med("samples_per_second"),
            "seconds_per_step": med("seconds_per_step"),
            "loss_first": med("train_loss_first"), "loss_last": med("train_loss_last"),
        })

    load_after = os.getloadavg()[0]
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python bench/bench_training.py", shlex.join(given)])
    report = (
        "# Training throughput (LoRA, local SmolLM2-135M-Instruct)\n\n"
        f"- command: `{command.strip()}`\n"
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}\n"
        f"- machine: {machine()}\n"
        # Other work on the same cores slows every figure; the load says how much there was.
        f"- 1-minute load average: {load_before:.1f} before, {load_after:.1f} after\n"
        f"- software: Python {platform.python_version()}, {versions()}\n"
        f"- setup: {args.samples} synthetic battles (answers of ~60-120 tokens), "
        f"max_length {args.max_length}, LoRA r={args.lora_r} on all attention and MLP "
        f"projections, fp32, medians of {args.runs} runs after one warm-up run\n\n"
        + table(rows)
        + "\ntokens = non-padding tokens the model processed (prompt and answer; DPO counts "
        "the chosen and the rejected sequence). Times cover `trainer.train()` only, not "
        "model loading or tokenisation. A DPO pair is two sequences, each run twice "
        "(policy, and reference with the adapter disabled, without gradients).\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
