"""The offline cache's cost: one committed transaction per entry, on this machine's disk.

``eval`` and ``testset build`` write one entry per model answer, verdict or
rating, each in its own transaction (WAL, ``synchronous=NORMAL``), so that a
killed run keeps all it finished. This measures what that costs against the
model calls it saves (each of which takes seconds): writes and reads per
second, the file size per entry, and the time to open a full cache::

    python bench/bench_offline_cache.py --entries 20000
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from arena_stream.config import PlayerConfig
from arena_stream.offline.cache import OfflineCache, answer_key, model_fingerprint

ANSWER = "A typical answer of a few sentences, about three hundred characters long. " * 4


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--out", type=Path, help="write the result as JSON here too")
    args = parser.parse_args()
    spec = PlayerConfig(name="p", backend="openai", base_url="http://a/v1", model="m",
                        temperature=0.7, system_prompt="Be helpful.")
    fingerprint = model_fingerprint(spec)
    keys = [answer_key(fingerprint, f"q{i}", f"{i:064x}") for i in range(args.entries)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.sqlite"
        started = time.perf_counter()
        with OfflineCache(path) as cache:
            for key in keys:
                cache.put("answer", key, ANSWER)
        write_s = time.perf_counter() - started
        started = time.perf_counter()
        cache = OfflineCache(path)
        open_s = time.perf_counter() - started
        started = time.perf_counter()
        hits = sum(cache.get("answer", key) is not None for key in keys)
        read_s = time.perf_counter() - started
        cache.close()
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
    result = {
        "entries": args.entries, "hits": hits,
        "writes_per_s": round(args.entries / write_s), "reads_per_s": round(args.entries / read_s),
        "open_s": round(open_s, 4), "bytes_per_entry": round(size / args.entries),
        "python": platform.python_version(), "sqlite": __import__("sqlite3").sqlite_version,
    }
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if hits == args.entries else 1


if __name__ == "__main__":
    sys.exit(main())
