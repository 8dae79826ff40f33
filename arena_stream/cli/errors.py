"""What goes wrong for a user, as one line that says what to do about it.

A user mistake (a wrong path, a bad config, a missing optional package) or a
service that cannot be reached (the broker, a model server) is not a bug in
arena-stream, and a traceback only hides the one sentence that matters. Every
command's failure goes through :func:`explain`; what it does not recognise is
a bug, and keeps its traceback so that it can be reported.

Only the standard library is imported here: the CLI's start-up stays fast,
and the classes of optional libraries are looked up only if they are loaded
(an exception of a module that was never imported cannot have been raised).
"""

from __future__ import annotations

import sys


class UserError(Exception):
    """A mistake in how a command was used, found by the command itself (one line)."""


class MissingExtra(UserError):
    """An optional dependency a flag needs is not installed."""

    def __init__(self, what: str, extra: str, module: str) -> None:
        super().__init__(f"{what} needs {module}: pip install 'arena-stream[{extra}]'")
        self.extra = extra
        self.module = module


def require_module(module: str, *, what: str, extra: str) -> None:
    """Fail early (before any work) when ``module`` cannot be imported."""
    from importlib.util import find_spec

    try:
        found = find_spec(module) is not None
    except (ImportError, ValueError):  # a module blocked in sys.modules, or a broken one
        found = False
    if not found or sys.modules.get(module, ...) is None:
        raise MissingExtra(what, extra, module)


def _loaded(module: str, name: str) -> type[BaseException] | None:
    loaded = sys.modules.get(module)
    found = getattr(loaded, name, None) if loaded is not None else None
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def _missing_module(exc: BaseException) -> ModuleNotFoundError | None:
    """The missing module behind ``exc`` (raised directly, or the cause of a clearer error)."""
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, ModuleNotFoundError):
            return candidate
    return None


def explain(exc: BaseException) -> str | None:
    """The user-facing line for ``exc``, or ``None`` when it is a bug (keep the traceback)."""
    from arena_stream.config import ConfigError

    if isinstance(exc, ConfigError | UserError):
        return str(exc)
    for module, name in (("arena_stream.models.clients", "ModelUnavailable"),
                         ("arena_stream.datasets.sources", "InputError"),
                         ("arena_stream.datasets.export", "ExportError"),
                         ("arena_stream.offline.cache", "CacheFileError")):
        known = _loaded(module, name)
        if known is not None and isinstance(exc, known):
            return str(exc)
    missing = _missing_module(exc)
    if missing is not None:
        text = str(exc) if exc is not missing else f"the Python package {missing.name!r} is missing"
        if "pip install" not in text:
            text += " (install it, or the arena-stream extra that provides it)"
        return text
    if isinstance(exc, OSError) and exc.filename is not None:
        where = exc.filename
        if isinstance(exc, FileNotFoundError):
            return f"no such file or directory: {where}"
        if isinstance(exc, PermissionError):
            return f"permission denied: {where}"
        if isinstance(exc, IsADirectoryError):
            return f"{where} is a directory, a file was expected"
        return f"{where}: {exc.strerror or exc}"
    if isinstance(exc, FileNotFoundError):  # raised with a message of our own
        return str(exc)
    kafka_error = _loaded("aiokafka.errors", "KafkaError")
    if kafka_error is not None and isinstance(exc, kafka_error):
        return (f"the Kafka broker failed: {exc}; check that it is running and that "
                "[broker] bootstrap_servers points at it")
    return None
