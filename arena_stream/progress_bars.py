"""Progress bars for the long offline commands (eval, testset build, decontaminate, embedding).

A bar goes to stderr and only when stderr is a terminal: stdout stays the
command's result (``--json`` output is read by programs), and a log file or a
CI job's captured stderr is not filled with carriage returns. ``--log-json``
turns bars off too, since its stderr is read by programs. tqdm draws them (it
comes with transformers; without it there are no bars, and nothing else changes).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import IO, Any, Protocol

_forced: bool | None = None  # None: bars when stderr is a terminal


class Progress(Protocol):
    """What the offline code reports to: a count of finished items."""

    def advance(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


def set_enabled(enabled: bool | None) -> None:
    """Force bars on or off for this process; ``None`` restores the terminal test."""
    global _forced
    _forced = enabled


@contextlib.contextmanager
def disabled_if(condition: bool) -> Iterator[None]:
    """No bars inside the block when ``condition`` holds; the earlier setting after it."""
    global _forced
    before = _forced
    if condition:
        _forced = False
    try:
        yield
    finally:
        _forced = before


def enabled(stream: IO[str] | None = None) -> bool:
    if _forced is not None:
        return _forced
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class _Bar:
    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


class progress_bar:  # used like a function: a context manager
    """``with progress_bar(total, "answers") as bar: ... bar.advance()``.

    ``file`` is stderr unless given (tests pass a buffer and force bars on).
    """

    def __init__(self, total: int, desc: str, *, unit: str = "it",
                 file: IO[str] | None = None) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file
        self.progress: Progress = _Silent()

    def __enter__(self) -> Progress:
        stream = self.file or sys.stderr
        if self.total > 0 and enabled(stream):
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover - tqdm comes with transformers
                return self.progress
            self.progress = _Bar(tqdm(total=self.total, desc=self.desc, unit=self.unit,
                                      file=stream, dynamic_ncols=True, leave=True))
        return self.progress

    def __exit__(self, *_: object) -> None:
        self.progress.close()
