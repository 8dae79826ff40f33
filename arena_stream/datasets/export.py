"""What the flywheel produced, as datasets the rest of the ecosystem loads without conversion.

What can be exported, read from its topic (all of it, or a replay window):

- every training kind of :mod:`arena_stream.arena.kinds` (``sft``, ``dpo``):
  the rows its own dataset builder makes, which is exactly what the trainer
  trains on: TRL's conversational prompt/completion rows for SFT, its
  conversational preference rows (``prompt``, ``chosen``, ``rejected`` as
  message lists) for DPO;
- ``battles``: LMArena's battle format (``model_a``, ``model_b``, ``winner``,
  ``tstamp``, ``judge``, ``conversation_a`` / ``conversation_b``), which
  ``arena-stream leaderboard --battles`` and LMArena's own notebooks read;
- ``judgments``: the judgment events as they are, both games included.

Training rows also carry the sample's own scalar fields (sample, battle and
prompt ids, models, margin), so a user can filter or trace them; trainers
ignore columns they do not use. Kafka delivers at least once, so a sample or judgment may
sit on its topic twice: the export keeps the first of each id, as the trainer
and the rating log do.

Written as Parquet, JSON lines, or a Hugging Face dataset directory
(``Dataset.save_to_disk``; load it with ``datasets.load_from_disk``). Files
are written whole or not at all.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from arena_stream.config import Config
from arena_stream.schemas.events import Judgment

Format = Literal["parquet", "jsonl", "hf"]
FORMATS: tuple[Format, ...] = ("parquet", "jsonl", "hf")
EVENT_KINDS = ("battles", "judgments")  # besides the training kinds


class ExportError(ValueError):
    """An export that cannot be written as asked (a one-line user error)."""


@dataclass(frozen=True)
class Exported:
    """What an export wrote and what it left out."""

    rows: int
    duplicates: int  # the same sample or battle delivered twice: kept once
    undecodable: int  # records on the topic that are not this kind of event
    path: Path
    format: Format


def battle_row(judgment: Judgment) -> dict[str, Any]:
    """A judgment as an LMArena battle: both conversations, the verdict, the judge, the time."""
    conversation = [{"role": m.role, "content": m.content} for m in judgment.messages]
    return {
        "question_id": judgment.prompt_id,
        "battle_id": judgment.battle_id,
        "model_a": judgment.model_a,
        "model_b": judgment.model_b,
        "winner": judgment.winner,
        "judge": judgment.judge_model,
        "turn": sum(1 for m in judgment.messages if m.role == "user"),
        "tstamp": judgment.ts,
        "category": judgment.category,
        "conversation_a": [*conversation, {"role": "assistant", "content": judgment.answer_a}],
        "conversation_b": [*conversation, {"role": "assistant", "content": judgment.answer_b}],
        "score_a": judgment.score_a,
        "score_b": judgment.score_b,
        "rule": judgment.rule,
    }


def judgment_row(judgment: Judgment) -> dict[str, Any]:
    return msgspec.to_builtins(judgment)  # type: ignore[no-any-return]


def kinds() -> list[str]:
    """Everything ``export --kind`` takes: the training kinds, then battles and judgments."""
    from arena_stream.arena.kinds import KINDS

    return [*KINDS, *EVENT_KINDS]


def training_rows(kind: str, samples: Sequence[Any]) -> list[dict[str, Any]]:
    """The kind's own dataset rows (its registered builder), plus each sample's scalar fields.

    The builder is the trainer's: an export trains exactly like the flywheel.
    A sample the builder refuses raises ``ValueError``, as it would in training.
    """
    from arena_stream.arena.kinds import kind as training_kind

    rows: list[dict[str, Any]] = training_kind(kind).build_dataset(list(samples)).to_list()
    for row, sample in zip(rows, samples, strict=True):
        for name, value in msgspec.to_builtins(sample).items():
            if name not in row and (value is None or isinstance(value, str | int | float)):
                row[name] = value
    return rows


def format_for(out: str | os.PathLike[str], chosen: Format | None) -> Format:
    """The output format: as chosen, else by suffix (``.parquet``, ``.jsonl``, none: a dataset)."""
    if chosen is not None:
        return chosen
    suffix = Path(out).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if not suffix:
        return "hf"
    raise ExportError(f"cannot tell the format of {out}: use .parquet, .jsonl, a directory "
                      "name without a suffix (Hugging Face dataset), or --format")


async def export(
    config: Config, kind: str, out: str | os.PathLike[str], *, fmt: Format | None = None,
    window: dict[str, Any] | None = None,
) -> Exported:
    """Read ``kind`` from its topic (within ``window``, see ``read_window``) and write it."""
    from arena_stream.arena.kinds import KINDS
    from arena_stream.kafka.replay import events_in_window

    if kind not in kinds():
        raise ExportError(f"unknown kind {kind!r}; known: {', '.join(kinds())}")
    chosen = format_for(out, fmt)
    target = Path(out)
    _check_target(target, chosen, training=kind in KINDS)
    if kind in KINDS:
        topic, event_type, identity = kind, KINDS[kind].sample, _sample_id
    else:
        topic, event_type, identity = "judgments", Judgment, _battle_id
    found, bad = await events_in_window(config, topic, event_type, **(window or {}))
    events: list[Any] = []
    seen: set[str] = set()
    for _, event in found:
        ident = identity(event)
        if ident not in seen:
            seen.add(ident)
            events.append(event)
    unusable = 0
    if kind in KINDS:
        rows, unusable = _training_rows_skipping_unusable(kind, events)
    else:
        rows = [(battle_row if kind == "battles" else judgment_row)(e) for e in events]
    if not rows:
        raise ExportError(f"nothing to export: no {kind} records in the selection")
    write(rows, target, chosen)
    return Exported(len(rows), len(found) - len(seen), len(bad) + unusable, target, chosen)


def _sample_id(sample: Any) -> str:
    return str(sample.id)


def _battle_id(judgment: Judgment) -> str:
    return judgment.battle_id


def _training_rows_skipping_unusable(kind: str, samples: list[Any]) -> tuple[list[Any], int]:
    """All rows at once; only if the builder refuses one are they tried one by one."""
    try:
        return training_rows(kind, samples), 0
    except ValueError:  # a sample the trainer could not use either: left out, counted
        usable = []
        for sample in samples:
            try:
                training_rows(kind, [sample])
            except ValueError:
                continue
            usable.append(sample)
        return (training_rows(kind, usable) if usable else []), len(samples) - len(usable)


def _check_target(target: Path, fmt: Format, *, training: bool) -> None:
    """Never overwrite a directory that is not a dataset this export could have written."""
    if fmt == "hf" or training:  # the trainers' dataset builders are datasets' too
        from importlib.util import find_spec

        if find_spec("datasets") is None:
            what = "--format hf" if fmt == "hf" else "training data"
            raise ExportError(f"{what} needs the datasets package: "
                              "pip install 'arena-stream[train]'")
    if fmt == "hf":
        if target.is_file():
            raise ExportError(f"{target} is a file; a Hugging Face dataset is a directory")
        if target.is_dir() and any(target.iterdir()) and not _is_saved_dataset(target):
            raise ExportError(f"{target} is a directory with other files in it; choose a new "
                              "or empty directory (an earlier export there is replaced)")
    elif target.is_dir():
        raise ExportError(f"{target} is a directory; give a file name")


def _is_saved_dataset(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def write(rows: Sequence[dict[str, Any]], target: Path, fmt: Format) -> None:
    """Write ``rows`` whole, or leave the target as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        if fmt == "jsonl":
            with open(tmp, "wb") as handle:
                for row in rows:
                    handle.write(msgspec.json.encode(row) + b"\n")
        elif fmt == "parquet":
            import polars as pl

            pl.DataFrame(rows, infer_schema_length=None).write_parquet(tmp)
        else:
            import datasets

            shown = datasets.is_progress_bar_enabled()
            datasets.disable_progress_bars()  # our one line says what was written
            try:
                datasets.Dataset.from_list(list(rows)).save_to_disk(str(tmp))
            finally:
                if shown:
                    datasets.enable_progress_bars()
            if target.exists():
                shutil.rmtree(target)  # an earlier export (checked by _check_target)
        os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
