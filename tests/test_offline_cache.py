"""The offline cache: keys that hold every setting, reuse when nothing changed, torn writes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgspec
import pytest

from arena_stream.config import JudgeConfig, PlayerConfig
from arena_stream.offline.cache import (
    CacheFileError,
    OfflineCache,
    answer_key,
    chat_template_id,
    model_fingerprint,
)

PLAYER = PlayerConfig(name="p", backend="openai", base_url="http://a/v1", model="m")


def key_of(spec: PlayerConfig, **kwargs: object) -> dict[str, object]:
    return answer_key(model_fingerprint(spec, **kwargs), "q1", "d1")  # type: ignore[arg-type]


@pytest.mark.parametrize("change", [
    {"model": "m2"}, {"backend": "vllm"}, {"base_url": "http://b/v1"}, {"temperature": 0.7},
    {"max_tokens": 17}, {"top_p": 0.9}, {"seed": 3}, {"system_prompt": "Be terse."},
    {"extra_body": {"min_p": 0.1}}, {"quantize": True},
])
def test_every_answer_setting_changes_the_key(tmp_path: Path, change: dict) -> None:
    with OfflineCache(tmp_path / "c.sqlite") as cache:
        cache.put("answer", key_of(PLAYER), "old answer")
        changed = msgspec.structs.replace(PLAYER, **change)
        assert cache.get("answer", key_of(changed)) is None
        assert cache.get("answer", key_of(PLAYER)) == "old answer"


def test_prompt_content_and_version_change_the_key() -> None:
    fp = model_fingerprint(PLAYER)
    assert answer_key(fp, "q1", "d1") != answer_key(fp, "q1", "d2")
    assert answer_key(fp, "q1", "d1") != answer_key(fp, "q2", "d1")
    v1 = model_fingerprint(PLAYER, version=1, path="/models/t/v1")
    v2 = model_fingerprint(PLAYER, version=2, path="/models/t/v2")
    assert v1 != v2 and v1 != fp


def test_settings_that_only_change_the_call_keep_the_key(tmp_path: Path) -> None:
    """Reuse when nothing that changes an answer changed, across processes (reopened file)."""
    path = tmp_path / "c.sqlite"
    with OfflineCache(path) as cache:
        cache.put("answer", key_of(PLAYER), {"text": "kept"})
    calm = msgspec.structs.replace(PLAYER, name="renamed", role="target", timeout_s=5.0,
                                   max_retries=9, concurrency=1, api_key_env="KEY",
                                   price_in_per_mtok=3.0)
    with OfflineCache(path) as cache:
        assert cache.get("answer", key_of(calm)) == {"text": "kept"}
        assert cache.count("answer") == 1


def test_chat_template_of_a_local_model_is_part_of_the_key(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "tokenizer_config.json").write_text('{"chat_template": "A {{ x }}", "x": 1}')
    spec = PlayerConfig(name="p", backend="transformers", model=str(model))
    before = model_fingerprint(spec)
    (model / "tokenizer_config.json").write_text('{"chat_template": "B {{ x }}", "x": 1}')
    assert model_fingerprint(spec) != before
    assert chat_template_id("smollm2") == ""  # a name: the name stands for its template


def test_judge_settings_are_in_its_fingerprint() -> None:
    judge = JudgeConfig(backend="openai", base_url="http://j/v1", model="j")
    assert model_fingerprint(judge) != model_fingerprint(
        msgspec.structs.replace(judge, temperature=0.5))
    assert model_fingerprint(judge) == model_fingerprint(
        msgspec.structs.replace(judge, min_agreement=0.9, timeout_s=1.0))


WRITER = textwrap.dedent("""
    import sys
    from arena_stream.offline.cache import OfflineCache
    cache = OfflineCache(sys.argv[1])
    i = 0
    while True:
        cache.put("answer", {"i": i}, {"text": "x" * 5000, "i": i})
        i += 1
        if i == 50:
            print("ready", flush=True)
""")


def test_a_killed_writer_leaves_every_committed_entry(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # mid-stream: SIGKILL lands inside or between transactions
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with OfflineCache(path) as cache:
        written = cache.count("answer")
        assert written >= 50
        for i in range(written):  # entries are dense: no hole, no half entry
            assert cache.get("answer", {"i": i}) == {"text": "x" * 5000, "i": i}
        cache.put("answer", {"i": "after"}, "still writable")
        assert cache.get("answer", {"i": "after"}) == "still writable"


def test_a_truncated_file_is_set_aside_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with OfflineCache(path) as cache:
        for i in range(200):
            cache.put("answer", {"i": i}, "y" * 2000)
    with sqlite3.connect(path) as db:  # fold the log into the file, as a clean close does
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size // 3)
    with OfflineCache(path) as cache:  # opens, with no crash, and works
        assert cache.get("answer", {"i": 199}) is None
        cache.put("answer", {"i": 0}, "fresh")
        assert cache.get("answer", {"i": 0}) == "fresh"
    assert list(tmp_path.glob("c.sqlite.corrupt-*")), "the broken file is kept for a look"


def test_garbage_is_set_aside_and_an_old_jsonl_cache_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"\x00\x01 not a database at all " * 100)
    with OfflineCache(junk) as cache:
        cache.put("answer", {"k": 1}, "v")
    with OfflineCache(junk) as cache:
        assert cache.get("answer", {"k": 1}) == "v"
    old = tmp_path / "ratings.jsonl"
    old.write_text('{"key": "a", "value": "b"}\n{"key": "c", "val')
    with pytest.raises(CacheFileError, match="not an arena-stream SQLite cache"):
        OfflineCache(old)
    assert old.read_text().startswith('{"key"')  # the user's file is left alone


def test_no_path_keeps_the_cache_in_memory() -> None:
    cache = OfflineCache(None)
    cache.put("judgment", {"b": 1}, {"winner": "tie"})
    assert cache.get("judgment", {"b": 1}) == {"winner": "tie"}
    assert cache.get("answer", {"b": 1}) is None  # namespaces are apart
