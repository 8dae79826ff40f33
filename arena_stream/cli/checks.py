"""What ``arena-stream check`` verifies, and what the services verify before they start.

A configuration mistake found at start costs one line; found later it costs a
dead letter per message (a missing API key), a training job that fails after
an hour of battles (a model directory that cannot be written), or a worker
that waits for a broker that will never answer. So the checks are:

- the config: parsed and range-checked (:func:`arena_stream.config.parse`);
- the environment: every variable the config names for a secret is set, and
  every file it names (TLS, test sets, judge template) exists;
- the model directory is writable (when training is on), the checkpoint
  training starts from can be found, and the experiment trackers
  ``[training] report_to`` names are installed;
- the broker answers, and every player and the judge can answer.

``worker``, ``trainer`` and ``run`` run the environment and directory checks
before anything else (:func:`require_environment`); the worker checks its
models itself once its broker answers, and the trainer its base checkpoint.
Each check is one :class:`~arena_stream.models.preflight.CheckResult`, one line.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Literal

from arena_stream.config import Config, ModelConfig
from arena_stream.models.preflight import CheckResult, describe, require

Service = Literal["worker", "trainer", "run", "check"]


def secret_checks(config: Config, service: Service) -> list[CheckResult]:
    """Every environment variable holding a secret this service needs is set."""
    wanted: list[tuple[str, str]] = []
    if service != "trainer":  # the trainer talks to no model server
        wanted += [(p.api_key_env, f"players[{p.name}] api_key_env")
                   for p in config.players if p.api_key_env]
        if config.judge.api_key_env:
            wanted.append((config.judge.api_key_env, "judge api_key_env"))
    if config.broker.sasl_password_env:
        wanted.append((config.broker.sasl_password_env, "broker sasl_password_env"))
    results = []
    for variable, what in dict.fromkeys(wanted):
        name = f"environment variable {variable}"
        if os.environ.get(variable) is None:
            results.append(CheckResult(name, False, f"not set ({what}); export it where this "
                                       "command runs, or fix the name in the config"))
        else:
            results.append(CheckResult(name, True))
    return results


def file_checks(config: Config) -> list[CheckResult]:
    """Every file the config names exists: TLS material, test sets, a judge template."""
    from arena_stream.datasets.prompts import resolve_source
    from arena_stream.judges.templates import BUILTIN_TEMPLATES

    heldout = config.evaluation.heldout
    named = [(resolve_source(heldout) if heldout else None, "evaluation heldout"),
             (config.broker.ssl_cafile, "broker ssl_cafile"),
             (config.broker.ssl_certfile, "broker ssl_certfile"),
             (config.broker.ssl_keyfile, "broker ssl_keyfile"),
             *((path, "decontamination against") for path in config.decontamination.against)]
    template = config.judge.template
    if template and template not in BUILTIN_TEMPLATES:
        named.append((template, "judge template"))
    results = []
    for path, what in named:
        if not path:
            continue
        ok = Path(path).expanduser().is_file()
        results.append(CheckResult(f"file {path} ({what})", ok,
                                   "" if ok else "no such file; fix the path in the config"))
    return results


def model_dir_check(config: Config) -> CheckResult | None:
    """Trained versions can be written under ``[training] model_dir`` (nothing is created).

    A directory that does not exist yet is fine when it can be created: its
    nearest existing parent must be a writable directory.
    """
    if not config.training.enabled:
        return None
    path = Path(config.training.model_dir).expanduser().absolute()
    name = f"model directory {config.training.model_dir}"
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fix = "set [training] model_dir to a directory this user can write"
    if not existing.is_dir():
        return CheckResult(name, False, f"{existing} is not a directory; {fix}")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".arena-stream-check-"):
            pass
    except OSError as exc:
        return CheckResult(name, False, f"{existing} is not writable ({exc.strerror or exc}); "
                           f"{fix}")
    return CheckResult(name, True)


def tracking_check(config: Config) -> CheckResult | None:
    """The experiment trackers ``[training] report_to`` names are installed where jobs run."""
    if not config.training.enabled or config.training.report_to == "none":
        return None
    from arena_stream.trainers.service import tracking_problems

    report_to = config.training.report_to
    shown = report_to if isinstance(report_to, str) else ", ".join(report_to)
    problem = tracking_problems(config)
    return CheckResult(f"experiment tracking ({shown})", problem is None, problem or "")


def environment_checks(config: Config, service: Service) -> list[CheckResult]:
    """The checks that need no network: secrets, files, the model directory, trackers."""
    results = secret_checks(config, service) + file_checks(config)
    if service in ("trainer", "run", "check"):
        for found in (model_dir_check(config), tracking_check(config)):
            if found is not None:
                results.append(found)
    return results


def require_environment(config: Config, service: Service) -> None:
    """For services at start: raise one ConfigError listing every failed check."""
    require(environment_checks(config, service))


async def broker_check(config: Config) -> CheckResult:
    """The broker answers within ``[broker] connect_timeout_s``."""
    from arena_stream.kafka.broker import BrokerUnavailable, wait_for_broker

    address = config.broker.bootstrap_servers
    if not address:
        return CheckResult("broker", True, "embedded (started by `arena-stream run`)")
    try:
        await wait_for_broker(config, timeout=config.broker.connect_timeout_s)
    except BrokerUnavailable as exc:
        return CheckResult(f"broker {address}", False, str(exc))
    return CheckResult(f"broker {address}", True)


async def model_checks(config: Config) -> list[CheckResult]:
    """Every player and the judge answer (servers reached, local models loaded)."""
    from arena_stream.models.clients import ChatClient, build_client
    from arena_stream.models.preflight import check_client

    specs = [(f"player {p.name}", p) for p in config.players] + [("judge", config.judge)]

    async def one(label: str, spec: ModelConfig) -> CheckResult:
        name = describe(label, spec.backend, spec.model)
        if spec.api_key_env and os.environ.get(spec.api_key_env) is None:
            return CheckResult(name, True, f"not checked without ${spec.api_key_env}",
                               skipped=True)  # its own line already says what is missing
        try:
            client: ChatClient = build_client(spec, label)
        except Exception as exc:  # a backend that cannot even be built (vllm not installed)
            return CheckResult(name, False, str(exc))
        try:
            return await check_client(name, client)
        finally:
            await client.aclose()

    return list(await asyncio.gather(*(one(label, spec) for label, spec in specs)))


async def run_checks(config: Config, only: frozenset[str] | set[str]) -> list[CheckResult]:
    """The named checks (secrets, files, model-dir, checkpoint, broker, models), in that order.

    The network checks (broker, models) run concurrently: a dead server costs its
    start-up timeout once, not once per check.
    """
    from arena_stream.models.preflight import check_base_checkpoint

    results = secret_checks(config, "check") if "secrets" in only else []
    results += file_checks(config) if "files" in only else []
    for name, check in (("model-dir", model_dir_check), ("checkpoint", check_base_checkpoint)):
        found = check(config) if name in only else None
        if found is not None:
            results.append(found)
    remote = await asyncio.gather(
        broker_check(config) if "broker" in only else _nothing(),
        model_checks(config) if "models" in only else _nothing(),
    )
    for found in remote:
        results.extend(found if isinstance(found, list) else [found] if found else [])
    return results


async def _nothing() -> None:
    return None
