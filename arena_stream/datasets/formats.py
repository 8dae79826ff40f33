"""One record in a format users have, as a prompt in ours (``{"id", "prompt" | "messages"}``).

Recognised without options, by their fields:

==================  ==========================================================
ours                ``id`` with ``prompt`` or ``messages`` (kept as is)
MT-bench            ``question_id``, ``category``, ``turns`` (user turns as strings)
arena-hard v0.1     ``question_id``, ``turns`` (``[{"content": ...}]``), ``cluster``
arena-hard v2       ``uid``, ``prompt``, ``category``, ``subcategory``
LMSYS / Arena       ``conversation`` or ``conversation_a`` (role/content messages)
ShareGPT            ``conversations`` (``from`` / ``value``; human, gpt, system)
chat datasets       ``messages`` (role/content, text parts), ``prompt_id``
Alpaca / Dolly      ``instruction`` (+ ``input``), ``question``, ``text``
==================  ==========================================================

Ids may be strings or integers (written as strings). A record with no id
field at all gets one derived from its content (``p-`` + 16 hex digits of
SHA-256), so publishing the same file twice is still idempotent.
``FieldMapping`` names the fields when they cannot be inferred.

Only what can be played is kept: a conversation up to its last user turn (a
battle needs the players' own answers to it), and of MT-bench's or
arena-hard's user turns the first, because each later one was written to
follow the answer to the one before. The later turns are kept in the metadata
(``later_turns``) and counted in the notes, never dropped silently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec

ID_FIELDS = ("id", "question_id", "uid", "prompt_id", "conversation_id", "sample_id", "idx")
# In order of preference: a whole conversation says more than a single string.
TEXT_FIELDS = ("messages", "conversation", "conversations", "conversation_a", "turns",
               "prompt", "question", "instruction", "text", "query")
ROLES = {
    "user": "user", "human": "user", "prompter": "user",
    "assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant",
    "chatgpt": "assistant", "bard": "assistant",
    "system": "system",
}
METADATA_TEXT_LIMIT = 4000  # longer source fields are not copied into the prompt's metadata


@dataclass(frozen=True)
class FieldMapping:
    """The user's ``--id-field`` / ``--text-field`` when the format cannot be inferred."""

    id_field: str | None = None
    text_field: str | None = None


@dataclass(frozen=True)
class Normalised:
    """A record as a prompt in our format, or why it cannot be one."""

    prompt: dict[str, Any] | None
    error: str | None = None
    format: str = "arena-stream"
    unchanged: bool = False  # already ours, exactly: its original bytes can be sent
    later_turns: int = 0  # user turns that could not be played (see the module docstring)
    derived_id: bool = False


class _Bad(ValueError):
    pass


def normalise(record: Any, mapping: FieldMapping | None = None) -> Normalised:
    """``record`` (a decoded JSON object or a dataset row) as a prompt in our format."""
    mapping = mapping or FieldMapping()
    if not isinstance(record, dict):
        return Normalised(None, f"expected a JSON object, got {type(record).__name__}")
    try:
        return _normalise(record, mapping)
    except _Bad as exc:
        return Normalised(None, str(exc))


def _normalise(record: dict[str, Any], mapping: FieldMapping) -> Normalised:
    ours = (mapping == FieldMapping() and isinstance(record.get("id"), str)
            and ("prompt" in record or "messages" in record))
    if ours:  # our own format: the stream's validation judges it, exactly as sent
        return Normalised(record, unchanged=True)
    text_field = _pick(record, mapping.text_field, TEXT_FIELDS, "text")
    messages, later, fmt = _messages(record, text_field)
    id_field = _pick(record, mapping.id_field, ID_FIELDS, "id", required=False)
    derived = id_field is None
    prompt_id = _content_id(messages) if derived else _id(record[id_field], id_field)
    used = {text_field, id_field, "category", "metadata"}
    if text_field == "instruction":
        used.add("input")
    metadata: dict[str, Any] = {"format": fmt}
    if isinstance(record.get("metadata"), dict):
        metadata.update(record["metadata"])
    metadata.update(_extras(record, used))
    if later:
        metadata["later_turns"] = later
    out: dict[str, Any] = {"id": prompt_id, "messages": messages, "metadata": metadata}
    category = record.get("category")
    if isinstance(category, str) and category:
        out["category"] = category
    return Normalised(out, format=fmt, later_turns=len(later), derived_id=derived)


def _pick(record: dict[str, Any], chosen: str | None, candidates: tuple[str, ...], what: str,
          *, required: bool = True) -> str | None:
    if chosen is not None:
        if chosen not in record:
            raise _Bad(f"no field {chosen!r} (--{what}-field); fields: {_fields(record)}")
        return chosen
    for name in candidates:
        if record.get(name) not in (None, "", []):
            return name
    if required:
        raise _Bad(f"no prompt text in any of {', '.join(candidates)}; fields: "
                   f"{_fields(record)} (name the one to use with --text-field)")
    return None


def _fields(record: dict[str, Any]) -> str:
    return ", ".join(sorted(map(str, record))[:20]) or "(none)"


def _id(value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Bad(f"id field {field!r} holds {type(value).__name__}, not a string or integer")
    text = str(value).strip()
    if not text:
        raise _Bad(f"id field {field!r} is empty")
    return text


def _content_id(messages: list[dict[str, str]]) -> str:
    canonical = msgspec.json.encode([[m["role"], m["content"]] for m in messages])
    return "p-" + hashlib.sha256(canonical).hexdigest()[:16]


def _messages(record: dict[str, Any], field: str) -> tuple[list[dict[str, str]], list[str], str]:
    """(messages up to the last user turn, later user turns not played, format name)."""
    value = record[field]
    if isinstance(value, str):
        text = value
        if field == "instruction" and isinstance(record.get("input"), str) and record["input"]:
            text = f"{value}\n\n{record['input']}"  # Alpaca's own convention
        return [{"role": "user", "content": text}], [], _format_name(record, field)
    if not isinstance(value, list) or not value:
        raise _Bad(f"field {field!r} must be a string or a non-empty list, "
                   f"got {type(value).__name__}")
    if all(isinstance(turn, str) for turn in value) or (
        field == "turns" and all(isinstance(t, dict) and "role" not in t for t in value)
    ):
        turns = [_turn_text(t, field, i) for i, t in enumerate(value)]
        return [{"role": "user", "content": turns[0]}], turns[1:], _format_name(record, field)
    messages = [_message(m, field, i) for i, m in enumerate(value)]
    while messages and messages[-1]["role"] != "user":
        messages.pop()  # the recorded answers: the players give their own
    if not messages:
        raise _Bad(f"field {field!r} has no user turn")
    return messages, [], _format_name(record, field)


def _turn_text(turn: Any, field: str, i: int) -> str:
    if isinstance(turn, dict):
        turn = turn.get("content")
    if not isinstance(turn, str):
        raise _Bad(f"{field}[{i}] has no text content")
    return turn


def _message(item: Any, field: str, i: int) -> dict[str, str]:
    if not isinstance(item, dict):
        raise _Bad(f"{field}[{i}] is not a message object")
    role = item.get("role", item.get("from"))
    content = item.get("content", item.get("value"))
    mapped = ROLES.get(str(role).lower()) if role is not None else None
    if mapped is None:
        raise _Bad(f"{field}[{i}] has role {role!r}; known roles: {', '.join(ROLES)}")
    if isinstance(content, list):  # OpenAI content parts: text only
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        if any(p.get("type", "text") != "text" for p in content if isinstance(p, dict)) or \
                not all(isinstance(t, str) for t in texts):
            raise _Bad(f"{field}[{i}] has non-text content; only text prompts can be played")
        content = "\n".join(texts)
    if not isinstance(content, str):
        raise _Bad(f"{field}[{i}] has no text content")
    return {"role": mapped, "content": content}


def _format_name(record: dict[str, Any], field: str) -> str:
    if field in ("prompt", "messages") and "id" in record:
        return "arena-stream"  # ours, with an integer id
    if field == "turns":
        turns = record["turns"]
        return "arena-hard" if turns and isinstance(turns[0], dict) else "mt-bench"
    if "uid" in record and field == "prompt":
        return "arena-hard"
    return {"conversation": "lmsys", "conversation_a": "lmsys-arena",
            "conversations": "sharegpt", "instruction": "alpaca"}.get(field, field)


def _extras(record: dict[str, Any], used: set[str | None]) -> dict[str, Any]:
    """Short scalar fields of the source (a cluster, a language, a reference answer)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key in used or not isinstance(key, str):
            continue
        texts = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        short_text = bool(texts) and all(isinstance(v, str) for v in texts) and \
            sum(len(v) for v in texts) <= METADATA_TEXT_LIMIT
        if isinstance(value, bool | int | float) or short_text:
            out[key] = value
    return out
