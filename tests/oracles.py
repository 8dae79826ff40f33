"""Reference implementations that cannot live in our environment, run in their own venv.

arena-rank (LMArena's ranking package) pins jax versions whose numpy bound
conflicts with ours, so it is installed once into a throwaway virtualenv under
``.arena-stream/oracles/`` (git-ignored; ``ARENA_STREAM_ORACLES`` moves it)
and driven through a small script: battles go in as a Parquet file, results
come back as JSON. Where it cannot be installed (no package index reachable),
the tests that need it skip and say why.
"""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARENA_RANK = "arena-rank==0.1.1"


def _oracle_dir() -> Path:
    return Path(os.environ.get("ARENA_STREAM_ORACLES", ROOT / ".arena-stream" / "oracles"))


def arena_rank_python() -> Path:
    """The Python of a venv with arena-rank installed; skips the test when it cannot be had."""
    home = _oracle_dir() / ARENA_RANK.replace("==", "-")
    python = home / "bin" / "python"
    ready = home / ".installed"
    if ready.is_file():
        return python
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(home)
        subprocess.run([str(python), "-m", "pip", "install", "-q", ARENA_RANK, "pyarrow"],
                       check=True, capture_output=True, text=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        pytest.skip(f"arena-rank could not be installed into {home}: {detail.strip()[-300:]}")
    ready.write_text(ARENA_RANK + "\n")
    return python


def run_arena_rank(script: str, battles_parquet: Path, **options: Any) -> dict[str, Any]:
    """Run ``tests/oracle_scripts/<script>`` with arena-rank on a battles file; its JSON."""
    python = arena_rank_python()
    cmd = [str(python), str(ROOT / "tests" / "oracle_scripts" / script), str(battles_parquet),
           json.dumps(options)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if done.returncode != 0:
        raise AssertionError(f"arena-rank oracle failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])

