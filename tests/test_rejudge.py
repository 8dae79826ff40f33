"""Re-judging by replay: a second judge on the battles topic, the live ratings untouched.

The live arena runs for real (embedded broker, the worker, an HTTP judge that
prefers longer answers); then `rejudge` replays its battles through a second
HTTP judge that prefers shorter ones, and `consistency --rejudged` compares them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from arena_stream.config import loads
from arena_stream.kafka.io import read_all
from arena_stream.kafka.topics import Topics
from arena_stream.schemas import Judgment
from arena_stream.streams.worker import running_worker, wait_until_ready
from tests.conftest import config_text, judge_reply, length_judge
from tests.helpers import count, events, prompt, publish_raw, wait_for
from tests.openai_stub import OpenAIStub, Reply

PLAYERS = "".join(f"""
[[players]]
name = "{name}"
role = "{role}"
backend = "openai"
base_url = "URL"
model = "{model}"
backoff_s = 0.01
""" for name, role, model in (("target", "target", "t"), ("comp", "competitor", "c"),
                              ("mid", "competitor", "d")))


def _answers(text: str) -> tuple[str, str]:
    a1 = text.split(">>>\n", 1)[1].split("\n<<<", 1)[0]
    rest = text.split("<<<ANSWER 2", 1)[1]
    return a1, rest.split(">>>\n", 1)[1].split("\n<<<", 1)[0]


class ShortJudge:
    """The second judge: prefers the *shorter* answer; can fail on battles with 'medium'."""

    def __init__(self) -> None:
        self.fail_medium = True

    def __call__(self, path: str, body: dict[str, Any]) -> Reply:
        a1, a2 = _answers(body["messages"][-1]["content"])
        if self.fail_medium and "medium" in a1 + a2:
            return Reply(status=500, body={"error": "down"})
        return judge_reply(max(1, 10 - len(a1) // 10), max(1, 10 - len(a2) // 10))


@pytest.fixture
def arena(broker, tmp_path: Path) -> Any:
    """A live arena with 4 prompts judged (12 battles, round robin of three players)."""
    with OpenAIStub(length_judge) as live:
        tag = uuid.uuid4().hex[:8]
        text = config_text(bootstrap=broker.address, url=live.base_url, prefix=f"t{tag}.",
                           app_id=f"test-{tag}", data_dir=str(tmp_path / "data"),
                           players=PLAYERS.replace("URL", live.base_url),
                           extra='[battles]\nmode = "round-robin"\n')
        path = tmp_path / "arena.toml"
        path.write_text(text)
        config = loads(text)

        async def play() -> None:
            await publish_raw(config, [prompt(f"p{i}", f"question {i}") for i in range(4)])
            async with running_worker(config) as worker:
                await wait_until_ready(worker)

                async def settled() -> bool:
                    return await count(config, "ratings") >= 24

                await wait_for(settled, timeout=90)

        asyncio.run(play())
        yield config, path


def _judge_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "judge2.toml"
    path.write_text(f'[judge]\nbackend = "openai"\nbase_url = "{url}"\nmodel = "short-judge"\n'
                    "max_retries = 0\nbackoff_s = 0.01\n")
    return path


def _records(config: Any, key: str) -> list[tuple[int, bytes]]:
    return [(r.offset, r.value) for r in asyncio.run(read_all(config, key))]


def test_rejudge_leaves_the_live_ratings_untouched_and_compares_the_judges(
    arena: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from arena_stream.cli.entry import main as cli

    config, config_path = arena
    ratings_before = _records(config, "ratings")
    judgments_before = _records(config, "judgments")
    assert len(judgments_before) == 12 and len(ratings_before) == 24
    second = ShortJudge()
    with OpenAIStub(second) as stub:
        judge_path = _judge_file(tmp_path, stub.base_url)
        args = ["rejudge", "--config", str(config_path), "--judge-config", str(judge_path)]

        # First run: the battles of the player with the 'medium' answer fail (2 pairs of 3 on
        # each of 4 prompts), the other 4 are written.
        assert cli(args) == 1
        out, err = capsys.readouterr()
        assert "re-judged 4 of 12 battles" in out
        assert "8 battle(s) failed (http_500 x8)" in err and "run again" in err

        # Second run: only the failed ones are judged; nothing twice.
        second.fail_medium = False
        assert cli([*args, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
    assert report["run"]["judged"] == 8 and report["run"]["already"] == 4
    topic = Topics(config.broker, config.app_id).rejudged("short-judge")
    assert report["topic"] == topic
    rejudged = asyncio.run(events(config, topic, Judgment))
    assert len(rejudged) == 12 and len({j.battle_id for j in rejudged}) == 12
    assert all(j.judge_model == "short-judge" and j.style is not None for j in rejudged)

    # The live topics are exactly as they were.
    assert _records(config, "ratings") == ratings_before
    assert _records(config, "judgments") == judgments_before

    # The two judges disagree on every battle, and their leaderboards are reversed.
    per_battle = report["comparison"]["per_battle"]
    assert per_battle["battles"] == 12 and per_battle["agreement"] == 0.0
    boards = report["comparison"]["leaderboards"]
    assert boards["spearman"] == pytest.approx(-1.0)
    live_order = [r["model"] for r in report["comparison"]["live_leaderboard"]]
    other_order = [r["model"] for r in report["comparison"]["other_leaderboard"]]
    assert live_order == list(reversed(other_order)) and live_order[0] == "comp"

    # The second judge's own leaderboard, with every leaderboard option.
    assert cli(["leaderboard", "--config", str(config_path), "--rejudged", "short-judge",
                "--json", "--method", "sandwich"]) == 0
    board = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in board] == other_order

    # consistency prints the same comparison later, as text and as JSON.
    assert cli(["consistency", "--config", str(config_path), "--rejudged", "short-judge"]) == 0
    text = capsys.readouterr().out
    assert "same winner             0.0%" in text and "spearman" in text
    assert cli(["consistency", "--config", str(config_path), "--rejudged", "nobody"]) == 2
    assert "run `rejudge` first" in capsys.readouterr().err


def test_rejudge_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from arena_stream.cli.entry import main as cli

    config = tmp_path / "a.toml"
    config.write_text('[[players]]\nname = "t"\nrole = "target"\n[[players]]\nname = "c"\n')
    bad = tmp_path / "j.toml"
    bad.write_text('[judge]\nbackend = "openai"\nmodel = "x"\n')
    assert cli(["rejudge", "--config", str(config), "--judge-config", str(bad)]) == 2
    assert 'backend "openai" needs base_url' in capsys.readouterr().err
    none = tmp_path / "n.toml"
    none.write_text('[battles]\ntie_margin = 1.0\n')
    assert cli(["rejudge", "--config", str(config), "--judge-config", str(none)]) == 2
    assert "no [judge] table" in capsys.readouterr().err
    assert cli(["rejudge", "--config", str(config), "--judge-config", str(bad), "--name",
                "a b"]) == 2
    assert cli(["consistency", "--config", str(config)]) == 2
    assert "--rejudged" in capsys.readouterr().err


def test_battle_agreement_counts_and_kappa() -> None:
    from arena_stream.ratings.judge_agreement import battle_agreement
    from tests.test_bradley_terry import judgment

    def js(winners: list[str]) -> list[Judgment]:
        out = []
        for i, w in enumerate(winners):
            j = judgment("x", "y", w, float(i))
            j.battle_id = f"b{i}"
            out.append(j)
        return out

    live = js(["model_a", "model_a", "model_b", "tie", "model_a"])
    other = js(["model_a", "model_b", "model_b", "tie (bothbad)"])  # b4 not re-judged
    a = battle_agreement(live, other)
    assert (a.battles, a.same, a.only_live, a.only_other) == (4, 3, 1, 0)
    assert a.decisive_both == 3 and a.decisive_same == 2
    assert a.table["model_a"] == {"model_a": 1, "model_b": 1, "tie": 0}
    # observed 3/4; by chance (2*1 + 1*2 + 1*1) / 16 = 5/16
    assert a.kappa == pytest.approx((0.75 - 5 / 16) / (1 - 5 / 16))
