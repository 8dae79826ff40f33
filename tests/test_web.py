"""The live leaderboard page: its view, its JSON, and the page itself in headless Chromium.

The server tails the topics like any outside client, so these tests run the
real worker on the session's broker with ``[web] enabled`` and look at what a
user would see. The browser test drives Chromium over the DevTools protocol
(plain JSON over a websocket), and needs the ``chromium`` binary that
``scripts/ensure-chromium`` installs; it is skipped with a reason without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from arena_stream.schemas import (
    DeadLetter,
    LeaderboardRow,
    LeaderboardSnapshot,
    ModelVersion,
    RatingUpdate,
)
from arena_stream.streams.worker import running_worker, wait_until_ready
from arena_stream.web.live import LeaderboardView, Series
from tests.helpers import prompt, publish_raw, wait_for

WEB = "\n[web]\nenabled = true\nport = 0\n"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def rating(model: str, battles: int, value: float, offset: int, ts: float = 0.0) -> bytes:
    return msgspec.json.encode(
        RatingUpdate(
            model=model,
            rating=value,
            battles=battles,
            battle_id=f"b{offset}",
            delta=1.0,
            opponent="comp",
            outcome=1.0,
            wins=battles,
            judgment_offset=offset,
            ts=ts,
        )
    )


# -- the view, without a broker ----------------------------------------------------------


def test_view_keeps_latest_ratings_versions_snapshot_and_history() -> None:
    view = LeaderboardView("target", max_points=10)
    for i in range(3):
        assert view.apply(
            "ratings",
            rating("target@v0", i + 1, 990.0 - i, i, ts=100.0 + i),
            topic="r",
            offset=2 * i,
        )
        assert view.apply(
            "ratings",
            rating("comp", i + 1, 1010.0 + i, i, ts=100.0 + i),
            topic="r",
            offset=2 * i + 1,
        )
    assert not view.apply("ratings", rating("comp", 9, 0.0, 0), topic="r", offset=3)  # seen
    assert not view.apply("ratings", b"{not json", topic="r", offset=6)  # survived, skipped
    view.apply(
        "models",
        msgspec.json.encode(
            ModelVersion(
                name="target", version=1, parent_version=0, path="/m/1", job_id="j1", kind="sft"
            )
        ),
        ts=150.0,
    )
    view.apply("ratings", rating("target@v1", 1, 1005.0, 3, ts=160.0))
    view.apply(
        "leaderboard",
        msgspec.json.encode(
            LeaderboardSnapshot(
                method="bt",
                judgments=4,
                rows=[
                    LeaderboardRow(
                        model="comp", rating=1010.0, lower=1000.0, upper=1020.0, battles=4, rank=1
                    )
                ],
            )
        ),
    )

    data = json.loads(msgspec.json.encode(view.payload()))
    assert [(r["model"], r["battles"], r["rank"]) for r in data["ratings"]] == [
        ("comp", 3, 1),
        ("target@v1", 1, 2),
        ("target@v0", 3, 3),
    ]
    assert set(data["ratings"][0]) == {
        "model",
        "rating",
        "battles",
        "wins",
        "losses",
        "ties",
        "rank",
    }
    assert data["versions"] == [
        {"model": "target@v1", "version": 1, "kind": "sft", "ts": 150.0, "parent_version": 0}
    ]
    assert data["snapshot"]["rows"][0]["lower"] == 1000.0
    assert data["history"] == {
        "target@v0": [[100.0, 990.0], [101.0, 989.0], [102.0, 988.0]],
        "target@v1": [[160.0, 1005.0]],
    }
    assert data["updated"] > 0


def test_view_counts_the_judges_dead_letters_per_player() -> None:
    from tests.test_judge_health import dead

    view = LeaderboardView("target")
    offset = 0
    for n in range(6):
        for a, b in [("target@v0", "c1"), ("target@v0", "c2"), ("c1", "c2")]:
            offset += 1
            bid = f"{n}{a}{b}"
            if "c2" in (a, b):  # every battle of c2 is dead-lettered by the judge
                record = msgspec.json.encode(dead(a, b, bid))
                assert view.apply("deadletter", record, topic="d", offset=offset)
            else:
                record = msgspec.json.encode({"battle_id": bid, "model_a": a, "model_b": b,
                                              "winner": "tie", "games": []})
                assert view.apply("judgments", record, topic="j", offset=offset)
    intake = DeadLetter(stage="intake", reason="invalid_json", error="", topic="p", original="{")
    assert not view.apply("deadletter", msgspec.json.encode(intake), topic="d", offset=99)
    assert not view.apply("judgments", b"{not json", topic="j", offset=100)

    health = {h["model"]: h for h in json.loads(msgspec.json.encode(view.payload()))
              ["judge_health"]}
    assert health["c2"]["suppression_suspected"] and health["c2"]["dead_letters"] == 12
    assert not health["c1"]["suppression_suspected"] and health["c1"]["judged"] == 6
    assert not health["target@v0"]["suppression_suspected"]


def test_view_reports_each_judges_health_and_warns_under_the_floor() -> None:
    from arena_stream.ratings.judge_health import JudgeMonitor
    from arena_stream.ratings.judge_quality import AgreementFloor
    from tests.test_judge_quality import biased, sound

    floor = AgreementFloor(min_agreement=0.6, min_judgments=10, window=20)
    view = LeaderboardView("target", judge=JudgeMonitor(floor, ("big", "t1")))
    for i in range(12):
        assert view.apply("judgments", msgspec.json.encode(biased(f"b{i}")), topic="j",
                          offset=2 * i)
        assert view.apply("judgments", msgspec.json.encode(sound(f"s{i}", judge="fair")),
                          topic="j", offset=2 * i + 1)
    data = json.loads(msgspec.json.encode(view.payload()))
    judges = {q["judge"]: q for q in data["judges"]}
    assert judges["big"]["agreement"] == 0.0 and judges["big"]["first_position_rate"] == 1.0
    assert judges["fair"]["agreement"] == 1.0 and judges["fair"]["warning"] == ""
    assert data["judge_warnings"] == [judges["big"]["warning"]]
    assert "agree on 0% of the last 12 battles" in judges["big"]["warning"]


def test_history_is_bounded_but_spans_the_whole_run() -> None:
    series = Series(limit=50)
    for i in range(10_000):
        series.add(float(i), float(i))
    points = series.export()
    assert len(points) <= 51
    assert points[0] == [0.0, 0.0] and points[-1] == [9999.0, 9999.0]
    assert all(a[0] < b[0] for a, b in itertools.pairwise(points))


# -- the server beside the real worker --------------------------------------------------


@contextlib.asynccontextmanager
async def worker_with_page(config: Any) -> AsyncIterator[str]:
    async with running_worker(config) as app:
        await wait_until_ready(app)
        yield app.web.url


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        return await resp.json()


async def test_json_lists_the_players_after_judgments(make_config, stub) -> None:
    config = make_config(stub.base_url, extra=WEB)
    await publish_raw(config, [prompt(f"w{i}", f"question {i}") for i in range(2)])
    async with worker_with_page(config) as url, aiohttp.ClientSession() as session:
        assert config.web.port == 0 and not url.endswith(":0/")

        async def rated() -> bool:
            data = await get_json(session, url + "api/leaderboard")
            return {(r["model"], r["battles"]) for r in data["ratings"]} == {
                ("target@v0", 2),
                ("comp", 2),
            }

        await wait_for(rated, timeout=40)
        data = await get_json(session, url + "api/leaderboard")
        assert [r["rank"] for r in data["ratings"]] == [1, 2]
        assert data["ratings"][0]["model"] == "comp"  # the judge prefers the longer answer
        assert data["ratings"][0]["wins"] == 2 and data["ratings"][1]["losses"] == 2
        assert [p[1] for p in data["history"]["target@v0"]][-1] == data["ratings"][1]["rating"]
        assert data["versions"] == [] and data["updated"] > 0

        async with session.get(url) as resp:
            page = await resp.text()
            assert resp.status == 200 and resp.content_type == "text/html"
            assert "script-src 'sha256-" in resp.headers["Content-Security-Policy"]
            assert 'id="ratings"' in page and 'src="' not in page and 'href="http' not in page
        async with session.post(url + "api/leaderboard") as resp:
            assert resp.status == 405  # read-only
        async with session.get(url + "api/events") as resp:
            assert resp.content_type == "text/event-stream"
            line = await asyncio.wait_for(resp.content.readline(), 5)
            assert json.loads(line.removeprefix(b"data: "))["ratings"]


# -- the page in headless Chromium ------------------------------------------------------


def chromium_binary() -> str | None:
    candidates = [
        os.environ.get("ARENA_CHROMIUM"),
        "chromium",
        "chromium-browser",
        "google-chrome-stable",
        "google-chrome",
    ]
    for name in candidates:
        if name and (path := shutil.which(name)):
            return path
    return None


class Browser:
    """One headless Chromium showing one page, driven over the DevTools protocol."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.ids = 0

    async def open(self, url: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="arena-chromium-")
        self.proc = await asyncio.create_subprocess_exec(
            self.binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={self.profile}",
            url,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # its own process group: renderers are stopped with it
        )
        active = Path(self.profile) / "DevToolsActivePort"  # Chromium writes its port here
        deadline = time.monotonic() + 30
        while not (active.exists() and active.read_text().strip()):
            if time.monotonic() > deadline or self.proc.returncode is not None:
                raise RuntimeError("chromium did not start its DevTools server")
            await asyncio.sleep(0.1)
        port = active.read_text().split()[0]
        self.session = aiohttp.ClientSession()
        page = None
        while page is None:
            async with self.session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json(content_type=None)
            page = next((t for t in targets if t["type"] == "page"), None)
            if page is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("chromium opened no page")
                await asyncio.sleep(0.1)
        self.ws = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        self.ids += 1
        await self.ws.send_json(
            {
                "id": self.ids,
                "method": "Runtime.evaluate",
                "params": {"expression": expression, "returnByValue": True},
            }
        )
        while True:  # skip the protocol's events until our answer
            msg = await asyncio.wait_for(self.ws.receive_json(), 10)
            if msg.get("id") == self.ids:
                result = msg["result"]
                if "exceptionDetails" in result:
                    raise RuntimeError(result["exceptionDetails"])
                return result["result"].get("value")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        with contextlib.suppress(Exception):
            await self.session.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


@contextlib.asynccontextmanager
async def browser(url: str) -> AsyncIterator[Browser]:
    binary = chromium_binary()
    assert binary is not None
    b = Browser(binary)
    try:
        await b.open(url)
        yield b
    finally:
        await b.close()


SHOWN = """JSON.stringify(Object.fromEntries(
  Array.from(document.querySelectorAll('#ratings tbody tr[data-model]'))
    .map(tr => [tr.dataset.model, Number(tr.querySelector('td.battles').textContent)])))"""


async def test_page_shows_the_players_and_updates_live(make_config, stub) -> None:
    if chromium_binary() is None:
        pytest.skip("no chromium binary on PATH (run scripts/ensure-chromium as root)")
    config = make_config(stub.base_url, extra=WEB)
    await publish_raw(config, [prompt("b0", "first question")])
    async with worker_with_page(config) as url, browser(url) as page:
        shown: dict[str, int] = {}

        async def shows(want: int) -> bool:
            shown.update(json.loads(await page.evaluate(SHOWN)))
            return set(shown) == {"target@v0", "comp"} and min(shown.values()) >= want

        await wait_for(lambda: shows(1), timeout=40)
        before = shown["target@v0"]
        assert (
            await page.evaluate("document.querySelector('#ratings td.model').textContent") == "comp"
        )
        assert (
            await page.evaluate(
                "document.querySelectorAll('#chart polyline[data-model=\"target@v0\"]').length"
            )
            == 1
        )

        # New judgments while the page stays open: the same page shows them, no reload.
        await publish_raw(config, [prompt(f"b{i}", f"question {i}") for i in range(1, 4)])
        await wait_for(lambda: shows(before + 3), timeout=40)
        assert shown == {"target@v0": before + 3, "comp": before + 3}
        assert await page.evaluate("document.getElementById('status').className") == ""


async def test_page_flags_a_player_whose_battles_the_judge_dead_letters(make_config,
                                                                       stub) -> None:
    if chromium_binary() is None:
        pytest.skip("no chromium binary on PATH (run scripts/ensure-chromium as root)")
    from arena_stream.kafka.io import producer, topic_name
    from arena_stream.streams.worker import prepare
    from arena_stream.web.live import WebServer
    from tests.test_judge_health import dead

    config = make_config(stub.base_url, extra=WEB)
    await prepare(config)
    async with producer(config) as p:
        for n in range(6):
            for a, b in [("target@v0", "c1"), ("target@v0", "c2"), ("c1", "c2")]:
                bid = f"{n}{a}{b}"
                if "c2" in (a, b):
                    await p.send_and_wait(topic_name(config, "deadletter"),
                                          msgspec.json.encode(dead(a, b, bid)))
                else:
                    await p.send_and_wait(topic_name(config, "judgments"), msgspec.json.encode(
                        {"battle_id": bid, "model_a": a, "model_b": b}))
        for i, model in enumerate(["target@v0", "c1", "c2"]):
            await p.send_and_wait(topic_name(config, "ratings"), rating(model, 6, 1000.0 - i, i))
    async with WebServer(config) as server, browser(server.url) as page:
        async def flagged() -> bool:
            return await page.evaluate(
                "document.querySelectorAll('#judge-warnings p[data-model=\"c2\"]').length") == 1

        await wait_for(flagged, timeout=30)
        assert await page.evaluate("document.getElementById('judge-section').hidden") is False
        assert json.loads(await page.evaluate(
            "JSON.stringify(Array.from(document.querySelectorAll('#ratings tr.suspect'))"
            ".map(tr => tr.dataset.model))")) == ["c2"]
        row = json.loads(await page.evaluate(
            "JSON.stringify(Array.from(document.querySelectorAll('#judge tr[data-model=\"c2\"] td'"
            ")).map(td => td.textContent))"))
        assert row[1:] == ["c2", "12", "12", "100%", "-", "0"]


async def test_page_warns_about_a_judge_whose_games_disagree(make_config, stub) -> None:
    if chromium_binary() is None:
        pytest.skip("no chromium binary on PATH (run scripts/ensure-chromium as root)")
    from arena_stream.judges.templates import load_template
    from arena_stream.kafka.io import producer, topic_name
    from arena_stream.streams.worker import prepare
    from arena_stream.web.live import WebServer
    from tests.test_judge_quality import biased, sound

    config = make_config(stub.base_url, extra=WEB)
    config.judge.agreement_min_judgments = 10
    version = load_template(config.judge)[1]
    await prepare(config)
    async with producer(config) as p:
        for i in range(12):  # the configured judge reacts to position only; another does not
            for j in (biased(f"b{i}", judge="judge", template=version),
                      sound(f"s{i}", judge="fair")):
                await p.send_and_wait(topic_name(config, "judgments"), msgspec.json.encode(j))
    async with WebServer(config) as server, browser(server.url) as page:
        async def warned() -> bool:
            return await page.evaluate(
                "document.querySelectorAll('#judges-warnings p[data-judge=\"judge\"]').length"
            ) == 1

        await wait_for(warned, timeout=30)
        assert await page.evaluate("document.getElementById('judges-section').hidden") is False
        text = await page.evaluate("document.getElementById('judges-warnings').textContent")
        assert "agree on 0% of the last 12 battles, under the floor of 60%" in text
        assert "prefers the answer shown first in 100%" in text
        rows = json.loads(await page.evaluate(
            "JSON.stringify(Array.from(document.querySelectorAll('#judges tbody tr')).map("
            "tr => [tr.dataset.judge, tr.className, Array.from(tr.cells).map(td => "
            "td.textContent)]))"))
        by_judge = {judge: (cls, cells) for judge, cls, cells in rows}
        assert by_judge["judge"][0] == "suspect" and by_judge["fair"][0] == ""
        assert by_judge["judge"][1][2:6] == ["12", "0% (0%-24%)", "0%", "100%"]
        assert by_judge["fair"][1][2:6] == ["12", "100% (76%-100%)", "100%", "50%"]
        assert by_judge["fair"][1][9] == "4 / 4 / 4"
