"""What a user may pass to TRL: ``[training] report_to`` and the ``trl_args`` tables, checked.

TRL's ``SFTConfig`` / ``DPOConfig`` (transformers' ``TrainingArguments``
underneath) have well over a hundred arguments; arena-stream sets a few itself
(:func:`arena_stream.trainers.common.common_args`) and lets users pass the rest:

* ``report_to``: experiment tracking, any value ``TrainingArguments`` takes:
  ``"none"``, ``"all"``, one integration (``"tensorboard"``, ``"wandb"``,
  ``"mlflow"``, ...) or a list of them. The names are read from the installed
  transformers' own table (``INTEGRATION_TO_CALLBACK``), so a new integration
  is accepted as soon as transformers has it.
* ``[training.trl_args]``: arguments for every job's TRL config;
  ``[training.trl_kind_args.<kind>]``: for one kind only (``label_smoothing`` is a
  ``DPOConfig`` argument, not an ``SFTConfig`` one).

A name the TRL config class does not have is refused when the config is
loaded, with the closest real name; so is a name arena-stream sets itself
(:data:`OWNED`), because passing it through would silently undo what the
project relies on (say ``output_dir``: the version directory, or
``save_strategy``: a job writes one version, no checkpoints). A few of the
project's choices are only defaults and may be overridden (:data:`OVERRIDABLE`).

The names are read from the installed TRL and transformers source (the
classes, their bases, re-exports followed: :func:`trl_fields`) rather than
imported, because importing TRL loads torch and transformers, tens of seconds
on a busy machine, on every command that loads the config. Where TRL is not
installed (a worker image without the training stack) the names cannot be
checked and are left to the trainer, which loads the same config with TRL at
hand. Values are TRL's to check, when a job builds its config.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import importlib.util
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# Arguments arena-stream sets itself, and why a user may not pass them through.
_FIELD = "set by [training] {}"
OWNED: dict[str, str] = {
    "output_dir": "each job writes its version under [training] model_dir",
    "learning_rate": "set by [training] learning_rate (dpo_learning_rate for DPO)",
    "num_train_epochs": _FIELD.format("epochs"),
    "max_steps": _FIELD.format("max_steps"),
    "per_device_train_batch_size": _FIELD.format("batch_size"),
    "gradient_accumulation_steps": _FIELD.format("gradient_accumulation_steps"),
    "max_length": _FIELD.format("max_length"),
    "seed": _FIELD.format("seed"),
    "data_seed": _FIELD.format("seed"),
    "beta": _FIELD.format("dpo_beta"),
    "report_to": _FIELD.format("report_to"),
    "save_strategy": "a job saves exactly one version, at its end",
    "eval_strategy": "jobs have no evaluation split (use `arena-stream eval`)",
    "push_to_hub": "versions are published on the models topic, not pushed to a hub",
    "disable_tqdm": "the trainer's stdout carries progress as JSON lines",
    "remove_unused_columns": "the datasets are built for TRL by arena-stream",
    "completion_only_loss": "SFT learns the winner's answer only (see trainers/sft.py)",
    "packing": "SFT samples are trained one per sequence (see trainers/sft.py)",
    "loss_type": "the losses are arena-stream's: SFT's on the winner's answer, DPO's sigmoid",
    "logging_first_step": "progress is reported from the first step",
}

# arena-stream's choices that are only defaults: trl_args may change them.
OVERRIDABLE = frozenset({
    "lr_scheduler_type", "warmup_steps", "gradient_checkpointing", "logging_steps",
    "bf16", "fp16", "dataloader_num_workers", "dataloader_pin_memory", "run_name",
})

REPORT_SPECIAL = ("none", "all")


@functools.cache
def integrations() -> tuple[str, ...] | None:
    """The ``report_to`` names the installed transformers knows; ``None`` without transformers.

    Read from the source of ``transformers.integrations.integration_utils``
    (its ``INTEGRATION_TO_CALLBACK`` table) rather than imported: importing it
    loads torch, seconds that every command loading a config would pay.
    """
    path = module_file("transformers.integrations.integration_utils")
    if path is None:
        return None
    for node in _parse(path).body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == "INTEGRATION_TO_CALLBACK"
                        for t in node.targets)):
            return tuple(k.value for k in node.value.keys
                         if isinstance(k, ast.Constant) and isinstance(k.value, str))
    # the table moved: ask the module itself
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return tuple(INTEGRATION_TO_CALLBACK)


# -- reading installed source without importing it -----------------------------------------


def module_file(module: str) -> Path | None:
    """The source file of ``module``, found without importing it (or its packages)."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return Path(spec.origin) if spec and spec.origin and not rest else None
    base = Path(next(iter(spec.submodule_search_locations)))
    for candidate in (base.joinpath(*rest).with_suffix(".py") if rest else None,
                      base.joinpath(*rest, "__init__.py")):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


@functools.cache
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``from X import ...`` inside ``module`` names."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, *([node.module] if node.module else [])])


def _find_class(module: str, name: str, depth: int = 0) -> tuple[str, ast.ClassDef] | None:
    """Where class ``name`` of ``module`` is defined, following re-exports (lazy ones too)."""
    path = module_file(module)
    if path is None or depth > 8:
        return None
    tree = _parse(path)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return module, node
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):  # re-exports, including those under `if TYPE_CHECKING:`
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    found = _find_class(_absolute(module, is_package, node), alias.name,
                                        depth + 1)
                    if found is not None:
                        return found
    return None


def _source_fields(module: str, name: str) -> frozenset[str] | None:
    """The init arguments of dataclass ``module.name`` and its bases, read from source."""
    found = _find_class(module, name)
    if found is None:
        return None
    where, node = found
    fields: set[str] = set()
    for base in node.bases:
        if not isinstance(base, ast.Name):
            return None
        inherited = _source_fields(where, base.id)
        if inherited is None:
            return None
        fields |= inherited
    for item in node.body:
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        if "ClassVar" in ast.unparse(item.annotation) or "InitVar" in ast.unparse(item.annotation):
            continue
        call = item.value
        no_init = (isinstance(call, ast.Call) and any(
            k.arg == "init" and isinstance(k.value, ast.Constant) and k.value.value is False
            for k in call.keywords))
        if no_init:
            fields.discard(item.target.id)
        else:
            fields.add(item.target.id)
    return frozenset(fields)


def report_to_names(report_to: str | list[str]) -> list[str]:
    return [report_to] if isinstance(report_to, str) else list(report_to)


def report_to_problems(report_to: str | list[str]) -> list[str]:
    """Why ``report_to`` would be refused by TrainingArguments (an empty list: it would not)."""
    names = report_to_names(report_to)
    if not names:
        return ['training.report_to: an empty list; use "none" for no tracking']
    if len(names) > 1 and any(n in REPORT_SPECIAL for n in names):
        return [f'training.report_to: "none" and "all" stand alone, not in a list ({names})']
    if all(n in REPORT_SPECIAL for n in names):
        return []  # the default: no need to read transformers' source on every config load
    known = integrations()
    if known is None:
        return []  # no transformers here: the trainer checks it
    problems = []
    for name in names:
        if name in REPORT_SPECIAL or name in known:
            continue
        close = difflib.get_close_matches(name, [*REPORT_SPECIAL, *known], n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        problems.append(f"training.report_to: {name!r} is not an integration transformers "
                        f"knows ({hint}known: none, all, {', '.join(known)})")
    return problems


def missing_integrations(report_to: str | list[str]) -> list[str]:
    """Integrations named in ``report_to`` whose package is not installed (the trainer's check).

    Imports transformers: only the trainer, which trains with it, asks this.
    """
    names = report_to_names(report_to)
    if names in (["none"], ["all"]):
        return []
    from transformers.integrations.integration_utils import (
        get_available_reporting_integrations,
    )

    available = set(get_available_reporting_integrations())
    # flyte and kubeflow have no availability probe there; their callbacks say it themselves
    return [n for n in names if n not in available and n not in ("flyte", "kubeflow")]


@functools.cache
def trl_fields(config_class: str) -> frozenset[str] | None:
    """The arguments of a TRL config class (``"trl:SFTConfig"``); ``None`` without TRL.

    Read from the installed source (the class, its bases, re-exports followed),
    so checking a config does not import TRL, transformers and torch; where the
    source cannot be followed, the class is imported and asked.
    """
    module, _, name = config_class.partition(":")
    if module_file(module) is None:
        return None
    fields = _source_fields(module, name)
    if fields:
        return fields
    cls = getattr(importlib.import_module(module), name)
    return frozenset(f.name for f in dataclasses.fields(cls) if f.init)


def trl_arg_problems(
    shared: Mapping[str, Any], by_kind: Mapping[str, Mapping[str, Any]], schedule: Iterable[str],
) -> list[str]:
    """Why ``trl_args`` / ``trl_kind_args`` cannot be passed to TRL (an empty list: they can).

    A shared argument must be one every scheduled kind's config class takes; a
    kind's own must be one its class takes. Owned names are refused anywhere.
    """
    from arena_stream.arena.kinds import UnknownKind, kind

    problems: list[str] = []
    tables: list[tuple[str, Mapping[str, Any], list[str]]] = [
        ("training.trl_args", shared, list(dict.fromkeys(schedule))),
    ]
    for kind_name, args in by_kind.items():
        try:
            kind(kind_name)
        except UnknownKind as exc:
            problems.append(f"training.trl_kind_args: {exc}")
            continue
        tables.append((f"training.trl_kind_args.{kind_name}", args, [kind_name]))
    for where, args, kinds in tables:
        for name in args:
            if name in OWNED:
                problems.append(f"{where}.{name}: not passed through: {OWNED[name]}")
        wanted = [n for n in args if n not in OWNED]
        if not wanted:
            continue
        classes: dict[str, frozenset[str]] = {}
        for kind_name in kinds:
            try:
                entry = kind(kind_name)
            except UnknownKind:
                continue  # reported by the schedule's own check
            fields = trl_fields(entry.trl_config)
            if fields is None:
                return problems  # no TRL here: the trainer checks the names
            classes[entry.trl_config.partition(":")[2]] = fields
        for name in wanted:
            lacking = [cls for cls, fields in classes.items() if name not in fields]
            if not lacking:
                continue
            verb = "has" if len(lacking) == 1 else "have"
            owners = [k.name for k in _kinds()
                      if (f := trl_fields(k.trl_config)) is not None and name in f]
            if owners and where == "training.trl_args":
                problems.append(
                    f"{where}.{name}: {' and '.join(lacking)} {verb} no such argument; it is "
                    f"for {' and '.join(owners)} jobs only: put it under "
                    f"[training.trl_kind_args.{owners[0]}]")
                continue
            known = sorted(set().union(*classes.values()))
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{where}.{name}: {' and '.join(lacking)} {verb} no such "
                            f"argument{hint}")
    return list(dict.fromkeys(problems))


def _kinds() -> list[Any]:
    from arena_stream.arena.kinds import KINDS

    return list(KINDS.values())


def pass_through(training: Any, kind_name: str) -> dict[str, Any]:
    """The user's TRL arguments for a job of ``kind_name``: shared ones, then the kind's own."""
    return {**training.trl_args, **training.trl_kind_args.get(kind_name, {})}
