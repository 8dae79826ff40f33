"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

What can be checked here is checked: the compose file parses; every service
has a health check, a restart policy and a pinned image, and waits for what it
depends on to be healthy; the config it mounts loads; the images run as a
non-root user; and the worker image's promise (no training stack) holds: a
worker runs a battle with torch, transformers, TRL, peft, datasets and
sentence-transformers made unimportable.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from arena_stream.config import load
from arena_stream.kafka.io import read_all
from tests.conftest import config_text, length_judge
from tests.helpers import prompt, publish_raw, wait_for
from tests.openai_stub import OpenAIStub

ROOT = Path(__file__).parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
ONE_SHOT = {name for name, s in SERVICES.items() if s.get("profiles")}  # `run --rm` commands
TRAINING_STACK = ("torch", "transformers", "trl", "peft", "datasets", "sentence_transformers",
                  "accelerate")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_health_check_and_a_restart_policy(name: str) -> None:
    service = SERVICES[name]
    check = service.get("healthcheck", {})
    if name in ONE_SHOT:
        assert check == {"disable": True} and service.get("restart") == "no"
        return
    assert check.get("test"), f"{name} has no health check"
    assert check.get("interval") and check.get("retries"), name
    assert service.get("restart") in ("unless-stopped", "always", "on-failure"), name


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_are_pinned(name: str) -> None:
    image = SERVICES[name]["image"]
    repository, _, tag = image.rpartition(":")
    assert repository and tag and tag != "latest", f"{name}: {image} is not pinned"
    assert re.fullmatch(r"v?\d+\.\d+(\.\d+)?([.-][\w.]+)?", tag), f"{name}: {image}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dependencies_are_waited_for_until_healthy(name: str) -> None:
    for dependency, condition in SERVICES[name].get("depends_on", {}).items():
        assert condition == {"condition": "service_healthy"}, (name, dependency)
        assert SERVICES[dependency]["healthcheck"].get("test"), dependency


def test_workers_wait_for_kafka_and_every_model_server_the_config_names() -> None:
    config = load(ROOT / "deploy" / "arena.toml")
    hosts = {spec.base_url.split("//")[1].split(":")[0]
             for spec in [*config.players, config.judge] if spec.base_url}
    assert set(SERVICES["worker"]["depends_on"]) == {"kafka", *hosts}
    # the worker's health check asks the live page, on the port the config serves it
    assert config.web.enabled
    assert f":{config.web.port}/" in " ".join(SERVICES["worker"]["healthcheck"]["test"])


def test_trainer_health_check_is_a_real_check_command() -> None:
    from arena_stream.cli.entry import build_parser

    test = SERVICES["trainer"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "arena-stream", "check"]
    args = build_parser().parse_args(test[2:])  # the flags exist and parse
    assert args.only == {"broker", "model-dir", "checkpoint"}


def test_mounted_configs_load() -> None:
    mounted = {volume.split(":")[0] for s in SERVICES.values() for volume in s.get("volumes", [])
               if ":/config/" in volume}
    assert mounted == {"./deploy/arena.toml"}
    for source in mounted:
        load(ROOT / source)


def test_worker_and_trainer_images_are_built_as_such() -> None:
    assert SERVICES["worker"]["build"]["target"] == "worker"
    assert SERVICES["trainer"]["build"]["target"] == "trainer"
    assert SERVICES["worker"]["image"] != SERVICES["trainer"]["image"]


def _stages(dockerfile: str) -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = ""
    for line in dockerfile.splitlines():
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = match[1]
            stages[current] = []
        elif current and line.strip() and not line.lstrip().startswith("#"):
            stages[current].append(line.strip())
    return stages


def test_images_run_as_a_non_root_user_and_only_the_trainer_has_the_training_stack() -> None:
    stages = _stages((ROOT / "Dockerfile").read_text())
    assert {"worker", "trainer"} <= set(stages)
    for target in ("worker", "trainer"):
        users = [line.split()[1] for line in stages[target] if line.startswith("USER ")]
        assert users and users[-1] not in ("root", "0"), target
        assert stages[target][-1].startswith("CMD"), target
    worker_install = " ".join(line for line in stages["worker"] if "pip install" in line)
    assert "train" not in worker_install and "torch" not in worker_install
    assert any("'.[train]'" in line for line in stages["trainer"])
    assert ".venv" in (ROOT / ".dockerignore").read_text().split()


def test_the_worker_runs_a_battle_without_the_training_stack(broker, tmp_path) -> None:
    """The worker image's promise, kept here: none of the training packages is imported."""
    blocked = ", ".join(repr(m) for m in TRAINING_STACK)
    launcher = (
        "import runpy, sys\n"
        f"for name in ({blocked}):\n"
        "    sys.modules[name] = None  # `import name` now fails as if it were not installed\n"
        f"sys.argv = [{str(ROOT / 'tests' / 'fault_worker.py')!r}] + sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    with OpenAIStub(length_judge, models=["t", "c", "judge"]) as stub:
        text = config_text(bootstrap=broker.address, url=stub.base_url, prefix="slim.",
                           app_id="slim", data_dir=str(tmp_path / "d"))
        path = tmp_path / "arena.toml"
        path.write_text(text)
        config = load(path)
        proc = subprocess.Popen([sys.executable, "-c", launcher, "worker", "--config", str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT)
        try:
            async def battle() -> None:
                await publish_raw(config, [prompt("p1", "hello")])

                async def rated() -> bool:
                    assert proc.poll() is None, proc.communicate()[1][-3000:]
                    return len(await read_all(config, "ratings")) >= 2

                await wait_for(rated, timeout=90)

            asyncio.run(battle())
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=60)
    assert "ModuleNotFoundError" not in err and "Traceback" not in err, err[-3000:]
