"""structlog set-up: key-value or JSON lines, with secrets redacted from everything we write.

Secrets (API keys, SASL passwords) are registered once with :func:`redact`,
each in every form it may take on the way out: as read (a mounted secret file
ends with a newline), stripped, and escaped the way ``repr`` and JSON escape
it. :func:`scrub` masks them in a log line's fields (nested ones included),
in the standard library's log records, and in every record the worker sends
to a topic (:func:`scrub_bytes`), so a key echoed by a server into an error
message reaches neither a log, nor a topic, nor a changelog.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_secrets: set[str] = set()
MASK = "***"


_secret_bytes: list[bytes] = []


def redact(*values: str | None) -> None:
    """Register secret values that must never appear in a log line or a record we send."""
    for value in values:
        if not value:
            continue
        for form in _forms(value):
            if len(form) >= 4 and form not in _secrets:
                _secrets.add(form)
    ordered = sorted(_secrets, key=len, reverse=True)  # the longest form first
    _secret_bytes[:] = [s.encode() for s in ordered]
    _secret_bytes.extend(json_form.encode() for json_form in (_json_escape(s) for s in ordered)
                         if json_form.encode() not in _secret_bytes)


def _forms(value: str) -> set[str]:
    stripped = value.strip()
    return {value, stripped, repr(value)[1:-1], repr(stripped)[1:-1], _json_escape(value)} - {""}


def _json_escape(text: str) -> str:
    import json

    return json.dumps(text)[1:-1]


def scrub(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub_bytes(data: bytes) -> bytes:
    """``data`` with every registered secret masked (a record about to be sent)."""
    for secret in _secret_bytes:
        if secret in data:
            data = data.replace(secret, MASK.encode())
    return data


def scrub_value(value: Any) -> Any:
    """``value`` with secrets masked in every string it holds, however deeply nested."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_value(v) for v in value)
    return value


def _redact_event(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    if not _secrets:
        return event_dict
    return {k: scrub_value(v) for k, v in event_dict.items()}


class _ScrubbingFormatter(logging.Formatter):
    """The standard library's log lines (faust, aiokafka, httpx), secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "info", *, json: bool = False, stream: Any = None) -> None:
    """Configure structlog and the standard library logging it shares a level with."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    out = stream or _CurrentStderr()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=stream or sys.stderr,
                        force=True)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_ScrubbingFormatter(logging.BASIC_FORMAT))
    for noisy in ("aiokafka", "faust", "mode", "httpx", "kafka"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    # faust's producer buffer logs "producer buffer full" as a warning whenever table writes
    # outrun the broker for a moment: that is its flow control working (the stream waits
    # for the buffer to drain), nothing a user can act on. Shown at --log-level info.
    logging.getLogger("faust.transport.producer").setLevel(
        numeric if numeric <= logging.INFO else logging.ERROR)
    # transformers warns about tokenizer settings on every load; only errors matter here.
    logging.getLogger("transformers").setLevel(max(numeric, logging.ERROR))
