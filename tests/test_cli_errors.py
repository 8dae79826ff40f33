"""CLI failures a user causes or meets are one line each; global flags work anywhere."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from arena_stream.cli.entry import build_parser, main
from arena_stream.cli.errors import explain
from arena_stream.kafka.broker import free_port
from tests.conftest import config_text


def _dead_broker_config(tmp_path: Path, **extra: str) -> Path:
    text = config_text(bootstrap=f"127.0.0.1:{free_port()}", url="http://127.0.0.1:1/v1",
                       prefix="cli.", app_id="cli", data_dir=str(tmp_path / "d"))
    text = text.replace('flavor = "tansu"', 'flavor = "tansu"\nconnect_timeout_s = 1')
    path = tmp_path / "arena.toml"
    path.write_text(text)
    return path


def _battles(tmp_path: Path) -> Path:
    path = tmp_path / "battles.jsonl"
    rows = [{"model_a": "a", "model_b": "b", "winner": w}
            for w in ["model_a", "model_b", "model_a", "tie"]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("argv", [
    ["--log-json", "--log-level", "DEBUG", "replay", "--config", "c", "--topic", "t"],
    ["replay", "--config", "c", "--topic", "t", "--log-json", "--log-level", "debug"],
    ["testset", "build", "--prompts", "p", "--out", "o", "--log-level", "debug", "--log-json"],
])
def test_global_flags_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.log_json is True and args.log_level == "debug"


def test_global_flags_default_when_not_given() -> None:
    args = build_parser().parse_args(["replay", "--config", "c", "--topic", "t"])
    assert args.log_json is False and args.log_level is None


def test_log_json_after_the_subcommand_logs_json(tmp_path, capsys) -> None:
    config = _dead_broker_config(tmp_path)
    assert main(["audit", "--config", str(config), "--log-json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert json.loads(err[0])["event"] == "broker.waiting"
    assert err[-1].startswith("arena-stream audit: error: cannot reach the Kafka broker")


def test_unknown_log_level_is_rejected_with_the_choices(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--log-level", "verbose", "leaderboard", "--battles", "x.jsonl"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'verbose'" in err
    assert "'debug', 'info', 'warning', 'error'" in err


def test_version(capsys) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"arena-stream {version('arena-stream')}"


def test_plot_without_matplotlib_is_one_line_before_any_work(tmp_path, capsys,
                                                             monkeypatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an import of a missing one does
    out = tmp_path / "board.png"
    code = main(["leaderboard", "--battles", str(_battles(tmp_path)), "--plot", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.strip() == ("arena-stream leaderboard: error: --plot and --history-plot "
                                    "needs matplotlib: pip install 'arena-stream[plot]'")
    assert captured.out == "" and not out.exists()


def test_bad_time_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["replay", "--config", "c.toml", "--topic", "ratings", "--from-time", "yesterday"])
    assert exit_.value.code == 2
    assert "not a time: 'yesterday'" in capsys.readouterr().err


def test_unknown_topic_is_one_line_before_connecting(tmp_path, capsys) -> None:
    config = _dead_broker_config(tmp_path)
    assert main(["replay", "--config", str(config), "--topic", "rating"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # no broker.waiting: the name is checked first
    assert err[0].startswith("arena-stream replay: error: unknown topic 'rating'; known: ")


@pytest.mark.parametrize("argv", [
    ["publish", "{missing}", "--config", "{config}"],
    ["eval", "--testset", "{missing}"],
    ["leaderboard", "--battles", "{missing}"],
])
def test_missing_input_file_is_one_line(argv: list[str], tmp_path, capsys) -> None:
    config = _dead_broker_config(tmp_path)
    missing = tmp_path / "nope.jsonl"
    code = main([a.format(missing=missing, config=config) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert str(missing) in err[0] and "Errno" not in err[0]


def test_a_bug_keeps_its_traceback() -> None:
    assert explain(RuntimeError("internal invariant broken")) is None
    assert explain(KeyError("x")) is None


def test_broker_gone_after_start_is_one_line_without_unclosed_clients(tmp_path) -> None:
    """The broker answered the start-up wait, then went away: no traceback, no client noise."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "hi"}\n')
    script = textwrap.dedent(f"""
        import asyncio, sys
        from arena_stream.cli.entry import main
        from arena_stream.config import loads
        from arena_stream.kafka.broker import EmbeddedBroker
        from arena_stream.kafka.io import ensure_ready
        from tests.conftest import config_text

        broker = EmbeddedBroker().start()
        text = config_text(bootstrap=broker.address, url="http://127.0.0.1:1/v1",
                           prefix="gone.", app_id="gone", data_dir={str(tmp_path / "d")!r})
        open({str(tmp_path / "a.toml")!r}, "w").write(text)
        asyncio.run(ensure_ready(loads(text)))
        broker.stop()
        code = main(sys.argv[1:] + ["--config", {str(tmp_path / "a.toml")!r}])
        import gc; gc.collect()
        sys.exit(code)
    """)
    for argv in (["publish", str(prompts)], ["replay", "--topic", "ratings"]):
        done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True,
                              text=True, timeout=120, cwd=Path(__file__).parents[1])
        assert done.returncode == 2, done.stderr[-3000:]
        assert "Traceback" not in done.stderr and "Unclosed" not in done.stderr, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"arena-stream {argv[0]}: error: the Kafka broker failed: ")
        assert "bootstrap_servers" in last


@pytest.mark.parametrize("command", ["worker", "trainer"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_service_waiting_for_its_broker_stops_on_a_signal(command: str, sig: int,
                                                          tmp_path) -> None:
    config = _dead_broker_config(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "arena_stream.cli", command, "--config",
                             str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # it is waiting once it says so
            if "broker.waiting" in line:
                break
        time.sleep(0.5)
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=30)
    assert code == 0, err
    assert "Traceback" not in err and "Unclosed" not in err
