"""What the flywheel produced, as datasets the rest of the ecosystem loads without conversion.

Four kinds, read from their topic (all of it, or a replay window):

- ``sft``: TRL's conversational prompt/completion rows (``prompt`` and
  ``completion`` as message lists), exactly what the trainer trains on
  (:func:`arena_stream.trainers.sft.sft_example`);
- ``dpo``: TRL's conversational preference rows (``prompt``, ``chosen``,
  ``rejected`` as message lists; :func:`arena_stream.trainers.dpo.dpo_example`);
- ``battles``: LMArena's battle format (``model_a``, ``model_b``, ``winner``,
  ``tstamp``, ``judge``, ``conversation_a`` / ``conversation_b``), which
  ``arena-stream leaderboard --battles`` and LMArena's own notebooks read;
- ``judgments``: the judgment events as they are, both games included.

Each row also carries where it came from (sample, battle and prompt ids,
models, margin), so a user can filter or trace it; trainers ignore columns
they do not use. Kafka delivers at least once, so a sample or judgment may
sit on its topic twice: the export keeps the first of each id, as the trainer
and the rating log do.

Written as Parquet, JSON lines, or a Hugging Face dataset directory
(``Dataset.save_to_disk``; load it with ``datasets.load_from_disk``). Files
are written whole or not at all.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from arena_stream.config import Config
from arena_stream.schemas.events import DPOPair, Judgment, SFTSample

Kind = Literal["sft", "dpo", "battles", "judgments"]
Format = Literal["parquet", "jsonl", "hf"]
KINDS: tuple[Kind, ...] = ("sft", "dpo", "battles", "judgments")
FORMATS: tuple[Format, ...] = ("parquet", "jsonl", "hf")


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


def sft_row(sample: SFTSample) -> dict[str, Any]:
    from arena_stream.trainers.sft import sft_example

    return {**sft_example(sample), "id": sample.id, "battle_id": sample.battle_id,
            "prompt_id": sample.prompt_id, "round": sample.round, "winner": sample.winner,
            "loser": sample.loser, "margin": sample.margin}


def dpo_row(pair: DPOPair) -> dict[str, Any]:
    from arena_stream.trainers.dpo import dpo_example

    return {**dpo_example(pair), "id": pair.id, "battle_id": pair.battle_id,
            "prompt_id": pair.prompt_id, "round": pair.round,
            "chosen_model": pair.chosen_model, "rejected_model": pair.rejected_model,
            "margin": pair.margin}


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


# kind -> (topic key, event type, id of one item, row builder)
SOURCES: dict[Kind, tuple[str, type[Any], Callable[[Any], str], Callable[[Any], dict[str, Any]]]]
SOURCES = {
    "sft": ("sft", SFTSample, lambda s: s.id, sft_row),
    "dpo": ("dpo", DPOPair, lambda p: p.id, dpo_row),
    "battles": ("judgments", Judgment, lambda j: j.battle_id, battle_row),
    "judgments": ("judgments", Judgment, lambda j: j.battle_id, judgment_row),
}


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
    config: Config, kind: Kind, out: str | os.PathLike[str], *, fmt: Format | None = None,
    window: dict[str, Any] | None = None,
) -> Exported:
    """Read ``kind`` from its topic (within ``window``, see ``read_window``) and write it."""
    from arena_stream.kafka.replay import events_in_window

    chosen = format_for(out, fmt)
    target = Path(out)
    _check_target(target, chosen)
    key, event_type, identity, build = SOURCES[kind]
    found, bad = await events_in_window(config, key, event_type, **(window or {}))
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row, event in found:
        ident = identity(event)
        if ident in seen:
            continue
        seen.add(ident)
        try:
            rows.append(build(event))
        except ValueError:  # a sample the trainer could not use either (dpo_example's checks)
            bad.append(row)
    if not rows:
        raise ExportError(f"nothing to export: no {kind} records in the selection")
    write(rows, target, chosen)
    return Exported(len(rows), len(found) - len(seen), len(bad), target, chosen)


def _check_target(target: Path, fmt: Format) -> None:
    """Never overwrite a directory that is not a dataset this export could have written."""
    if fmt == "hf":
        from importlib.util import find_spec

        if find_spec("datasets") is None:
            raise ExportError("--format hf needs the datasets package: "
                              "pip install 'arena-stream[train]'")
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
