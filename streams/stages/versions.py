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


class VersionChain:
    """Which published versions are real: 1, 2, 3, ... per player, each the successor of the last.

    The trainer numbers versions one after another, so a record is taken only as
    the successor of the last one taken: a forged version 2**31 (from anyone who
    can write the topic) is ignored instead of pinning every worker to it for
    ever. The chain follows the log, not what this worker managed to load: a
    version that fails to load does not stop the next one from being taken.
    """

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def accept(self, version: ModelVersion) -> bool:
        current = self.last.get(version.name, 0)
        if version.version == current + 1:
            self.last[version.name] = version.version
            return True
        if version.version > current + 1:
            log.warning("models.version_skipped", player=version.name, version=version.version,
                        expected=current + 1)
        return False


def newest_versions(records: Iterable[bytes | None],
                    chain: VersionChain | None = None) -> dict[str, ModelVersion]:
    """The newest real version of each player among ``records`` (unreadable ones skipped)."""
    chain = chain or VersionChain()
    newest: dict[str, ModelVersion] = {}
    for raw in records:
        version = read_version(raw)
        if version is not None and chain.accept(version):
            newest[version.name] = version
    return newest


def read_version(raw: bytes | None) -> ModelVersion | None:
    try:
        return decode(raw or b"", ModelVersion)
    except msgspec.MsgspecError as exc:
        log.warning("models.bad_record", error=str(exc))
        return None


async def apply_version(client: ChatClient, version: ModelVersion) -> bool:
    """Switch ``client`` to ``version`` (one the chain took) if it is newer; True if it did.

    A version that cannot be loaded (a path the model server refuses, a
    directory that is gone) is logged and skipped: the player goes on with the
    version it plays, and the watcher, and the worker's start, never die of it.
    """
    if version.version <= client.version:
        return False
    try:
        await client.use_version(version.version, version.path, version.served_name,
                                 adapter=version.adapter)
    except Exception as exc:
        log.error("model.version_refused", player=version.name, version=version.version,
                  path=version.path, error=f"{type(exc).__name__}: {exc}")
        return False
    log.info("model.swapped", player=version.name, version=version.version, path=version.path,
             round=version.round)
    return True
