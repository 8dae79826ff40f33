"""DPO after SFT: which learning rate keeps what the SFT version learned?

The embedded default trains an SFT version on the target's losses, then a DPO
version on top of it. This re-runs that DPO job alone, from a given SFT
adapter, at several learning rates, and counts the held-out prompts each result
passes (the bundled verifiable task, greedy answers of 32 tokens, as the run
plays them). The pairs are rebuilt the way the stream makes them on this task:
``target@v0``'s answers to the first 64 training prompts that fail their checks
(rejected) against each prompt's reference answer (chosen), 48 of them::

    make run   # leaves .arena-stream/models/target/job-0001-sft
    python bench/bench_dpo_rate.py .arena-stream/models/target/job-0001-sft 5e-5 2e-4 1e-3

Each learning rate trains 24 steps of 8 pairs (LoRA r=16, beta 0.1), minutes
each on 2 cores. Results are printed; BENCHMARKS.md keeps them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from arena_stream.config import TrainingConfig  # noqa: E402
from arena_stream.judges.checks import all_passed, evaluate  # noqa: E402
from arena_stream.models.chat import served_messages  # noqa: E402
from arena_stream.models.local import load_model, load_tokenizer  # noqa: E402
from arena_stream.schemas.events import DPOPair, Message, TrainingJob  # noqa: E402
from arena_stream.trainers import run_job  # noqa: E402

SYSTEM = "You are a helpful assistant."  # the embedded default's target
DATA = REPO / "arena_stream" / "data"


def rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line]


def answers(model: Any, tokenizer: Any, prompts: list[dict[str, Any]]) -> list[str]:
    import torch

    texts = [tokenizer.apply_chat_template(
        served_messages(SYSTEM, [{"role": "user", "content": r["prompt"]}]),
        tokenize=False, add_generation_prompt=True) for r in prompts]
    out: list[str] = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(texts), 32):
            enc = tokenizer(texts[i:i + 32], return_tensors="pt", padding=True)
            gen = model.generate(**enc, max_new_tokens=32, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            width = enc["input_ids"].shape[1]
            out += [tokenizer.decode(g[width:], skip_special_tokens=True).strip() for g in gen]
    return out


def passed(prompts: list[dict[str, Any]], replies: list[str]) -> int:
    return sum(all_passed(evaluate(r["metadata"], a)) for r, a in zip(prompts, replies,
                                                                       strict=True))


def with_adapter(path: str) -> Any:
    from peft import PeftModel

    return PeftModel.from_pretrained(load_model("smollm2"), path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sft_adapter", help="the SFT version the DPO job starts from")
    parser.add_argument("learning_rates", nargs="+", type=float)
    parser.add_argument("--steps", type=int, default=24)
    args = parser.parse_args(argv)
    tokenizer = load_tokenizer("smollm2")
    tokenizer.padding_side = "left"
    train, heldout = rows("instructions.jsonl")[:64], rows("instructions-heldout.jsonl")
    base = load_model("smollm2")
    v0 = answers(base, tokenizer, train)
    print(f"target@v0: {passed(heldout, answers(base, tokenizer, heldout))}/{len(heldout)} "
          "held-out passed", flush=True)
    pairs = [DPOPair(id=f"d{i}", battle_id=f"b{i}", prompt_id=r["id"],
                     prompt=[Message("user", r["prompt"])], chosen=r["metadata"]["reference"],
                     rejected=a, chosen_model="reference", rejected_model="target@v0",
                     margin=9.0)
             for i, (r, a) in enumerate(zip(train, v0, strict=True))
             if not all_passed(evaluate(r["metadata"], a))][:48]
    sft = with_adapter(args.sft_adapter)
    print(f"SFT version: {passed(heldout, answers(sft, tokenizer, heldout))}/{len(heldout)} "
          f"held-out passed; {len(pairs)} DPO pairs", flush=True)
    for lr in args.learning_rates:
        cfg = TrainingConfig(max_steps=args.steps, batch_size=8, lora_r=16, lora_alpha=32,
                             learning_rate=1e-3, dpo_learning_rate=lr, max_length=128)
        job = TrainingJob(id=f"dpo-{lr:g}", kind="dpo", base_model="target", base_version=1,
                          sample_ids=[p.id for p in pairs], topic="bench")
        with tempfile.TemporaryDirectory() as tmp:
            started = time.monotonic()
            run_job(job, pairs, cfg, base_model="smollm2", parent_adapter=args.sft_adapter,
                    out_dir=Path(tmp) / job.id, system_prompt=SYSTEM)
            seconds = time.monotonic() - started
            held = passed(heldout, answers(with_adapter(str(Path(tmp) / job.id)), tokenizer,
                                           heldout))
        print(f"DPO lr {lr:g}, {args.steps} steps: {held}/{len(heldout)} held-out passed "
              f"({seconds:.0f} s of training)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
