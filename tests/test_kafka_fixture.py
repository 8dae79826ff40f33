"""Without Java or Maven the Apache Kafka tests skip and say why; where required they fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_probe(tmp_path: Path, *, required: bool) -> subprocess.CompletedProcess[str]:
    """The probe test in a pytest of its own, with no java or mvn on PATH and no cache."""
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin"),
           "ARENA_STREAM_CACHE": str(tmp_path / "cache")}
    env.pop("ARENA_STREAM_REQUIRE_KAFKA", None)
    if required:
        env["ARENA_STREAM_REQUIRE_KAFKA"] = "1"
    (tmp_path / "empty-bin").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider",
         "tests/kafka_probe.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.mark.parametrize("required", [False, True], ids=["laptop", "ci"])
def test_without_java_and_maven_kafka_tests_skip_or_fail_with_the_reason(
    tmp_path: Path, required: bool
) -> None:
    done = run_probe(tmp_path, required=required)
    out = done.stdout + done.stderr
    assert "Apache Kafka tests need java on PATH" in out, out[-3000:]
    if required:
        assert done.returncode == 1 and "1 error" in out, out[-3000:]  # the fixture failed
    else:
        assert done.returncode == 0 and "1 skipped" in out, out[-3000:]
