"""The training kinds of the flywheel, one registry entry each: the only place naming SFT or DPO.

An entry says everything the rest of the code needs to know about a kind:

- which **samples** it trains on (the event type on its topic) and how they are
  **selected** from a judgment (the paper's thresholds, in :mod:`.routing`);
- its **topic** (``train.<name>``, a training buffer) and its **batch
  threshold** (the ``[training]`` key that sets how many samples fire a job);
- the **hyperparameters** a job of this kind carries beyond the shared ones;
- how to build its **dataset** and how to **train** (a trainer module under
  ``arena_stream/trainers/``, named as a string so that the stream, which never
  trains, never imports torch or TRL).

The route stage, the trigger, the trainer service, ``python -m
arena_stream.trainers`` and the topic registry all dispatch through
:func:`kind`; a kind in ``[training] schedule`` without an entry is a
configuration error at load time.

**Adding a kind** (KTO, ORPO, a reward model for PPO): write its sample event
in ``schemas/events.py`` (if it needs a new shape), its selection rule in
:mod:`arena_stream.arena.routing`, its trainer in
``trainers/<name>.py`` with ``prepare_<name>(samples, cfg, *, base_model,
parent_adapter, out_dir, on_log)`` and ``<name>_dataset(samples)``, then one
entry below (and a ``<name>_batch`` key in :class:`~arena_stream.config.TrainingConfig`
if it needs its own threshold). PPO, the paper's third stage, needs more than
an entry: a reward model trained on the DPO pairs (``trl.RewardTrainer``), a
prompt-only dataset and an online generation loop with the current target as
policy; it is left out rather than approximated.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from arena_stream.arena import routing
from arena_stream.arena.routing import Thresholds
from arena_stream.schemas import DPOPair, Event, Judgment, SFTSample

# The settings a kind reads (the config's [training] table): by name, so that the config,
# which checks its schedule against this registry, stays the one module that imports the other.
TrainingSettings = Any

Select = Callable[[Judgment, Thresholds, float], list[Any]]


class UnknownKind(ValueError):
    """A training kind that has no registry entry."""


@dataclass(frozen=True)
class TrainingKind:
    name: str
    sample: type[Event]
    select: Select  # judgment -> this kind's samples (possibly none)
    batch_field: str  # the [training] key holding this kind's batch threshold
    extra_hyperparameters: tuple[str, ...]  # [training] keys only this kind's jobs carry
    trainer: str  # "module:function" preparing a TRL trainer (see module docstring)
    dataset: str  # "module:function" turning samples into a datasets.Dataset
    trl_config: str  # "module:Class" of its TRL config: [training.trl_args] are checked on it
    doc: str

    @property
    def topic(self) -> str:
        """The topic registry key of this kind's training buffer (``train.<name>``)."""
        return self.name

    def batch(self, cfg: TrainingSettings) -> int:
        return int(getattr(cfg, self.batch_field))

    def hyperparameters(self, cfg: TrainingSettings) -> dict[str, Any]:
        """What a job of this kind is trained with: the shared settings plus its own."""
        shared = {name: getattr(cfg, name) for name in SHARED_HYPERPARAMETERS}
        own = {name: getattr(cfg, name) for name in self.extra_hyperparameters}
        # an unset override is recorded as what it resolves to: a job says how it was trained
        return {**shared, **{name: shared["learning_rate"] if value is None and
                             name.endswith("learning_rate") else value
                             for name, value in own.items()}}

    def prepare(self) -> Callable[..., Any]:
        return _load(self.trainer)

    def build_dataset(self, samples: list[Any]) -> Any:
        return _load(self.dataset)(samples)


SHARED_HYPERPARAMETERS = (
    "lora", "lora_r", "lora_alpha", "lora_dropout", "learning_rate", "epochs", "max_steps",
    "batch_size", "gradient_accumulation_steps", "max_length", "seed",
)

# What a job on the jobs topic may ask for, at most. The trainer takes a job's
# hyperparameters only from this list and within these bounds: anyone who can write the
# jobs topic must not be able to make it train for ever or on an absurd shape.
HYPERPARAMETER_BOUNDS: dict[str, tuple[float, float]] = {
    "lora_r": (1, 1024), "lora_alpha": (1, 4096), "lora_dropout": (0.0, 0.9),
    "learning_rate": (1e-8, 1.0), "epochs": (0.0, 100.0), "max_steps": (-1, 100_000),
    "batch_size": (1, 4096), "gradient_accumulation_steps": (1, 1024),
    "max_length": (8, 131_072), "seed": (0, 2**31 - 1), "dpo_beta": (1e-4, 100.0),
    "dpo_learning_rate": (1e-8, 1.0),
}


def hyperparameter_problems(entry: TrainingKind, params: dict[str, Any]) -> list[str]:
    """Why a job's hyperparameters cannot be trained with (an empty list when they can)."""
    allowed = set(SHARED_HYPERPARAMETERS) | set(entry.extra_hyperparameters)
    problems = [f"{name!r} is not a hyperparameter a {entry.name} job may set"
                for name in sorted(set(params) - allowed)]
    for name, value in params.items():
        bounds = HYPERPARAMETER_BOUNDS.get(name)
        if name not in allowed or bounds is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            problems.append(f"{name} = {value!r} is not a number")
        elif not bounds[0] <= value <= bounds[1]:
            problems.append(f"{name} = {value!r} is outside {bounds[0]}..{bounds[1]}")
    return problems

KINDS: dict[str, TrainingKind] = {
    k.name: k
    for k in (
        TrainingKind(
            name="sft",
            sample=SFTSample,
            select=routing.sft_samples,
            batch_field="sft_batch",
            extra_hyperparameters=(),
            trainer="arena_stream.trainers.sft:prepare_sft",
            dataset="arena_stream.trainers.sft:sft_dataset",
            trl_config="trl:SFTConfig",
            doc="SFT samples: battles the target lost, with the winner's answer",
        ),
        TrainingKind(
            name="dpo",
            sample=DPOPair,
            select=routing.dpo_pairs,
            batch_field="dpo_batch",
            extra_hyperparameters=("dpo_beta", "dpo_learning_rate"),
            trainer="arena_stream.trainers.dpo:prepare_dpo",
            dataset="arena_stream.trainers.dpo:dpo_dataset",
            trl_config="trl:DPOConfig",
            doc="DPO pairs from decided target battles: chosen = winner, rejected = loser",
        ),
    )
}


def kind(name: str) -> TrainingKind:
    """The registry entry for ``name``; :class:`UnknownKind` names the known ones otherwise."""
    entry = KINDS.get(name)
    if entry is None:
        raise UnknownKind(
            f"unknown training kind {name!r}; known: {', '.join(KINDS)} "
            "(a new kind is one entry in arena_stream/arena/kinds.py and one trainer file)"
        )
    return entry


def kind_of(sample: Event) -> TrainingKind:
    """The kind whose buffer a sample belongs in."""
    for entry in KINDS.values():
        if isinstance(sample, entry.sample):
            return entry
    raise UnknownKind(f"no training kind takes {type(sample).__name__} samples")


def select_samples(judgment: Judgment, cfg: Thresholds, now: float) -> list[Any]:
    """Every kind's samples from one judgment, in registry order."""
    return [s for entry in KINDS.values() for s in entry.select(judgment, cfg, now)]


def _load(reference: str) -> Callable[..., Any]:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
