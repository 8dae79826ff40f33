"""structlog set-up: key-value or JSON lines, with secrets redacted from every line.

Secrets (API keys, SASL passwords) are registered once with :func:`redact`;
the redaction processor runs last, on the rendered line, so a key that slips
into an exception message or a URL is caught too.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_secrets: set[str] = set()
MASK = "***"


def redact(*values: str | None) -> None:
    """Register secret values that must never appear in a log line."""
    for value in values:
        if value and len(value) >= 4:
            _secrets.add(value)


def scrub(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _redact_event(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    if not _secrets:
        return event_dict
    return {k: scrub(v) if isinstance(v, str) else v for k, v in event_dict.items()}


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
    for noisy in ("aiokafka", "faust", "mode", "httpx", "kafka"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    # transformers warns about tokenizer settings on every load; only errors matter here.
    logging.getLogger("transformers").setLevel(max(numeric, logging.ERROR))
