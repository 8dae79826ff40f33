"""The offline commands' one cache: model answers, verdicts and difficulty ratings, in SQLite.

``eval`` and ``testset build`` ask models for things that cost time or money,
and a re-run should ask only for what is new. Two rules make a cached value
safe to reuse:

* **The key is everything that changes the value.** A player's answer depends
  on its model, backend, server, decoding settings (temperature, top_p,
  max_tokens, seed, extra request fields), system prompt and chat template,
  and on the prompt's id and content: :func:`model_fingerprint` and
  :func:`answer_key` put all of it in the key, so changing any one of them
  never serves an old answer. Settings that only change *how* a call is made
  (timeouts, retries, concurrency, prices) are left out of it.
* **A write is all or nothing.** Each entry is one row written in its own
  transaction (SQLite, write-ahead log): a process killed mid-write leaves the
  last committed state, never half an entry. A file that is not readable as a
  database at all (truncated by a full disk, overwritten) is set aside under
  ``<name>.corrupt-<time>`` with a warning and the cache starts empty, because
  everything in it can be asked for again.

Old JSONL caches (``answers.jsonl``, ``judgments.jsonl``, ``*.ratings.jsonl``)
are not read: their keys lack the model settings, so nothing in them can be
shown to still apply; a run re-asks once and caches under the full key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import structlog

log = structlog.get_logger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"

# ModelConfig fields that change how a call is made, never what comes back.
CALL_ONLY_FIELDS = frozenset({
    "name", "role", "api_key_env", "timeout_s", "startup_timeout_s", "max_retries",
    "backoff_s", "backoff_max_s", "concurrency", "price_in_per_mtok", "price_out_per_mtok",
    # the judge's health thresholds: what it reports about itself, not its verdicts
    "min_agreement", "agreement_min_judgments", "agreement_window",
})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    namespace TEXT NOT NULL,   -- "answer", "judgment", "difficulty"
    key TEXT NOT NULL,         -- sha256 of the canonical key parts
    parts TEXT NOT NULL,       -- the key parts as JSON, to see why an entry exists
    value TEXT NOT NULL,       -- the cached value as JSON
    created REAL NOT NULL,
    PRIMARY KEY (namespace, key)
)
"""


class CacheFileError(ValueError):
    """The cache path holds something else (an old JSONL cache): say so, never overwrite it."""


def canonical(value: Any) -> str:
    """One JSON text per value: sorted keys, no spaces, msgspec types as builtins."""
    return json.dumps(msgspec.to_builtins(value), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)


def digest_parts(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(parts).encode("utf-8")).hexdigest()


def chat_template_id(model: str) -> str:
    """A hash of the chat template a local model directory ships, ``""`` when there is none.

    In-process backends apply the template of the model they load; an edited
    template in a local checkpoint changes every answer though the model's name
    does not. A hub id or a bundled name is identified by the name itself, and
    an HTTP server's template is the server's (its model name stands for it).
    """
    directory = Path(model)
    if not directory.is_dir():
        return ""
    sha = hashlib.sha256()
    found = False
    for name in ("chat_template.jinja", "chat_template.json", "tokenizer_config.json"):
        path = directory / name
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if name == "tokenizer_config.json":
            # unreadable JSON: its whole text stands for the template
            with contextlib.suppress(ValueError, AttributeError):
                text = canonical(json.loads(text).get("chat_template", ""))
        sha.update(name.encode() + b"\0" + text.encode("utf-8") + b"\0")
        found = True
    return sha.hexdigest() if found else ""


def model_fingerprint(spec: Any, *, version: int = 0, path: str | None = None) -> dict[str, Any]:
    """Everything about a model that changes what it answers, as plain JSON values.

    ``spec`` is a ``ModelConfig`` (a player or the judge); every field is in
    except :data:`CALL_ONLY_FIELDS`, so a setting added later keys the cache
    by default. ``version``/``path`` name a trained version (its adapter or
    checkpoint), whose template is the one saved with it.
    """
    fields = {
        f.encode_name: msgspec.to_builtins(getattr(spec, f.name))
        for f in msgspec.structs.fields(spec) if f.encode_name not in CALL_ONLY_FIELDS
    }
    fields["chat_template"] = chat_template_id(path or str(fields.get("model", "")))
    if path is not None:
        fields["version"] = version
        fields["version_path"] = os.path.abspath(path)
    return fields


def answer_key(fingerprint: Mapping[str, Any], prompt_id: str, content_digest: str
               ) -> dict[str, Any]:
    """The key parts of one model's answer to one prompt."""
    return {"model": dict(fingerprint), "prompt_id": prompt_id, "digest": content_digest}


class OfflineCache:
    """Key-value entries in one SQLite file, by namespace; ``None`` as path keeps them in memory.

    Values are JSON. :meth:`get` returns ``None`` for a miss; :meth:`put`
    commits at once. A database error after opening (a disk that fills, a file
    replaced under us) is logged once and the cache goes on in memory only:
    losing a cache must never lose the run it serves.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self.memory: dict[tuple[str, str], Any] = {}
        self.db: sqlite3.Connection | None = None
        if self.path is not None:
            self.db = self._open(self.path)

    # -- opening --------------------------------------------------------------------------

    def _open(self, path: Path) -> sqlite3.Connection | None:
        _refuse_foreign(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return _connect(path)
        except sqlite3.DatabaseError as exc:
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.warning("cache.unreadable", path=str(path), error=str(exc), moved_to=str(aside))
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{path}{suffix}")
                if src.exists():
                    src.replace(Path(f"{aside}{suffix}"))
        try:
            return _connect(path)
        except sqlite3.DatabaseError as exc:  # pragma: no cover - a disk that refuses writes
            log.warning("cache.disabled", path=str(path), error=str(exc))
            return None

    def _fail(self, exc: sqlite3.Error) -> None:
        log.warning("cache.disabled", path=str(self.path), error=str(exc),
                    detail="going on without the cache file for the rest of this run")
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
        self.db = None

    # -- entries --------------------------------------------------------------------------

    def get(self, namespace: str, parts: Mapping[str, Any]) -> Any:
        key = digest_parts(parts)
        if (namespace, key) in self.memory:
            return self.memory[(namespace, key)]
        if self.db is None:
            return None
        try:
            row = self.db.execute(
                "SELECT value FROM entries WHERE namespace = ? AND key = ?", (namespace, key)
            ).fetchone()
        except sqlite3.Error as exc:
            self._fail(exc)
            return None
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except ValueError:
            return None  # an entry edited by hand: ask again
        self.memory[(namespace, key)] = value
        return value

    def put(self, namespace: str, parts: Mapping[str, Any], value: Any) -> None:
        key = digest_parts(parts)
        self.memory[(namespace, key)] = value
        if self.db is None:
            return
        try:
            with self.db:  # one transaction per entry: committed whole, or not at all
                self.db.execute(
                    "INSERT OR REPLACE INTO entries (namespace, key, parts, value, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (namespace, key, canonical(parts), canonical(value), time.time()),
                )
        except sqlite3.Error as exc:
            self._fail(exc)

    def count(self, namespace: str | None = None) -> int:
        """Entries on disk (in memory when there is no file), for summaries and tests."""
        if self.db is None:
            return sum(1 for ns, _ in self.memory if namespace in (None, ns))
        query, args = "SELECT COUNT(*) FROM entries", ()
        if namespace is not None:
            query, args = query + " WHERE namespace = ?", (namespace,)
        return int(self.db.execute(query, args).fetchone()[0])

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def __enter__(self) -> OfflineCache:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30.0)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL with a WAL: a power cut may lose the last commits, never tear one.
        db.execute("PRAGMA synchronous=NORMAL")
        with db:
            db.execute(_SCHEMA)
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {check[0] if check else 'no answer'}")
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db


def _refuse_foreign(path: Path) -> None:
    """An old JSONL cache (or any text) at the path is the user's file: never move or reuse it."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    if head == SQLITE_MAGIC:
        return
    if head.lstrip()[:1] in (b"{", b"["):
        raise CacheFileError(
            f"{path} is a JSON lines file, not an arena-stream SQLite cache (an old cache? "
            "it is not read, because its keys lack the model settings); "
            "give another cache path or delete the file"
        )
