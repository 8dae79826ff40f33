"""Check a configuration and everything it points at, one line per check.

In order: the config itself (unknown keys with a suggestion, values out of
range, with players named), the environment variables holding secrets, the
files it names, the model directory (writable), the checkpoint training
starts from, the broker (within ``[broker] connect_timeout_s``), and every
player and the judge (servers reached and serving the model, local models
loaded). A typo in the config does not stop the other checks: the key is left
at its default for them. ``--only`` limits the checks after the config's own
(a container health check: ``--only broker,model-dir``). Exit status 0 when
every check passed, 1 otherwise.

``--schema`` prints the config's JSON Schema instead, for editors: save it
and put ``#:schema ./arena.schema.json`` at the top of the TOML file (Taplo,
Even Better TOML) to get completion, ranges and defaults while typing.
"""

from __future__ import annotations

import argparse

CHECKS = ("secrets", "files", "model-dir", "checkpoint", "broker", "models")


def _only(text: str) -> frozenset[str]:
    chosen = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(chosen - set(CHECKS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown check(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(CHECKS)}")
    return chosen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", help="TOML configuration file to check")
    what.add_argument("--schema", action="store_true",
                      help="print the config's JSON Schema (for editors) and exit")
    parser.add_argument("--only", type=_only, metavar="CHECK,...",
                        help=f"after the config, only these checks ({', '.join(CHECKS)}); "
                        "e.g. a container health check: --only broker,model-dir")


def main(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import sys
    from pathlib import Path

    from arena_stream.config import ConfigError, json_schema, parse

    if args.schema:
        print(json.dumps(json_schema(), indent=2))
        return 0
    from arena_stream.cli.checks import run_checks
    from arena_stream.models.preflight import CheckResult

    path = Path(args.config)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    config, problems = parse(path.read_text(encoding="utf-8"))
    results = [CheckResult(f"config {path}", False, p) for p in problems]
    if not problems:
        results.append(CheckResult(f"config {path}", True))

    def show(found: list[CheckResult]) -> None:
        for result in found:
            print(result.line(), flush=True)

    show(results)
    if config is None:
        print("(the config cannot be used as it is: the other checks did not run)",
              file=sys.stderr)
        return 1
    rest = asyncio.run(run_checks(config, args.only or frozenset(CHECKS)))
    show(rest)
    return 0 if all(r.ok for r in [*results, *rest]) else 1
