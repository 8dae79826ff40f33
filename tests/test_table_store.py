"""Tables on disk (``table_store = "rocksdb"``): the same stream, state kept across restarts."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from arena_stream.audit import audit
from arena_stream.config import ConfigError
from schemas import Generation, RatingUpdate
from tests.helpers import count, events, prompt, publish_raw
from tests.test_restart_audit import run_until


async def test_rocksdb_tables_deduplicate_and_continue_the_book_across_a_restart(
    make_config, stub
) -> None:
    pytest.importorskip("rocksdict", reason="the rocksdb extra is not installed")
    config = msgspec.structs.replace(make_config(stub.base_url), table_store="rocksdb")
    await publish_raw(config, [prompt(f"p{i}", f"q{i}") for i in range(4)])
    await run_until(config, "ratings", 8)
    tables = Path(config.data_dir) / "faust"
    assert any(tables.rglob("*.db")), "no RocksDB files under the data dir"

    # the second worker opens the same files: an old prompt re-sent is recognised
    await publish_raw(config, [prompt("p0", "q0"), prompt("p4", "q4")])
    await run_until(config, "ratings", 10)

    assert await count(config, "accepted") == 5
    gens = await events(config, "generations", Generation)
    assert len({g.id for g in gens}) == 10
    ratings = await events(config, "ratings", RatingUpdate)
    last = {r.model: r for r in ratings}
    assert last["comp"].battles == 5 and last["target@v0"].battles == 5  # the book continued
    report = await audit(config)
    assert report.ok, report.render()


def test_rocksdb_without_the_extra_is_a_clear_config_error(make_config, stub, monkeypatch):
    import sys

    from streams.app import _table_store

    config = msgspec.structs.replace(make_config(stub.base_url), table_store="rocksdb")
    monkeypatch.setitem(sys.modules, "rocksdict", None)  # as if not installed
    with pytest.raises(ConfigError, match="rocksdb extra"):
        _table_store(config)
