"""Progress bars of the offline commands: on a terminal's stderr only, never in results."""

from __future__ import annotations

import io

import numpy as np
import pytest

from arena_stream import progress_bars
from arena_stream.progress_bars import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_draws_on_a_terminal_and_nowhere_else() -> None:
    tty = Terminal()
    with progress_bar(5, "answers", unit="answer", file=tty) as bar:
        for _ in range(5):
            bar.advance()
    assert "answers" in tty.getvalue() and "5/5" in tty.getvalue()
    piped = io.StringIO()  # a file or a pipe: no bar
    with progress_bar(5, "answers", file=piped) as bar:
        bar.advance(5)
    assert piped.getvalue() == ""
    empty = Terminal()
    with progress_bar(0, "nothing to do", file=empty):
        pass
    assert empty.getvalue() == ""


def test_log_json_turns_bars_off_for_its_command_only() -> None:
    tty = Terminal()
    with progress_bars.disabled_if(True), progress_bar(3, "x", file=tty) as bar:
        bar.advance(3)
    assert tty.getvalue() == ""
    with progress_bar(3, "x", file=tty) as bar:  # the next command draws again
        bar.advance(3)
    assert "3/3" in tty.getvalue()


def test_bars_can_be_forced_off() -> None:
    progress_bars.set_enabled(False)
    try:
        tty = Terminal()
        with progress_bar(3, "x", file=tty) as bar:
            bar.advance(3)
        assert tty.getvalue() == ""
    finally:
        progress_bars.set_enabled(None)


def test_embedding_with_a_bar_gives_the_same_vectors(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from arena_stream.models.embeddings import get_embedder

    texts = [f"prompt number {i} about {'cats' if i % 2 else 'compilers'}" for i in range(40)]
    embedder = get_embedder(batch_size=2)  # chunks of 16 texts: three chunks
    plain = embedder.encode(texts)
    progress_bars.set_enabled(True)
    try:
        chunked = embedder.encode(texts, desc="embedding")
    finally:
        progress_bars.set_enabled(None)
    np.testing.assert_allclose(chunked, plain, atol=1e-5)
    captured = capsys.readouterr()
    assert "embedding" in captured.err and "40/40" in captured.err
    assert captured.out == ""
