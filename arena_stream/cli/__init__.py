"""The ``arena-stream`` command line, its live display, plots and live page.

``main`` is the console script; each subcommand is a module of
:mod:`arena_stream.cli.commands`.
"""

from arena_stream.cli.entry import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
