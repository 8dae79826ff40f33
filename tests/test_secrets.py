"""Secrets are masked in every form they take: nested log fields, library log lines, records."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from arena_stream import logging as arena_logging
from arena_stream.config import ConfigError, env_secret
from arena_stream.schemas import DeadLetter, encode

SECRET = "sk-live-0123456789abcdef"


@pytest.fixture(autouse=True)
def registered() -> None:
    arena_logging.redact(SECRET + "\n")  # as read from a mounted secret file


def test_env_secret_drops_the_newline_a_secret_file_ends_with(monkeypatch) -> None:
    monkeypatch.setenv("K", SECRET + "\n")
    assert env_secret("K", "api_key_env") == SECRET
    monkeypatch.setenv("K", "sk-a\x1bb")
    with pytest.raises(ConfigError, match="control character"):
        env_secret("K", "api_key_env")
    monkeypatch.setenv("K", "  \n")
    with pytest.raises(ConfigError, match="is empty"):
        env_secret("K", "api_key_env")


def test_nested_fields_and_escaped_forms_are_masked_in_log_lines() -> None:
    out = io.StringIO()
    arena_logging.configure("info", json=True, stream=out)
    structlog.get_logger("t").warning(
        "call.failed", error={"detail": [f"Illegal header value b'Bearer {SECRET}\\n'"]},
        echoed=repr(SECRET + "\n"),
    )
    line = out.getvalue()
    assert SECRET not in line and "***" in line


def test_library_log_lines_are_masked() -> None:
    out = io.StringIO()
    arena_logging.configure("info", stream=out)
    logging.getLogger("aiokafka").error("request failed with Authorization: Bearer %s", SECRET)
    assert SECRET not in out.getvalue() and "***" in out.getvalue()


def test_records_sent_to_topics_are_masked_even_json_escaped() -> None:
    echoed = f"server said: invalid key {SECRET!r} / {json.dumps(SECRET + chr(10))}"
    letter = DeadLetter(stage="generate", reason="http_401", topic="t", error=echoed)
    data = arena_logging.scrub_bytes(encode(letter))
    assert SECRET.encode() not in data and b"***" in data
    assert json.loads(data)["reason"] == "http_401"  # still valid JSON
