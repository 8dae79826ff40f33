"""The live leaderboard page: a small read-only aiohttp server beside the faust worker.

It keeps its own view by tailing the ratings, leaderboard, models, judgments and
dead-letter topics without a consumer group, so any worker can serve the whole page whichever
partitions it owns, and several workers can serve it at once. Nothing here
writes to Kafka: every route is a GET.

Routes:

* ``GET /`` - the page (``arena_stream/data/leaderboard.html``, no external resources);
* ``GET /api/leaderboard`` - the view as JSON (see :meth:`LeaderboardView.payload`);
* ``GET /api/events`` - the same JSON as Server-Sent Events, pushed when it changes.

Memory is bounded whatever the topics hold: one latest update per model, the
last snapshot, the last :data:`MAX_VERSIONS` versions, per target version
a rating history decimated to at most :data:`MAX_POINTS` points, per pair
of models three counters of the judge's record (judged, dead-lettered, outages;
see :mod:`arena_stream.ratings.judge_health`), and per judge its health counters
(:mod:`arena_stream.ratings.judge_quality`: a window of recent agreements, margins
in 0.01 steps). Judgments are decoded only as far as their models, verdict and
games' scores.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Any, Protocol

import msgspec
import structlog
from aiohttp import web

from arena_stream.config import Config
from arena_stream.kafka.io import ensure_ready, tail, topic_name
from arena_stream.ratings.judge_health import JudgeMonitor
from arena_stream.ratings.standings import latest_ratings
from arena_stream.schemas import (
    Judgment,
    LeaderboardSnapshot,
    ModelVersion,
    RatingUpdate,
    decode,
)
from arena_stream.streams.stages.evaluate import is_heldout

log = structlog.get_logger(__name__)

TOPIC_KEYS = ("ratings", "leaderboard", "models", "judgments", "deadletter")
MAX_POINTS = 500  # per target version in the history
MAX_VERSIONS = 64  # target versions with a history, and versions listed
MAX_HELDOUT = 20_000  # held-out evaluation judgments kept for the held-out curve
SSE_MIN_INTERVAL_S = 0.5  # at most two pushes a second per client, however busy the stream
SSE_KEEPALIVE_S = 15.0  # a comment line now and then keeps proxies from closing the stream


class Series:
    """A rating history that stays under ``limit`` points however long it runs.

    Keeping only the last N points would lose how a version started; instead
    every ``stride``-th point is kept, and when the list is full every other
    point is dropped and the stride doubles. The curve keeps its whole span at
    an even, coarser resolution, and the newest point is always shown.
    """

    def __init__(self, limit: int = MAX_POINTS) -> None:
        self.limit = max(4, limit)
        self.points: list[tuple[float, float]] = []
        self.stride = 1
        self.seen = 0
        self.last: tuple[float, float] | None = None

    def add(self, x: float, y: float) -> None:
        self.last = (x, y)
        if self.seen % self.stride == 0:
            self.points.append((x, y))
            if len(self.points) >= self.limit:
                self.points = self.points[::2]
                self.stride *= 2
        self.seen += 1

    def export(self) -> list[list[float]]:
        out = [[x, y] for x, y in self.points]
        if self.last is not None and (not self.points or self.points[-1] != self.last):
            out.append([self.last[0], self.last[1]])
        return out


class LeaderboardView:
    """What the page shows, built from the topics' records as they arrive.

    Pure bookkeeping, no I/O, so it is tested without a broker. Records are
    de-duplicated by (topic, partition, offset), which makes re-reading a
    topic from the beginning after a reconnect harmless.
    """

    def __init__(
        self, target: str, *, max_points: int = MAX_POINTS, max_versions: int = MAX_VERSIONS,
        judge: JudgeMonitor | None = None,
    ) -> None:
        self.target_prefix = f"{target}@v"
        self.max_points = max_points
        self.max_versions = max_versions
        self.latest: dict[str, RatingUpdate] = {}
        self.snapshot: LeaderboardSnapshot | None = None
        self.versions: deque[ModelVersion] = deque(maxlen=max_versions)
        self.history: OrderedDict[str, Series] = OrderedDict()
        self.positions: dict[tuple[str, int], int] = {}
        self.judge = judge or JudgeMonitor()
        self.target = target
        self.heldout: OrderedDict[str, Judgment] = OrderedDict()  # battle id -> judgment
        self._heldout_added = 0  # held-out judgments taken so far: the fit's cache key
        self._heldout_fit: tuple[int, list[dict[str, Any]], str] | None = None
        self.updated = 0.0
        self.revision = 0
        self.changed = asyncio.Condition()

    def apply(
        self,
        key: str,
        value: bytes,
        *,
        ts: float = 0.0,
        topic: str = "",
        partition: int = 0,
        offset: int = -1,
    ) -> bool:
        """Take one record of topic ``key``; returns whether the view changed.

        ``ts`` (unix seconds) stands in for an event that carries no time.
        Undecodable records are skipped: the stream dead-letters them, the page
        only has to survive them.
        """
        if offset >= 0:
            if offset <= self.positions.get((topic, partition), -1):
                return False
            self.positions[(topic, partition)] = offset
        try:
            changed = self._apply(key, value, ts)
        except (msgspec.MsgspecError, UnicodeDecodeError) as exc:
            log.debug("web.skip_record", topic=key, error=str(exc))
            return False
        if changed:
            self.updated = time.time()
            self.revision += 1
        return changed

    def _apply(self, key: str, value: bytes, ts: float) -> bool:
        if key == "ratings":
            u = decode(value, RatingUpdate)
            if not u.ts:
                u.ts = ts
            prev = self.latest.get(u.model)
            if prev is None or (u.judgment_offset, u.battles) >= (
                prev.judgment_offset,
                prev.battles,
            ):
                self.latest[u.model] = u
            if u.model.startswith(self.target_prefix):
                self._series(u.model).add(round(u.ts, 3), u.rating)
            return True
        if key == "leaderboard":
            self.snapshot = decode(value, LeaderboardSnapshot)
            return True
        if key == "models":
            v = decode(value, ModelVersion)
            if not v.ts:
                v.ts = ts
            self.versions.append(v)
            return True
        if key == "judgments" and b'"eval:' in value:
            j = decode(value, Judgment)
            if is_heldout(j.prompt_id):
                self.heldout[j.battle_id] = j
                self._heldout_added += 1  # not len(): full, or a battle re-judged, keeps it
                while len(self.heldout) > MAX_HELDOUT:
                    self.heldout.popitem(last=False)
                self.judge.add_record(key, value)
                return True
        if key in ("judgments", "deadletter"):
            # a dead letter of another stage (intake, generation, training) changes nothing
            return self.judge.add_record(key, value)
        return False

    def _series(self, model: str) -> Series:
        series = self.history.get(model)
        if series is None:
            series = self.history[model] = Series(self.max_points)
            while len(self.history) > self.max_versions:  # the oldest versions go first
                self.history.popitem(last=False)
        return series

    def payload(self) -> dict[str, Any]:
        """The JSON the page renders; its shape is the ``/api/leaderboard`` contract."""
        health = self.judge.report()
        heldout = self.heldout_curve()
        return {
            "ratings": [msgspec.to_builtins(s) for s in latest_ratings(self.latest.values())],
            "snapshot": msgspec.to_builtins(self.snapshot) if self.snapshot else None,
            "versions": [
                {
                    "model": f"{v.name}@v{v.version}",
                    "version": v.version,
                    "kind": v.kind,
                    "ts": v.ts,
                    "parent_version": v.parent_version,
                }
                for v in self.versions
            ],
            "history": {model: s.export() for model, s in self.history.items()},
            "judge_health": [msgspec.to_builtins(h) for h in health.players],
            "judges": [msgspec.to_builtins(q) for q in health.judges],
            "judge_warnings": health.warnings,
            "heldout": heldout[0],
            "heldout_verdict": heldout[1],
            "updated": self.updated,
        }

    def heldout_curve(self) -> tuple[list[dict[str, Any]], str]:
        """Each target version's held-out rating, interval and pass rate (refitted when the
        held-out judgments change; see arena_stream/arena/lineage.py)."""
        if not self.heldout:
            return [], ""
        count = self._heldout_added
        if self._heldout_fit is None or self._heldout_fit[0] != count:
            from arena_stream.arena.lineage import build_lineage

            lineage = build_lineage(self.target, models=[], jobs=[],
                                    judgments=list(self.heldout.values()), rounds=100)
            points = [{"model": r.model, "version": r.version,
                       **msgspec.to_builtins(r.heldout)}
                      for r in lineage.versions if r.heldout is not None]
            self._heldout_fit = (count, points, lineage.verdict)
        return self._heldout_fit[1], self._heldout_fit[2]

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()


def _page() -> tuple[bytes, str]:
    """The page's bytes and a Content-Security-Policy that allows exactly its inline script.

    Hashing the one inline script lets the policy forbid every other script
    (and every other origin) without splitting the page into several files.
    """
    html = files("arena_stream").joinpath("data", "leaderboard.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in scripts
    )
    csp = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
    )
    return html.encode("utf-8"), csp


class Service(Protocol):
    """What a worker serves beside the page (arena_stream.streams.telemetry.Telemetry)."""

    def metrics(self) -> bytes: ...

    def healthy(self) -> tuple[bool, str]: ...

    def ready(self) -> tuple[bool, str]: ...


class WebServer:
    """The page's HTTP server and the tail that feeds its view.

    ``port = 0`` in ``[web]`` lets the OS pick a free port; :attr:`port` and
    :attr:`url` tell which one it got once :meth:`start` returns.
    """

    def __init__(self, config: Config, view: LeaderboardView | None = None,
                 service: Service | None = None) -> None:
        self.config = config
        self.service = service  # a worker's /metrics, /healthz, /readyz
        self.view = view or LeaderboardView(config.target.name,
                                            judge=JudgeMonitor.for_config(config))
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._feed: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._page, self._csp = _page()
        self._keys = {topic_name(config, k): k for k in TOPIC_KEYS}

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the web server is not started")
        host = self.config.web.host
        host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        app = web.Application()
        if self.config.web.page:
            app.router.add_get("/", self._index)
            app.router.add_get("/api/leaderboard", self._leaderboard)
            app.router.add_get("/api/events", self._events)
        if self.service is not None:
            app.router.add_get("/metrics", self._metrics)
            app.router.add_get("/healthz", self._healthz)
            app.router.add_get("/readyz", self._readyz)
        app.on_shutdown.append(self._on_shutdown)
        # Long-lived event streams end on shutdown (see _on_shutdown), so a short
        # grace period is enough and stopping the worker is never held up.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.web.host, self.config.web.port)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        self.port = int(self._runner.addresses[0][1])
        if self.config.web.page:
            self._feed = asyncio.create_task(self._follow(), name="arena-web-feed")
        log.info("web.started", url=self.url)

    async def _metrics(self, request: web.Request) -> web.Response:
        assert self.service is not None
        body = await asyncio.to_thread(self.service.metrics)
        return web.Response(body=body, content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def _healthz(self, request: web.Request) -> web.Response:
        assert self.service is not None
        ok, why = self.service.healthy()
        return web.Response(status=200 if ok else 503, text=why + "\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        assert self.service is not None
        ok, why = self.service.ready()
        return web.Response(status=200 if ok else 503, text=why + "\n")

    async def stop(self) -> None:
        self._closing.set()
        if self._feed is not None:
            self._feed.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._feed
        if self._runner is not None:
            await self._runner.cleanup()
        log.info("web.stopped")

    async def _follow(self) -> None:
        """Tail the topics forever; on a broker error, wait and pick up where it left off."""
        while not self._closing.is_set():
            try:
                await ensure_ready(self.config, timeout=None)
                async for record in tail(self.config, *TOPIC_KEYS):
                    key = self._keys.get(record.topic)
                    if key is None or record.value is None:
                        continue
                    if self.view.apply(
                        key,
                        record.value,
                        ts=record.timestamp / 1000.0,
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                    ):
                        await self.view.notify()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("web.tail_failed", error=str(exc))
                await asyncio.sleep(1.0)

    async def _on_shutdown(self, app: web.Application) -> None:
        self._closing.set()
        await self.view.notify()

    async def _index(self, request: web.Request) -> web.Response:
        headers = {
            **self._headers(),
            "Content-Security-Policy": self._csp,
            "Referrer-Policy": "no-referrer",
        }
        return web.Response(
            body=self._page, content_type="text/html", charset="utf-8", headers=headers
        )

    async def _leaderboard(self, request: web.Request) -> web.Response:
        return web.Response(
            body=msgspec.json.encode(self.view.payload()),
            content_type="application/json",
            headers=self._headers(),
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Push the view whenever it changes; throttled, with keep-alive comments."""
        resp = web.StreamResponse(headers={**self._headers(), "Content-Type": "text/event-stream"})
        await resp.prepare(request)
        seen = -1
        with contextlib.suppress(ConnectionResetError):  # the client went away
            while not self._closing.is_set():
                if self.view.revision != seen:
                    seen = self.view.revision
                    data = msgspec.json.encode(self.view.payload())
                    await resp.write(b"data: " + data + b"\n\n")
                    await asyncio.sleep(SSE_MIN_INTERVAL_S)
                    continue
                async with self.view.changed:
                    # Checked under the lock: a change after this point notifies us.
                    if self.view.revision != seen or self._closing.is_set():
                        continue
                    try:
                        await asyncio.wait_for(self.view.changed.wait(), SSE_KEEPALIVE_S)
                    except TimeoutError:
                        await resp.write(b": keep-alive\n\n")
        return resp

    @staticmethod
    def _headers() -> dict[str, str]:
        """Live data: never cached, never content-sniffed."""
        return {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

    async def __aenter__(self) -> WebServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def start_server(config: Config) -> WebServer:
    """Start the page for ``config`` and return the running server (stop it with ``stop``)."""
    server = WebServer(config)
    await server.start()
    return server


@contextlib.asynccontextmanager
async def serving(config: Config) -> AsyncIterator[WebServer]:
    """The page served for the duration of a ``with`` block."""
    async with WebServer(config) as server:
        yield server
