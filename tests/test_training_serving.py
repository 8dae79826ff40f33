"""Training and serving agree: the target learns under the prompt it plays with.

Two ways a flywheel can look busy and learn nothing: the trainer formats its
samples differently from the way the target is prompted when it plays (another
system prompt, another template), or the version it trains is never really what
plays. These tests run the real code on both sides, the TRL trainer's own
tokenisation and the in-process client a worker uses, on the bundled SmolLM2:

- the prompt tokens the trainer learns after are byte-identical to the prompt the
  served target is given, for SFT and DPO, with the player's system prompt taken
  from the config as ``python -m arena_stream.trainers`` takes it;
- a trained adapter, hot-loaded into the serving engine exactly as a new version is,
  gives the same greedy answer as the trainer's own model in memory, and that
  answer differs from the base model's (the adapter is really served).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import msgspec
import pytest

from arena_stream import trainers
from arena_stream.config import PlayerConfig, TrainingConfig
from arena_stream.models.clients import TransformersClient
from arena_stream.schemas.events import DPOPair, Message, SFTSample, TrainingJob
from arena_stream.trainers.__main__ import player_system_prompt

pytestmark = pytest.mark.slow

SYSTEM = "You are a terse assistant. Answer in one short sentence."
QUESTION = "Name one thing that is usually found in a kitchen."
ANSWER = "Indeed, a kettle. That is all."

# The config a worker and the trainer both read (only the parts they use here).
CONFIG_TOML = f"""
[[players]]
name = "agree-target"
role = "target"
backend = "transformers"
model = "smollm2"
system_prompt = "{SYSTEM}"
max_tokens = 16
"""


def target_spec() -> PlayerConfig:
    document = msgspec.toml.decode(CONFIG_TOML.encode())
    return msgspec.convert(document["players"][0], PlayerConfig)


def trainer_system_prompt() -> str | None:
    """What the trainer's child process passes to the job: read from the same document."""
    return player_system_prompt(msgspec.toml.decode(CONFIG_TOML.encode()), "agree-target")


def job(kind: str, ids: list[str]) -> TrainingJob:
    return TrainingJob(id=f"agree-{kind}", kind=kind, base_model="agree-target",  # type: ignore[arg-type]
                       base_version=0, sample_ids=ids, topic=f"arena.train.{kind}")


def sft_samples(n: int = 1) -> list[SFTSample]:
    return [
        SFTSample(id=f"s{i}", battle_id=f"b{i}", prompt_id=f"p{i}",
                  messages=[Message("user", QUESTION), Message("assistant", ANSWER)],
                  winner="reference", loser="agree-target@v0", margin=1.0)
        for i in range(n)
    ]


def dpo_pairs() -> list[DPOPair]:
    return [DPOPair(id="d0", battle_id="b0", prompt_id="p0", prompt=[Message("user", QUESTION)],
                    chosen=ANSWER, rejected="A sofa.", chosen_model="reference",
                    rejected_model="agree-target@v0", margin=1.0)]


def prepared(kind: str, samples: list[Any], out: Path, cfg: TrainingConfig) -> trainers.PreparedJob:
    return trainers.prepare_job(
        job(kind, [s.id for s in samples]), samples, cfg, base_model="smollm2",
        parent_adapter=None, out_dir=out, system_prompt=trainer_system_prompt(),
    )


async def served_prompt(client: TransformersClient, messages: list[dict[str, str]]) -> str:
    """The exact text the serving engine is asked to complete for ``messages``."""
    seen: list[str] = []
    engine = client.engine
    real = engine.generate

    async def recording(prompt: str, **kw: Any) -> tuple[str, int, int]:
        seen.append(prompt)
        return await real(prompt, **kw)

    engine.generate = recording  # type: ignore[method-assign]
    try:
        await client.complete(messages, max_tokens=1)
    finally:
        engine.generate = real  # type: ignore[method-assign]
    assert len(seen) == 1
    return seen[0]


def served_ids(client: TransformersClient, prompt: str) -> list[int]:
    """The prompt's tokens as the engine encodes a batch (LocalEngine._generate)."""
    return list(client.engine.tokenizer([prompt])["input_ids"][0])


def test_the_trainer_reads_the_players_system_prompt_from_the_config() -> None:
    assert trainer_system_prompt() == SYSTEM
    assert player_system_prompt({"players": [{"name": "x"}]}, "x") is None


def test_sft_prompt_tokens_are_the_served_prompt_tokens(tmp_path: Path) -> None:
    job_ = prepared("sft", sft_samples(), tmp_path, TrainingConfig(max_steps=1, max_length=256))
    row = job_.trainer.train_dataset[0]
    learned_after = [t for t, label in zip(row["input_ids"], row["labels"], strict=True)
                     if label == -100]
    client = TransformersClient(target_spec(), "agree-target")
    prompt = asyncio.run(served_prompt(client, [{"role": "user", "content": QUESTION}]))
    assert SYSTEM in prompt
    assert learned_after == served_ids(client, prompt)
    assert job_.tokenizer.decode(learned_after).encode() == prompt.encode()


def test_dpo_prompt_tokens_are_the_served_prompt_tokens(tmp_path: Path) -> None:
    job_ = prepared("dpo", dpo_pairs(), tmp_path, TrainingConfig(max_steps=1, max_length=256))
    row = job_.trainer.train_dataset[0]
    client = TransformersClient(target_spec(), "agree-target")
    prompt = asyncio.run(served_prompt(client, [{"role": "user", "content": QUESTION}]))
    assert list(row["prompt_ids"]) == served_ids(client, prompt)
    assert job_.tokenizer.decode(row["prompt_ids"]).encode() == prompt.encode()


def test_a_served_adapter_answers_as_the_trainers_own_model(tmp_path: Path) -> None:
    import torch

    # Enough steps on one answer that the adapter visibly moves the greedy answer.
    cfg = TrainingConfig(max_steps=8, batch_size=4, learning_rate=2e-3, lora_r=8, lora_alpha=16,
                         max_length=128, seed=3)
    job_ = prepared("sft", sft_samples(4), tmp_path / "v1", cfg)
    result = job_.run()
    model, tokenizer = job_.trainer.model, job_.tokenizer
    model.eval()

    spec = target_spec()
    client = TransformersClient(spec, "agree-target")
    messages = [{"role": "user", "content": QUESTION}]
    base_answer = asyncio.run(client.complete(messages)).text

    prompt_ids = job_.trainer.train_dataset[0]["input_ids"]
    prompt_ids = [t for t, label in zip(prompt_ids, job_.trainer.train_dataset[0]["labels"],
                                        strict=True) if label == -100]
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids),
                                                                            dtype=torch.long),
            max_new_tokens=spec.max_tokens, do_sample=False, temperature=None, top_p=None,
            top_k=None, pad_token_id=tokenizer.pad_token_id,
        )
    trainer_answer = tokenizer.decode(out[0, len(prompt_ids):], skip_special_tokens=True).strip()

    async def served() -> str:
        await client.use_version(1, result.path, adapter=True)
        return (await client.complete(messages)).text

    served_answer = asyncio.run(served())
    assert served_answer == trainer_answer
    assert served_answer != base_answer, "the adapter changed nothing: is it really served?"
