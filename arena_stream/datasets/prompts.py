"""Prompt files: reading JSONL (with line-numbered errors) and publishing to the prompts topic."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from arena_stream.arena.validation import InvalidPrompt, parse_prompt
from arena_stream.config import Config, LimitsConfig
from arena_stream.kafka.io import producer, topic_name
from arena_stream.schemas import Prompt


@dataclass(frozen=True)
class PromptLine:
    line: int
    raw: bytes
    prompt: Prompt


def bundled_prompts_path() -> Path:
    from importlib.resources import files

    return Path(str(files("arena_stream").joinpath("data", "prompts.jsonl")))


def read_prompt_file(
    path: str | Path, limits: LimitsConfig
) -> tuple[list[PromptLine], list[tuple[int, str]]]:
    """Good lines (validated like the stream does) and (line number, reason) for bad ones."""
    good: list[PromptLine] = []
    bad: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            raw = raw.strip()
            if not raw:
                continue
            try:
                prompt = parse_prompt(raw, limits)
            except InvalidPrompt as exc:
                bad.append((n, f"{exc.reason}: {exc.message}"))
                continue
            if prompt.id in seen:
                bad.append((n, f"duplicate_id: id {prompt.id!r} already on line {seen[prompt.id]}"))
                continue
            seen[prompt.id] = n
            good.append(PromptLine(n, raw, prompt))
    return good, bad


async def publish_prompts(config: Config, lines: list[PromptLine]) -> int:
    """Publish the original bytes of each line, keyed by prompt id; returns the count."""
    name = topic_name(config, "prompts")
    async with producer(config) as p:
        futures = [await p.send(name, line.raw, key=line.prompt.id.encode()) for line in lines]
        for fut in futures:
            await fut
    return len(lines)
