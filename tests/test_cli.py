"""The command line: every subcommand has working help, and the CLI starts fast."""

from __future__ import annotations

import subprocess
import sys

import pytest

from arena_stream.cli.entry import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: arena-stream" in capsys.readouterr().out


def test_help_imports_nothing_heavy() -> None:
    code = ("import sys; from arena_stream.cli import build_parser; build_parser(); "
            "print(','.join(m for m in ('torch', 'faust', 'polars', 'transformers') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""


def test_bad_config_is_one_clear_line(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[routing]\nsft_margin = 'x'\n")
    assert main(["ratings", "--config", str(bad)]) == 2
    assert "error:" in capsys.readouterr().err
