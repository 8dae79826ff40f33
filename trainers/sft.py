"""Supervised fine-tuning on battles the target lost: learn the winner's answer.

Each :class:`~schemas.events.SFTSample` becomes a conversational
prompt/completion pair: the conversation before the winner's turn is the
prompt, the winner's turn the completion. TRL masks prompt tokens out of the
loss for prompt/completion data, so the target learns to answer like the
winner, not to reproduce the user's question or the system prompt. (TRL's
``assistant_only_loss`` would need ``{% generation %}`` markers that the
SmolLM2 chat template lacks; the prompt/completion split needs nothing.)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from arena_stream.config import TrainingConfig
from arena_stream.models.chat import served_messages
from arena_stream.schemas.events import SFTSample
from arena_stream.trainers.common import (
    LogSink,
    PreparedJob,
    ProgressCallback,
    completion_logprob,
    load_policy,
    messages_as_dicts,
    progress_callback,
    trl_config_args,
)


def sft_example(
    sample: SFTSample, system_prompt: str | None = None
) -> dict[str, list[dict[str, str]]]:
    """One sample as a TRL conversational prompt/completion row.

    ``system_prompt`` is the target's own (``[[players]] system_prompt``): the
    prompt is formatted exactly as the target sees it when it plays
    (:func:`~arena_stream.models.chat.served_messages`).
    """
    messages = served_messages(system_prompt, messages_as_dicts(sample.messages))
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        raise ValueError(
            f"SFT sample {sample.id}: messages must end with the winner's assistant turn"
        )
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def sft_dataset(samples: list[SFTSample], system_prompt: str | None = None) -> Any:
    """The samples as a ``datasets.Dataset`` with ``prompt`` and ``completion`` columns."""
    from datasets import Dataset

    return Dataset.from_list([sft_example(s, system_prompt) for s in samples])


def prepare_sft(
    samples: list[SFTSample],
    cfg: TrainingConfig,
    *,
    base_model: str,
    parent_adapter: str | None,
    out_dir: Path,
    on_log: LogSink | None = None,
    system_prompt: str | None = None,
) -> PreparedJob:
    """An SFTTrainer over the samples, LoRA (fresh or continued) or full, ready to run."""
    from trl import SFTConfig, SFTTrainer

    model, tokenizer, peft_config = load_policy(
        cfg, base_model=base_model, parent_adapter=parent_adapter
    )
    args = SFTConfig(**trl_config_args(
        cfg, out_dir, "sft", {"completion_only_loss": True, "packing": False}))
    progress = ProgressCallback(on_log, every_s=cfg.progress_every_s)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_dataset(samples, system_prompt),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[progress_callback(progress)],
    )
    return PreparedJob(
        trainer=trainer, progress=progress, tokenizer=tokenizer, out_dir=out_dir,
        adapter=cfg.lora, samples=len(samples),
    )


def sft_loss(
    model: Any, tokenizer: Any, samples: list[SFTSample], *, max_length: int,
    system_prompt: str | None = None,
) -> float:
    """Mean negative log-likelihood per completion token of the winners' answers.

    The same quantity SFT minimises (token-weighted over the whole set), computed
    outside the trainer so a run can be judged on its own data before and after.
    """
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for sample in samples:
            row = sft_example(sample, system_prompt)
            logprob, n = completion_logprob(
                model, tokenizer, row["prompt"], row["completion"], max_length
            )
            total += logprob
            count += n
    finally:
        model.train(was_training)
    return -total / count if count else math.nan
