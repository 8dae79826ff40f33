"""Records from wherever a user keeps them: JSONL, a JSON array, Parquet, Hugging Face, stdin.

A *source* is a string, as given on the command line:

- ``-``: standard input (JSON lines, or one JSON array);
- a directory saved by ``datasets`` (``Dataset.save_to_disk``): read with
  ``datasets.load_from_disk``, one split (``--split``; default ``train`` or the
  only one);
- ``hf://OWNER/NAME``: a dataset on the Hugging Face hub, read with
  ``datasets.load_dataset`` (``--split``, ``--subset``); offline, it must be in
  the local cache (``HF_HUB_OFFLINE`` is the user's to set, never ours);
- ``*.parquet`` / ``*.pq``: Parquet, every row;
- any other file: JSON lines, or a JSON array when its first character is ``[``
  (``.json`` files are often arrays, ``.jsonl`` never).

Each record keeps its position (1-based line for JSON lines, row otherwise),
so a bad one is reported where the user can find it, and JSON lines keep their
original bytes, so what is already in our format is published unchanged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

HUB_PREFIX = "hf://"
PARQUET_SUFFIXES = (".parquet", ".pq")


class InputError(ValueError):
    """A source that cannot be read at all (missing, unreadable, not the format it claims)."""


@dataclass(frozen=True)
class Record:
    """One record of a source, or why it could not be decoded."""

    position: int  # 1-based line (JSON lines) or row
    data: Any = None
    raw: bytes | None = None  # the original line, for JSON lines
    error: str | None = None


@dataclass(frozen=True)
class SourceOptions:
    """How to read a Hugging Face dataset; ignored for files."""

    split: str | None = None
    subset: str | None = None


def kind_of(source: str) -> str:
    """``stdin``, ``hf-disk``, ``hf-hub``, ``parquet`` or ``json`` (lines or array)."""
    if source == "-":
        return "stdin"
    if source.startswith(HUB_PREFIX):
        return "hf-hub"
    path = Path(source)
    if path.is_dir():
        return "hf-disk"
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return "parquet"
    return "json"


def read_records(source: str, options: SourceOptions | None = None) -> Iterator[Record]:
    """Every record of ``source``; raises :class:`InputError` when it cannot be read at all."""
    options = options or SourceOptions()
    kind = kind_of(source)
    if kind == "stdin":
        return _json_records(sys.stdin.buffer.read(), "standard input")
    if kind == "hf-hub":
        return _rows(_hub_dataset(source[len(HUB_PREFIX):], options))
    path = Path(source)
    if kind == "hf-disk":
        return _rows(_disk_dataset(path, options))
    if not path.is_file():
        raise InputError(f"no such file: {source}")
    if kind == "parquet":
        return _parquet_records(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{source}: {exc.strerror or exc}") from None
    return _json_records(data, source)


def _json_records(data: bytes, where: str) -> Iterator[Record]:
    if data.lstrip()[:1] == b"[":
        try:
            items = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise InputError(f"{where}: starts with '[' but is not a JSON array: {exc}") from None
        return (Record(i, item) for i, item in enumerate(items, start=1))
    return _json_lines(data)


def _json_lines(data: bytes) -> Iterator[Record]:
    for number, line in enumerate(data.split(b"\n"), start=1):
        raw = line.strip()
        if not raw:
            continue
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Record(number, raw=raw, error=f"not UTF-8 text: {exc}")
            continue
        try:
            yield Record(number, msgspec.json.decode(raw), raw)
        except msgspec.DecodeError as exc:
            yield Record(number, raw=raw, error=f"not valid JSON: {exc}")


def _parquet_records(path: Path) -> Iterator[Record]:
    import polars as pl

    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"{path}: cannot read Parquet: {exc}") from None
    return (Record(i, row) for i, row in enumerate(frame.iter_rows(named=True), start=1))


def _rows(dataset: Any) -> Iterator[Record]:
    return (Record(i, row) for i, row in enumerate(dataset, start=1))


def _require_datasets(what: str) -> None:
    from importlib.util import find_spec

    if find_spec("datasets") is None:
        raise InputError(f"{what} needs the datasets package: pip install 'arena-stream[train]'")


def _one_split(found: Any, options: SourceOptions, where: str) -> Any:
    """One ``Dataset``: ``--split``, else ``train``, else the only split there is."""
    from datasets import DatasetDict

    if not isinstance(found, DatasetDict):
        if options.split:
            raise InputError(f"{where} is a single dataset without splits; leave out --split")
        return found
    splits = list(found)
    split = options.split or ("train" if "train" in splits else
                              splits[0] if len(splits) == 1 else None)
    if split is None or split not in found:
        chosen = f"no split {options.split!r}" if options.split else "several splits"
        raise InputError(f"{where}: {chosen}; choose one with --split ({', '.join(splits)})")
    return found[split]


def _disk_dataset(path: Path, options: SourceOptions) -> Any:
    _require_datasets("a Hugging Face dataset directory")
    from datasets import load_from_disk

    try:
        found = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:  # a directory that is not a saved dataset
        raise InputError(f"{path} is a directory but not a dataset saved by datasets "
                         f"(save_to_disk): {exc}") from None
    return _one_split(found, options, str(path))


def _hub_dataset(name: str, options: SourceOptions) -> Any:
    _require_datasets("a Hugging Face hub dataset")
    from datasets import load_dataset

    try:
        found = load_dataset(name, options.subset, split=options.split or "train")
    except Exception as exc:  # network, missing dataset or split, gated access: one line
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        hint = ("; HF_HUB_OFFLINE is set and it is not in the local cache" if offline
                else "; check the name, --split / --subset and your network or token")
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load the Hugging Face dataset {name!r}: {detail}{hint}") from None
    return _one_split(found, options, f"hf://{name}")
