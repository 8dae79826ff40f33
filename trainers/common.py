"""What SFT and DPO jobs share: the result type, model loading, LoRA, precision, progress, saving.

With LoRA every version sits on the same base checkpoint: a new version is
the parent's adapter trained further (or a fresh adapter for the first
version), so every saved version is one complete adapter over the base and a
server holding only the base can hot-load any of them. Without LoRA a
version is a full checkpoint, and its parent is the checkpoint it started from.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from arena_stream.config import TrainingConfig
from arena_stream.schemas.events import Message, TrainingJob

# The projections of a Llama-style block (SmolLM2 is one). The MLP is adapted
# as well as attention because LoRA on every linear layer is what comes close to
# full fine-tuning (the QLoRA paper's finding); the extra adapter is a few MB.
LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Reference adapter TRL's DPOTrainer adds next to ours when it is given a model
# that already has a (parent) adapter; it is never part of a saved version.
REF_ADAPTER = "ref"

LogSink = Callable[[dict[str, Any]], None]


class TrainResult(msgspec.Struct, kw_only=True):
    """What one finished job produced: where the new version is and how training went."""

    path: str  # adapter directory, or a full checkpoint directory when adapter is False
    adapter: bool
    metrics: dict[str, float] = {}
    losses: list[float] = []  # training loss at each logging step, in order


class UnsupportedJobKind(NotImplementedError):
    """A job kind this trainer cannot run (yet); the message says what it would need."""


def job_config(cfg: TrainingConfig, job: TrainingJob) -> TrainingConfig:
    """``cfg`` with the job's own ``hyperparameters`` laid over it.

    A job may carry overrides (say a smaller learning rate for a DPO round);
    unknown keys are an error rather than silently ignored, because a typo
    there would otherwise train with the wrong settings without a trace.
    """
    if not job.hyperparameters:
        return cfg
    from arena_stream.arena.kinds import hyperparameter_problems, kind

    problems = hyperparameter_problems(kind(job.kind), job.hyperparameters)
    if problems:
        raise ValueError(f"job {job.id}: hyperparameters refused: {'; '.join(problems)}")
    merged = {**msgspec.structs.asdict(cfg), **job.hyperparameters}
    return msgspec.convert(merged, TrainingConfig)


def messages_as_dicts(messages: Iterable[Message]) -> list[dict[str, str]]:
    """Chat messages in the plain-dict form that chat templates and TRL expect."""
    return [{"role": m.role, "content": m.content} for m in messages]


def use_bf16() -> bool:
    """bf16 only where the hardware does it natively; CPUs here train in fp32.

    TRL's configs default ``bf16`` to True, which on a CPU without bf16 units
    is slow and lossy, so the choice is always made explicitly.
    """
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def common_args(cfg: TrainingConfig, out_dir: Path) -> dict[str, Any]:
    """Keyword arguments that SFTConfig and DPOConfig take alike.

    Nothing is saved during training (``save_strategy="no"``): the job's only
    output is the final version, written by :func:`train_and_save`; progress
    goes to the caller through callbacks, and to the experiment trackers named
    by ``[training] report_to`` (TRL's own callbacks), each run named after
    its job (the version directory's name).
    """
    import torch

    bf16 = use_bf16()
    cuda = torch.cuda.is_available()
    return {
        "output_dir": str(out_dir),
        "learning_rate": cfg.learning_rate,
        "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "max_length": cfg.max_length,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "bf16": bf16,
        "fp16": False,
        # Checkpointing trades compute for memory (TRL turns it on by default);
        # the models trained here fit without it, and a CPU has no compute to spare.
        "gradient_checkpointing": False,
        # Jobs are a few dozen steps; with a decaying schedule how much a sample
        # counts would depend on where in its short job it happened to fall.
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "logging_steps": 1,
        "logging_first_step": True,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": cfg.report_to,
        "run_name": out_dir.name,
        "push_to_hub": False,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": cuda,
        "remove_unused_columns": True,
    }


def lora_config(cfg: TrainingConfig, model: Any) -> Any:
    """A LoRA config for ``model``: the Llama projections when present, else every linear layer."""
    from peft import LoraConfig

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets: list[str] | str = [p for p in LLAMA_PROJECTIONS if p in names] or "all-linear"
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_policy(
    cfg: TrainingConfig, *, base_model: str, parent_adapter: str | None
) -> tuple[Any, Any, Any]:
    """The model to train, its tokenizer, and a LoRA config when a fresh adapter is wanted.

    Returns ``(model, tokenizer, peft_config)``:

    * LoRA, no parent: the base model and a new LoRA config, which the TRL
      trainer applies after seeding (so the adapter's initialisation follows
      ``cfg.seed``).
    * LoRA with a parent: the base with the parent adapter loaded *trainable*
      and no config, so training continues that adapter instead of stacking a
      new one on it.
    * Full fine-tuning: the parent checkpoint when given (a full model), else
      the base; no config.
    """
    import torch

    from arena_stream.models.local import load_model, load_tokenizer

    # A LoRA base is frozen, so bf16 weights only save memory; full fine-tuning
    # keeps fp32 master weights (bf16 autocast does the compute) so that small
    # optimizer updates are not rounded away.
    dtype = torch.bfloat16 if use_bf16() and cfg.lora else torch.float32
    tokenizer = load_tokenizer(base_model)
    if not cfg.lora:
        source = parent_adapter if parent_adapter else base_model
        model = load_model(source, dtype=dtype)
        align_end_of_turn(tokenizer, model)
        return model, tokenizer, None
    model = load_model(base_model, dtype=dtype)
    align_end_of_turn(tokenizer, model)
    if parent_adapter is None:
        return model, tokenizer, lora_config(cfg, model)
    from peft import PeftModel

    if not (Path(parent_adapter) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"parent adapter {parent_adapter!r}: no adapter_config.json")
    return PeftModel.from_pretrained(model, parent_adapter, is_trainable=True), tokenizer, None


def align_end_of_turn(tokenizer: Any, model: Any) -> None:
    """Make the tokenizer's EOS the model's own end-of-turn token.

    The tokenizer converted from SmolLM2's GGUF names ``<|im_start|>`` as EOS
    while the model's generation config (rightly) stops on ``<|im_end|>``. TRL
    copies the tokenizer's EOS into the model config it trains, so without this
    a fully fine-tuned checkpoint would be saved with the wrong stop token.
    """
    eos_id = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(eos_id, list):
        eos_id = eos_id[0] if eos_id else None
    if not isinstance(eos_id, int) or eos_id == tokenizer.eos_token_id:
        return
    old_eos = tokenizer.eos_token
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    if tokenizer.pad_token in (None, old_eos):
        tokenizer.pad_token = tokenizer.eos_token


class ProgressCallback:
    """Training progress from the trainer's logs: every loss kept, progress reports throttled.

    Each logging step's loss is kept (the result's ``losses``); a progress
    report (a dict of :class:`~arena_stream.schemas.events.TrainingProgress`
    fields plus the step's other numeric logs) goes to ``on_log`` on the
    first step, the last one, and otherwise at most every ``every_s`` seconds,
    so a fast job on a GPU does not flood the jobs topic. Speed and ETA are
    measured from the start of training: ``tokens_per_second`` from TRL's
    running ``num_tokens``, the ETA from the mean time per step so far.

    Built lazily as a :class:`transformers.TrainerCallback` subclass (see
    :func:`progress_callback`) so importing this module stays cheap; it is
    driven through :meth:`begin` and :meth:`handle`, which a test can call
    with a fake trainer state. Only the main process reports.
    """

    def __init__(self, on_log: LogSink | None, *, every_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.on_log = on_log
        self.every_s = every_s
        self.clock = clock
        self.losses: list[float] = []
        self.last: dict[str, float] = {}
        self.started: float | None = None
        self.sent_at: float | None = None
        self.sent: list[dict[str, Any]] = []  # the reports made, for the caller and tests

    def begin(self) -> None:
        self.started = self.clock()

    def handle(self, logs: dict[str, Any], step: int, is_main: bool, *,
               max_steps: int = 0, epoch: float | None = None) -> None:
        if "loss" not in logs:  # the end-of-training summary, reported in the result instead
            return
        entry: dict[str, Any] = {"step": step}
        for key, value in logs.items():
            if isinstance(value, int | float) and math.isfinite(float(value)):
                entry[key] = float(value)
        self.losses.append(float(logs["loss"]))
        self.last = entry
        now = self.clock()
        if self.started is None:
            self.started = now
        due = (self.sent_at is None or step >= max_steps > 0
               or now - self.sent_at >= self.every_s)
        if not (is_main and due):
            return
        elapsed = now - self.started
        report = {**entry, "max_steps": max_steps, "elapsed_s": elapsed}
        if epoch is not None:
            report["epoch"] = float(epoch)
        if elapsed > 0 and "num_tokens" in entry:
            report["tokens_per_second"] = entry["num_tokens"] / elapsed
        if step > 0 and max_steps > 0:
            report["eta_s"] = elapsed / step * max(0, max_steps - step)
        self.sent_at = now
        self.sent.append(report)
        if self.on_log is not None:
            self.on_log(report)


def progress_callback(progress: ProgressCallback) -> Any:
    """A TrainerCallback that feeds ``progress``."""
    from transformers import TrainerCallback

    class _Forward(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            progress.begin()

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            if logs:
                progress.handle(dict(logs), int(state.global_step),
                                bool(state.is_world_process_zero),
                                max_steps=int(state.max_steps or 0), epoch=state.epoch)

    return _Forward()


def trl_config_args(cfg: TrainingConfig, out_dir: Path, kind: str,
                    own: dict[str, Any]) -> dict[str, Any]:
    """Everything a kind's TRL config is built with: ours, the kind's, then the user's.

    The user's ``[training] trl_args`` / ``trl_kind_args`` come last, so they
    override the defaults they may (:data:`~arena_stream.trainers.arguments.OVERRIDABLE`);
    a name arena-stream owns was refused when the config was loaded, and is
    refused again here for a config built in code.
    """
    from arena_stream.trainers.arguments import OWNED, pass_through

    user = pass_through(cfg, kind)
    owned = sorted(set(user) & set(OWNED))
    if owned:
        raise ValueError(f"training.trl_args: {', '.join(owned)} set by arena-stream itself "
                         f"({'; '.join(OWNED[n] for n in owned)})")
    return {**common_args(cfg, out_dir), **own, **user}


@dataclass
class PreparedJob:
    """A TRL trainer set up for one job, not yet run.

    Kept separate from running so that callers who need the trained model in
    memory afterwards (tests comparing it with the saved adapter, benchmarks)
    can reach ``trainer.model``; :func:`trainers.run_job` just calls :meth:`run`.
    """

    trainer: Any
    progress: ProgressCallback
    tokenizer: Any
    out_dir: Path
    adapter: bool
    samples: int

    def run(self) -> TrainResult:
        return train_and_save(self)


def train_and_save(job: PreparedJob) -> TrainResult:
    """Run the job's trainer, save the new version under ``out_dir`` and summarise the run.

    Saving goes through ``trainer.save_model``, which gathers sharded weights
    under DeepSpeed/FSDP and writes from the main process only; every process
    returns the same result object but only the main one has written files.
    """
    from transformers import PrinterCallback

    trainer, progress, out_dir, adapter = job.trainer, job.progress, job.out_dir, job.adapter
    # The printer writes every log dict to stdout; progress already reaches the
    # caller through ``on_log``, and ``python -m trainers`` keeps stdout for JSON.
    trainer.remove_callback(PrinterCallback)
    started = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - started
    diverged = [i for i, loss in enumerate(progress.losses) if not math.isfinite(loss)]
    if diverged or not math.isfinite(float(output.training_loss)):
        # A version trained into NaN is garbage; say so instead of publishing it (and a
        # NaN in its metrics would encode as null and fail to decode wherever it is read).
        step = diverged[0] + 1 if diverged else "the end"
        raise RuntimeError(f"training diverged: the loss is not finite at logging step {step}")
    model = trainer.accelerator.unwrap_model(trainer.model)
    if adapter and REF_ADAPTER in getattr(model, "peft_config", {}):
        # DPO's frozen copy of the parent adapter; not part of the new version.
        model.delete_adapter(REF_ADAPTER)
    trainer.save_model(str(out_dir))
    if trainer.accelerator.is_main_process:
        job.tokenizer.save_pretrained(str(out_dir))
        for leftover in ("training_args.bin",):
            (out_dir / leftover).unlink(missing_ok=True)
    trainer.accelerator.wait_for_everyone()
    steps = int(trainer.state.global_step)
    tokens = float(progress.last.get("num_tokens", 0.0))
    targs = trainer.args
    seen = steps * targs.per_device_train_batch_size * targs.gradient_accumulation_steps
    seen *= targs.world_size
    metrics: dict[str, float] = {
        "train_loss": float(output.training_loss),
        "train_loss_first": progress.losses[0] if progress.losses else 0.0,
        "train_loss_last": progress.losses[-1] if progress.losses else 0.0,
        "steps": float(steps),
        "seconds": seconds,
        "seconds_per_step": seconds / steps if steps else 0.0,
        "samples": float(job.samples),
        "samples_seen": float(seen),
        "samples_per_second": seen / seconds if seconds > 0 else 0.0,
        "tokens": tokens,
        "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
    }
    for key in ("rewards/accuracies", "rewards/margins", "mean_token_accuracy"):
        if key in progress.last:
            metrics[f"last_{key.replace('/', '_')}"] = progress.last[key]
    return TrainResult(path=str(out_dir), adapter=adapter, metrics=metrics, losses=progress.losses)


def completion_logprob(
    model: Any,
    tokenizer: Any,
    prompt: list[dict[str, str]],
    completion: list[dict[str, str]],
    max_length: int,
) -> tuple[float, int]:
    """Sum of the log-probabilities of ``completion``'s tokens after ``prompt``, and their count.

    Tokenised the way TRL does for conversational prompt/completion data: the
    prompt with the generation prompt, the whole conversation, the completion
    being what follows their common prefix, all cut at ``max_length``. It is
    the yardstick the tests and benchmarks use to judge a job on its own data
    independently of the trainer's logs.
    """
    import torch

    prompt_ids = tokenizer.apply_chat_template(
        prompt, tokenize=True, return_dict=True, add_generation_prompt=True
    )["input_ids"]
    full_ids = tokenizer.apply_chat_template(
        prompt + completion, tokenize=True, return_dict=True
    )["input_ids"]
    start = 0
    while start < min(len(prompt_ids), len(full_ids)) and prompt_ids[start] == full_ids[start]:
        start += 1
    full_ids = full_ids[:max_length]
    if start >= len(full_ids):
        return 0.0, 0
    device = next(model.parameters()).device
    ids = torch.tensor([full_ids], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    return float(logps[start - 1 :].sum()), len(full_ids) - start
