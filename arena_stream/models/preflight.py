"""Start-up checks: every model a process will use can be loaded or reached, before any work.

A player whose model does not exist would otherwise fail on every prompt and
fill the dead-letter topic with one identical error per message. A model that
cannot be loaded or reached is a configuration error: it is reported once,
naming the model, why, and what to do, and the process does not start.
Per-message errors (a timeout, a 503 on one request) stay per-message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from arena_stream.config import Config, ConfigError
from arena_stream.models.clients import ChatClient, ModelUnavailable


@dataclass(frozen=True)
class CheckResult:
    """One start-up check: what was checked, whether it passed, and why not."""

    name: str
    ok: bool
    detail: str = ""
    skipped: bool = False  # could not be checked because another check failed (ok is True)

    def line(self) -> str:
        status = "skip" if self.skipped else "ok  " if self.ok else "FAIL"
        return f"{status} {self.name}" + (f": {self.detail}" if self.detail else "")


async def check_client(name: str, client: ChatClient) -> CheckResult:
    try:
        await client.ready()
    except ModelUnavailable as exc:
        detail = exc.reason + (f"; {exc.fix}" if exc.fix else "")
        return CheckResult(name, False, detail)
    except Exception as exc:  # a client that cannot even be asked is as unusable
        return CheckResult(name, False, f"{type(exc).__name__}: {exc}")
    return CheckResult(name, True)


def describe(label: str, spec_backend: str, model: str) -> str:
    return f"{label} ({spec_backend} {model})"


async def check_models(clients: Iterable[tuple[str, ChatClient]]) -> list[CheckResult]:
    """Check every named client concurrently (local models load here, once each)."""
    pairs = list(clients)
    return list(await asyncio.gather(*(check_client(name, c) for name, c in pairs)))


def check_base_checkpoint(config: Config) -> CheckResult | None:
    """The checkpoint training starts from can be found (without loading it)."""
    from arena_stream.models.local import BUNDLED, bundled_gguf_path

    if not config.training.enabled:
        return None
    model = config.training.base_checkpoint or (
        config.target.model if config.target.backend != "openai" else None
    )
    name = f"training base checkpoint ({model})"
    if model is None:
        return CheckResult(
            "training base checkpoint", False,
            "the target is served over HTTP, so [training] base_checkpoint must name the "
            "checkpoint its versions are trained from",
        )
    if model in BUNDLED:
        try:
            bundled_gguf_path(model)
        except RuntimeError as exc:
            return CheckResult(name, False, str(exc))
        return CheckResult(name, True)
    from pathlib import Path

    from arena_stream.models.local import is_hub_id

    if is_hub_id(model):
        return check_hub_model(name, model)
    if not Path(model).expanduser().exists():
        return CheckResult(name, False, f"no such directory: {model}; set [training] "
                           "base_checkpoint to the target's checkpoint directory or hub id")
    return CheckResult(name, True)


def check_hub_model(name: str, repo_id: str) -> CheckResult:
    """A hub model is cached, or (online) exists on the hub; nothing is downloaded here."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from arena_stream.models.local import not_cached_offline

    try:
        snapshot_download(repo_id, local_files_only=True)
        return CheckResult(name, True, "in the local Hugging Face cache")
    except LocalEntryNotFoundError:
        pass
    if constants.HF_HUB_OFFLINE:
        return CheckResult(name, False, not_cached_offline(repo_id))
    from huggingface_hub import HfApi

    try:
        exists = HfApi().repo_exists(repo_id)
    except Exception as exc:  # no network, proxy, DNS: what the user needs to know, once
        return CheckResult(name, False, f"cannot ask the Hugging Face hub about {repo_id!r}: "
                           f"{type(exc).__name__}")
    if not exists:
        return CheckResult(name, False, f"hub model {repo_id!r} does not exist (or is private: "
                           "set HF_TOKEN)")
    return CheckResult(name, True, "on the hub; downloaded when first needed")


def require(results: Iterable[CheckResult]) -> None:
    """Raise one :class:`ConfigError` listing every failed check, one per line."""
    failed = [r for r in results if not r.ok]
    if len(failed) == 1:
        raise ConfigError(f"{failed[0].name}: {failed[0].detail}")
    if failed:
        lines = "\n  ".join(f"{r.name}: {r.detail}" for r in failed)
        raise ConfigError(f"{len(failed)} start-up checks failed:\n  {lines}")


async def require_models(client_of: dict[str, ChatClient]) -> None:
    """Fail at start, once, when a player or the judge cannot be used."""
    named = []
    for label, client in client_of.items():
        spec = client.spec
        named.append((describe(label, spec.backend, spec.model), client))
    require(await check_models(named))
