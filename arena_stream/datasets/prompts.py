"""Prompt sources: read (any format users have, validated like the stream), publish to Kafka.

:func:`read_prompts` is what every command that takes prompts uses
(``publish``, ``run --prompts``, ``testset build``, ``decontaminate``,
``eval``): a source (:mod:`arena_stream.datasets.sources`) is read record by
record, each record is brought into our format
(:mod:`arena_stream.datasets.formats`) and checked exactly as the stream's
intake will check it. Bad records come back with their line or row number and
the reason, never raised; a record already in our format keeps its original
bytes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from arena_stream.arena.validation import InvalidPrompt, parse_prompt
from arena_stream.config import Config, LimitsConfig
from arena_stream.datasets.formats import FieldMapping, normalise
from arena_stream.datasets.sources import SourceOptions, read_records
from arena_stream.schemas import Prompt


@dataclass(frozen=True)
class PromptLine:
    line: int  # line (JSON lines) or row number in the source, 1-based
    raw: bytes  # what is published: the original line, or the prompt in our format
    prompt: Prompt


@dataclass(frozen=True)
class Converted:
    """One record of a source as JSON bytes in our format, or why it is not usable."""

    position: int
    raw: bytes | None
    error: str | None = None
    format: str = "arena-stream"
    later_turns: int = 0
    derived_id: bool = False


@dataclass
class PromptRead:
    """What reading a source found: good prompts, bad records, and what the user should know."""

    good: list[PromptLine] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)
    formats: Counter[str] = field(default_factory=Counter)
    later_turns: int = 0  # user turns not played (MT-bench's second turns, ...)
    derived_ids: int = 0  # prompts whose id was derived from their content

    def notes(self, source: str) -> list[str]:
        """Lines for stderr about conversions a user would want to know of."""
        out = []
        foreign = {f: n for f, n in self.formats.items() if f != "arena-stream"}
        if foreign:
            shown = ", ".join(f"{n} {f}" for f, n in sorted(foreign.items()))
            out.append(f"{source}: converted to arena-stream prompts: {shown}")
        if self.later_turns:
            out.append(f"{source}: {self.later_turns} later user turn(s) not played: each "
                       "follows an answer the players have not given (kept in metadata "
                       "later_turns)")
        if self.derived_ids:
            out.append(f"{source}: {self.derived_ids} prompt(s) had no id field; their ids "
                       "are derived from their content (name one with --id-field)")
        return out


BUNDLED_PREFIX = "bundled:"


def bundled_prompts_path() -> Path:
    """The embedded default's training prompts: the bundled instruction-following task."""
    return bundled_path("instructions.jsonl")


def bundled_path(name: str) -> Path:
    """A file shipped in arena_stream/data (prompt sets of the embedded default)."""
    from importlib.resources import files

    return Path(str(files("arena_stream").joinpath("data", name)))


def resolve_source(source: str) -> str:
    """``bundled:NAME`` is a file shipped in arena_stream/data; anything else is as given."""
    if source.startswith(BUNDLED_PREFIX):
        return str(bundled_path(source[len(BUNDLED_PREFIX):]))
    return source


def converted_records(
    source: str | Path, mapping: FieldMapping | None = None, options: SourceOptions | None = None
) -> Iterator[Converted]:
    """Every record of ``source`` as JSON in our format (shape only; no limits checked)."""
    for record in read_records(str(source), options):
        if record.error is not None:
            yield Converted(record.position, record.raw, record.error)
            continue
        found = normalise(record.data, mapping)
        if found.prompt is None:
            yield Converted(record.position, record.raw, found.error, found.format)
            continue
        if found.unchanged and record.raw is not None:
            raw = record.raw
        else:  # dataset rows carry a null for every column a row lacks
            raw = msgspec.json.encode({k: v for k, v in found.prompt.items() if v is not None})
        yield Converted(record.position, raw, None, found.format, found.later_turns,
                        found.derived_id)


def read_prompts(
    source: str | Path, limits: LimitsConfig, mapping: FieldMapping | None = None,
    options: SourceOptions | None = None,
) -> PromptRead:
    """Good prompts (validated as the stream validates them) and (position, reason) for bad."""
    result = PromptRead()
    seen: dict[str, int] = {}
    for item in converted_records(source, mapping, options):
        if item.error is not None or item.raw is None:
            result.bad.append((item.position, item.error or "empty"))
            continue
        try:
            prompt = parse_prompt(item.raw, limits)
        except InvalidPrompt as exc:
            result.bad.append((item.position, f"{exc.reason}: {exc.message}"))
            continue
        if prompt.id in seen:
            result.bad.append((item.position, f"duplicate_id: id {prompt.id!r} already at line/row "
                               f"{seen[prompt.id]}"))
            continue
        seen[prompt.id] = item.position
        result.good.append(PromptLine(item.position, item.raw, prompt))
        result.formats[item.format] += 1
        result.later_turns += item.later_turns
        result.derived_ids += item.derived_id
    return result


def read_prompt_file(
    path: str | Path, limits: LimitsConfig, mapping: FieldMapping | None = None,
    options: SourceOptions | None = None,
) -> tuple[list[PromptLine], list[tuple[int, str]]]:
    """Good prompts and (position, reason) for bad records; see :func:`read_prompts`."""
    found = read_prompts(path, limits, mapping, options)
    return found.good, found.bad


async def publish_prompts(config: Config, lines: list[PromptLine]) -> int:
    """Publish each prompt's bytes, keyed by prompt id; returns the count."""
    from arena_stream.kafka.io import producer, topic_name

    name = topic_name(config, "prompts")
    async with producer(config) as p:
        futures = [await p.send(name, line.raw, key=line.prompt.id.encode()) for line in lines]
        for fut in futures:
            await fut
    return len(lines)
