"""Models by Hugging Face hub id, the user's HF_HUB_OFFLINE respected, whole-model versions.

The hub is unreachable here, so a hub id is resolved from a cache laid out the
way the hub library lays it out (``models--OWNER--NAME/refs/main`` and
``snapshots/<commit>/``), holding the bundled SmolLM2 checkpoint. The
library's environment (``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``) is read when it is
imported, so those tests run in a child process with their own environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arena_stream.config import ModelConfig
from arena_stream.models.clients import OpenAIClient, TransformersClient
from arena_stream.models.local import is_hub_id, resolve_checkpoint
from arena_stream.models.retry import CallFailed
from arena_stream.trainers.service import child_env
from tests.conftest import length_judge
from tests.openai_stub import OpenAIStub

ROOT = Path(__file__).parents[1]
REPO = "arena-test/smollm2-135m"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache(root: Path) -> Path:
    """A hub cache holding REPO: the bundled checkpoint's files, linked as the hub links blobs."""
    source = resolve_checkpoint("smollm2")
    repo = root / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for item in source.iterdir():
        (snapshot / item.name).symlink_to(item)
    return snapshot


def _run(code: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("model, hub", [
    ("Qwen/Qwen2.5-0.5B-Instruct", True), ("gpt2", True), ("/models/target", False),
    ("./checkpoints/x", False), ("~/models/x", False), ("a/b/c", False), ("../x", False),
])
def test_what_counts_as_a_hub_id(model: str, hub: bool) -> None:
    assert is_hub_id(model) is hub


def test_hub_id_resolves_from_the_local_cache(tmp_path: Path) -> None:
    snapshot = _hub_cache(tmp_path / "hub")
    code = (
        "from arena_stream.models.local import resolve_checkpoint, load_tokenizer\n"
        "from arena_stream.config import loads\n"
        "from arena_stream.models.preflight import check_base_checkpoint\n"
        f"print(resolve_checkpoint({REPO!r}))\n"
        f"print(load_tokenizer({REPO!r}).eos_token)\n"
        "config = loads('''[[players]]\\nname = 't'\\nrole = 'target'\\n"
        "backend = 'openai'\\nbase_url = 'http://x/v1'\\nmodel = 't'\\n"
        "[[players]]\\nname = 'c'\\nbackend = 'openai'\\nbase_url = 'http://x/v1'\\n"
        f"model = 'c'\\n[training]\\nbase_checkpoint = {REPO!r}\\n''')\n"
        "print(check_base_checkpoint(config).line())\n"
    )
    done = _run(code, {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    path, eos, check = done.stdout.strip().splitlines()
    assert Path(path) == snapshot
    assert eos == "<|im_end|>"  # the checkpoint's own generation config was read
    assert check == f"ok   training base checkpoint ({REPO}): in the local Hugging Face cache"


def test_hub_id_not_cached_offline_is_one_line_naming_it(tmp_path: Path) -> None:
    model = "Qwen/Qwen2.5-0.5B-Instruct"
    with OpenAIStub(length_judge, models=["c", "judge"]) as stub:
        config = tmp_path / "arena.toml"
        config.write_text(f"""
[[players]]
name = "target"
role = "target"
backend = "transformers"
model = "{model}"

[[players]]
name = "comp"
backend = "openai"
base_url = "{stub.base_url}"
model = "c"

[judge]
backend = "openai"
base_url = "{stub.base_url}"
model = "judge"

[training]
model_dir = "{tmp_path / 'models'}"
""")
        env = {"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
        check = _run(f"from arena_stream.cli.entry import main; import sys; "
                     f"sys.exit(main(['check', '--config', {str(config)!r}]))", env)
        run = _run(f"from arena_stream.cli.entry import main; import sys; "
                   f"sys.exit(main(['run', '--config', {str(config)!r}, '--limit', '1']))", env)
    failed = [line for line in check.stdout.splitlines() if line.startswith("FAIL")]
    assert check.returncode == 1 and len(failed) == 2, check.stdout + check.stderr
    not_cached = (f"hub model '{model}' is not in the local Hugging Face cache "
                  f"({tmp_path / 'empty'}) and HF_HUB_OFFLINE is set: download it first "
                  f"(hf download {model}) or unset HF_HUB_OFFLINE")
    assert failed[0].startswith(f"FAIL training base checkpoint ({model}): ")
    assert failed[1].startswith(f"FAIL player target (transformers {model}): ")
    assert all(not_cached in line for line in failed)
    assert "Traceback" not in check.stderr
    err = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(err) == 1, run.stderr[-3000:]
    assert f"hub model '{model}' is not in the local Hugging Face cache" in err[0]


@pytest.mark.slow
def test_a_player_by_hub_id_answers(tmp_path: Path) -> None:
    _hub_cache(tmp_path / "hub")
    code = (
        "import asyncio\n"
        "from arena_stream.config import ModelConfig\n"
        "from arena_stream.models.clients import build_client\n"
        f"client = build_client(ModelConfig(model={REPO!r}, max_tokens=8), 'p')\n"
        "async def main():\n"
        "    await client.ready()\n"
        "    answer = await client.complete([{'role': 'user', 'content': 'Say hi.'}])\n"
        "    print('ANSWER', bool(answer.text.strip()))\n"
        "asyncio.run(main())\n"
    )
    done = _run(code, {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ANSWER True" in done.stdout


def test_the_users_hf_hub_offline_reaches_training_unchanged(monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert "HF_HUB_OFFLINE" not in child_env()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert child_env()["HF_HUB_OFFLINE"] == "0"
    source = (ROOT / "trainers" / "__main__.py").read_text()
    assert "HF_HUB_OFFLINE" not in source


def _full_checkpoint(path: Path) -> Path:
    """A whole-model version as lora = false saves one: the base checkpoint's files."""
    path.mkdir()
    for item in resolve_checkpoint("smollm2").iterdir():
        (path / item.name).symlink_to(item)
    return path


def test_openai_whole_version_is_used_once_served_never_as_an_adapter(tmp_path: Path) -> None:
    full = tmp_path / "v1"
    full.mkdir()
    (full / "config.json").write_text(json.dumps({"model_type": "llama"}))
    spec = ModelConfig(backend="openai", model="t", base_url="", max_retries=0)

    async def use(served: list[str]) -> tuple[OpenAIClient, list[str]]:
        with OpenAIStub(length_judge, models=served) as stub:
            client = OpenAIClient(msgspec_replace(spec, base_url=stub.base_url), "target")
            try:
                await client.use_version(1, str(full), "target-v1")
            finally:
                await client.aclose()
            return client, stub.paths()

    client, paths = asyncio.run(use(["t", "target-v1"]))
    assert client.served_model == "target-v1" and client.version == 1
    assert not any("load_lora_adapter" in p for p in paths)
    with pytest.raises(CallFailed) as err:
        asyncio.run(use(["t"]))
    assert f"serve it as 'target-v1' (vllm serve {full} --served-model-name target-v1)" in str(
        err.value)


def msgspec_replace(spec: ModelConfig, **changes: object) -> ModelConfig:
    import msgspec

    return msgspec.structs.replace(spec, **changes)


@pytest.mark.slow
def test_transformers_whole_version_is_reloaded_not_an_adapter(tmp_path: Path) -> None:
    full = _full_checkpoint(tmp_path / "target-v1")

    async def play() -> tuple[TransformersClient, str]:
        client = TransformersClient(ModelConfig(model="smollm2", max_tokens=8), "target")
        await client.use_version(1, str(full))
        answer = await client.complete([{"role": "user", "content": "Say hi."}])
        return client, answer.text

    client, text = asyncio.run(play())
    assert client.engine.name == str(full) and client.engine is not client.base_engine
    assert client.adapter is None and client.version == 1
    assert client.base_engine._pending_adapters == {}  # nothing was put on the shared base
    assert text.strip()
