"""Render the event reference (docs/events.md) from the Structs themselves.

``python -m arena_stream.schemas.docs > docs/events.md``; a test checks the file is current,
so the reference cannot drift from the code.
"""

from __future__ import annotations

import inspect
import typing

import msgspec

from arena_stream.kafka.topics import TOPICS
from arena_stream.schemas.events import (
    EVENT_TYPES,
    CheckReport,
    CheckResult,
    Game,
    Message,
    PromptIn,
    TrainingProgress,
)

HEADER = """\
# Events

Every message on an arena-stream topic is one JSON object (UTF-8, msgspec
encoded), readable and writable by any Kafka client. Every event carries `v`
(schema version, now 1) and `ts` (creation time, unix seconds). Fields not
listed are ignored by readers, so producers may add their own.

Generated from `schemas/events.py` by `python -m arena_stream.schemas.docs`.

## Topics

Names are `<prefix><suffix>`; the prefix is `[broker] topic_prefix`
(default `arena.`). Keys are the prompt id unless noted, so everything about
one prompt stays in order on one partition.

| topic | event | partitions | key | what |
|---|---|---|---|---|
"""


def _type_name(tp: object) -> str:
    text = str(tp).replace("typing.", "").replace("arena_stream.schemas.events.", "")
    return text.replace("<class '", "").replace("'>", "")


def _fields(cls: type) -> list[str]:
    hints = typing.get_type_hints(cls)
    rows = []
    for field in msgspec.structs.fields(cls):
        if field.default is not msgspec.NODEFAULT:
            default = repr(field.default)
        elif field.default_factory is not msgspec.NODEFAULT:
            default = repr(field.default_factory())
        else:
            default = "required"
        tp = _type_name(hints.get(field.name, field.type)).replace("|", "\\|")
        rows.append(f"| `{field.name}` | `{tp}` | {default} |")
    return rows


def render() -> str:
    out = [HEADER]
    for spec in TOPICS:
        parts = "configured" if spec.partitioned else "1"
        out.append(
            f"| `arena.{spec.suffix}` | `{spec.event}` | {parts} | {spec.key_doc} | {spec.doc} |\n"
        )
    out.append("\n## What users publish: a prompt\n\n")
    out.append(
        '`{"id": "p1", "prompt": "..."}` or `{"id": "p1", "messages": '
        '[{"role": "user", "content": "..."}]}`, optional `category` and '
        "`metadata`; publish it with the id as the Kafka key.\n\n"
    )
    for cls in (PromptIn, Message, Game, CheckResult, CheckReport, TrainingProgress,
                *EVENT_TYPES.values()):
        name = cls.__name__
        kinds = [k for k, v in EVENT_TYPES.items() if v is cls]
        title = f"## `{name}`" + (f" (`{kinds[0]}`)" if kinds else "")
        doc = inspect.cleandoc(cls.__doc__ or "")
        out.append(f"{title}\n\n{doc}\n\n| field | type | default |\n|---|---|---|\n")
        out.append("\n".join(_fields(cls)) + "\n\n")
    return "".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
