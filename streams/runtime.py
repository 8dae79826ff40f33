"""What the agents share in one worker process: model clients, the judge, counters, versions.

Clients are created lazily so a worker only loads the models its agents use.
"""

from __future__ import annotations

import collections
import weakref
from typing import Any

from arena_stream.config import Config
from arena_stream.judges import Judge, build_judge
from arena_stream.models.clients import ChatClient, build_client
from arena_stream.schemas import ModelVersion
from arena_stream.streams.stages.versions import VersionChain
from arena_stream.streams.telemetry import Telemetry


class Runtime:
    def __init__(
        self,
        config: Config,
        *,
        clients: dict[str, ChatClient] | None = None,
        judge: Judge | None = None,
    ) -> None:
        self.config = config
        self._clients: dict[str, ChatClient] = dict(clients or {})
        self._judge = judge
        self.counters: collections.Counter[str] = collections.Counter()
        self.versions: dict[str, ModelVersion] = {}  # player -> the version it plays now
        self.chain = VersionChain()  # which published versions are real
        self.telemetry = Telemetry()
        self.player_names = frozenset(p.name for p in config.players)
        self._decontaminator: Any = None

    def client(self, player: str) -> ChatClient:
        client = self._clients.get(player)
        if client is None:
            client = self._clients[player] = build_client(self.config.player(player), player)
        return client

    @property
    def judge(self) -> Judge:
        if self._judge is None:
            self._judge = build_judge(self.config.judge, self.config.battles)
        return self._judge

    @property
    def decontaminator(self) -> Any:
        """The test-set filter for intake, or None when ``[decontamination]`` is off."""
        if not self.config.decontamination.against:
            return None
        if self._decontaminator is None:
            from arena_stream.offline.decontaminate import Decontaminator

            self._decontaminator = Decontaminator.from_files(
                self.config.decontamination.against,
                threshold=self.config.decontamination.threshold,
            )
        return self._decontaminator

    def rated_name(self, player: str) -> str:
        """The name ratings use: ``target@v3`` for the target, the plain name otherwise."""
        if self.config.player(player).role == "target":
            return f"{player}@v{self.client(player).version}"
        return player

    def round(self) -> int:
        target = self.versions.get(self.config.target.name)
        return target.round if target else 0

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()


def table_writes_for(event: Any) -> None:
    """Make table writes in this task go to ``event``'s changelog partition.

    faust finds the partition of a table write from the *current event*, a
    context variable it sets while an agent iterates a stream one event at a
    time. Agents that take events in batches (``take_events``) get none set.
    Only the context variable is set here, never the stream's
    ``current_event`` attribute: ``take_events`` reads that attribute, from
    its own task, to know which event it is buffering, and overwriting it
    made it buffer an old event in place of a new one (a judgment never rated).
    """
    from faust.streams import _current_event

    _current_event.set(weakref.ref(event))
