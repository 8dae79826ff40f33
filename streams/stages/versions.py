"""versions: every worker plays the newest published version of each player.

Trained versions are published on ``models`` (keyed by player name). Every
worker tails that topic from the start with its own group-less consumer, so
each one switches its clients to the newest version whichever partitions it
owns; before the agents start, the worker applies the versions already
published (:func:`newest_versions`), so a restarted worker never answers with
an older version than the newest one. (Holding the agents back until the
watcher caught up was tried and rejected: agents that stall on their first
events at start-up were measured to lose work after a later SIGKILL; see
docs/reliability.md.)
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
import structlog

from arena_stream.models.clients import ChatClient
from arena_stream.schemas import ModelVersion, decode

log = structlog.get_logger(__name__)


def newest_versions(records: Iterable[bytes | None]) -> dict[str, ModelVersion]:
    """The newest version of each player among ``records`` (unreadable ones skipped)."""
    newest: dict[str, ModelVersion] = {}
    for raw in records:
        version = read_version(raw)
        if version is None:
            continue
        if version.name not in newest or version.version > newest[version.name].version:
            newest[version.name] = version
    return newest


def read_version(raw: bytes | None) -> ModelVersion | None:
    try:
        return decode(raw or b"", ModelVersion)
    except msgspec.MsgspecError as exc:
        log.warning("models.bad_record", error=str(exc))
        return None


def is_newer(version: ModelVersion, client: ChatClient) -> bool:
    return version.version > client.version


async def apply_version(client: ChatClient, version: ModelVersion) -> bool:
    """Switch ``client`` to ``version`` if it is newer than what it plays; True if it did."""
    if not is_newer(version, client):
        return False
    await client.use_version(version.version, version.path, version.served_name,
                             adapter=version.adapter)
    log.info("model.swapped", player=version.name, version=version.version, path=version.path,
             round=version.round)
    return True
