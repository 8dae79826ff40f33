"""Direct preference optimisation on decided battles: prefer the winner's answer to the loser's.

Each :class:`~schemas.events.DPOPair` becomes a conversational
prompt/chosen/rejected row. The reference policy is the policy the job starts
from, never a second copy of the model:

* a fresh LoRA adapter: the base model with the adapter disabled (TRL does this
  when it is handed a ``peft_config``);
* a parent adapter: a frozen copy of the parent's adapter weights, which TRL
  adds next to the trainable one (a few MB); the copy is dropped before saving.
  Measuring against the bare base instead would pull every DPO round back
  towards the base model and undo what earlier rounds (SFT included) taught.
* full fine-tuning: TRL loads a second copy of the starting checkpoint; that is
  inherent to full-parameter DPO.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

from arena_stream.config import TrainingConfig
from arena_stream.models.chat import served_messages
from arena_stream.schemas.events import DPOPair
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


def dpo_example(
    pair: DPOPair, system_prompt: str | None = None
) -> dict[str, list[dict[str, str]]]:
    """One pair as a TRL conversational preference row.

    ``system_prompt`` is the target's own: the prompt is formatted exactly as
    the target sees it when it plays (:func:`~arena_stream.models.chat.served_messages`).
    """
    prompt = served_messages(system_prompt, messages_as_dicts(pair.prompt))
    if not prompt or prompt[-1]["role"] != "user":
        raise ValueError(f"DPO pair {pair.id}: prompt must end with a user turn")
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": pair.chosen}],
        "rejected": [{"role": "assistant", "content": pair.rejected}],
    }


def dpo_dataset(pairs: list[DPOPair], system_prompt: str | None = None) -> Any:
    """The pairs as a ``datasets.Dataset`` with ``prompt``, ``chosen`` and ``rejected`` columns."""
    from datasets import Dataset

    return Dataset.from_list([dpo_example(p, system_prompt) for p in pairs])


def dpo_args(cfg: TrainingConfig) -> dict[str, Any]:
    """DPOConfig's arguments of DPO's own: its beta, its loss, its learning rate when set."""
    own: dict[str, Any] = {"beta": cfg.dpo_beta, "loss_type": ["sigmoid"]}
    if cfg.dpo_learning_rate is not None:
        own["learning_rate"] = cfg.dpo_learning_rate
    return own


def prepare_dpo(
    pairs: list[DPOPair],
    cfg: TrainingConfig,
    *,
    base_model: str,
    parent_adapter: str | None,
    out_dir: Path,
    on_log: LogSink | None = None,
    system_prompt: str | None = None,
) -> PreparedJob:
    """A DPOTrainer over the pairs, LoRA (fresh or continued) or full, ready to run."""
    from trl import DPOConfig, DPOTrainer

    model, tokenizer, peft_config = load_policy(
        cfg, base_model=base_model, parent_adapter=parent_adapter
    )
    args = DPOConfig(**trl_config_args(cfg, out_dir, "dpo", dpo_args(cfg)))
    progress = ProgressCallback(on_log, every_s=cfg.progress_every_s)
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=dpo_dataset(pairs, system_prompt),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[progress_callback(progress)],
    )
    return PreparedJob(
        trainer=trainer, progress=progress, tokenizer=tokenizer, out_dir=out_dir,
        adapter=cfg.lora, samples=len(pairs),
    )


def dpo_loss(
    model: Any, tokenizer: Any, pairs: list[DPOPair], *, beta: float, max_length: int,
    system_prompt: str | None = None,
) -> float:
    """Mean sigmoid DPO loss of a LoRA model, with its adapters disabled as the reference.

    Log-probabilities are summed over each answer's tokens, as TRL's sigmoid
    loss does. Before any training of a fresh adapter the policy equals the
    reference and the loss is exactly ``log 2``; a job that learned its pairs
    brings it below that.
    """
    import torch

    def logps(row: dict[str, Any]) -> tuple[float, float]:
        chosen, _ = completion_logprob(model, tokenizer, row["prompt"], row["chosen"], max_length)
        rejected, _ = completion_logprob(
            model, tokenizer, row["prompt"], row["rejected"], max_length
        )
        return chosen, rejected

    disable = getattr(model, "disable_adapter", None)
    total = 0.0
    was_training = model.training
    model.eval()
    try:
        for pair in pairs:
            row = dpo_example(pair, system_prompt)
            chosen, rejected = logps(row)
            with disable() if disable is not None else contextlib.nullcontext():
                ref_chosen, ref_rejected = logps(row)
            margin = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
            total += float(-torch.nn.functional.logsigmoid(torch.tensor(margin)))
    finally:
        model.train(was_training)
    return total / len(pairs) if pairs else math.nan
