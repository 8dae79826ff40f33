"""Shared fixtures: real brokers started once per session, real HTTP model servers.

Each test gets its own topic prefix and consumer-group id, so tests share a
broker without seeing each other's messages.

``broker`` is the embedded Tansu broker unless a test asks for both:
``@both_brokers`` (or ``pytestmark = both_brokers``) runs the same test body
once on Tansu and once on Apache Kafka (:mod:`tests.apache_kafka`), each broker
started at most once per session.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from arena_stream.config import Config, loads
from arena_stream.kafka.broker import EmbeddedBroker
from tests.apache_kafka import ApacheKafka, KafkaUnavailable, required
from tests.openai_stub import OpenAIStub, Reply, completion

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


BROKERS = ("tansu", "kafka")
both_brokers = pytest.mark.parametrize("broker", BROKERS, indirect=True)


@pytest.fixture(scope="session")
def tansu_broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


_kafka_failure: list[str] = []  # why Apache Kafka is unavailable: said once, not per test


@pytest.fixture(scope="session")
def apache_kafka() -> Iterator[ApacheKafka]:
    """A real Apache Kafka 4.x node for the session, or a skip (a failure when required)."""
    kafka = ApacheKafka()
    if not _kafka_failure:
        try:
            kafka.start()
        except KafkaUnavailable as exc:
            _kafka_failure.append(f"Apache Kafka unavailable: {exc}")
    if _kafka_failure:
        if required():
            pytest.fail(_kafka_failure[0])
        pytest.skip(_kafka_failure[0])
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> EmbeddedBroker | ApacheKafka:
    """The broker this test runs on: Tansu, or the param ``@both_brokers`` gives."""
    kind = getattr(request, "param", "tansu")
    if kind == "kafka":
        return request.getfixturevalue("apache_kafka")
    return request.getfixturevalue("tansu_broker")


def judge_reply(score_1: float, score_2: float, explanation: str = "ok") -> Reply:
    return Reply(body=completion(json.dumps(
        {"explanation": explanation, "score_1": score_1, "score_2": score_2}
    )))


def length_judge(path: str, body: dict[str, Any]) -> Reply:
    """Players answer with their model name; this judge prefers the longer answer, unbiased."""
    if body["model"] == "judge":
        text = body["messages"][-1]["content"]
        a1 = text.split(">>>\n", 1)[1].split("\n<<<", 1)[0]
        rest = text.split("<<<ANSWER 2", 1)[1]
        a2 = rest.split(">>>\n", 1)[1].split("\n<<<", 1)[0]
        s1 = min(10, 1 + len(a1) // 10)
        s2 = min(10, 1 + len(a2) // 10)
        return judge_reply(s1, s2)
    answers = {
        "t": "short",
        "c": "a much longer and more detailed answer here",
        "d": "a medium answer",
    }
    return Reply(body=completion(answers.get(body["model"], "x")))


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(length_judge) as s:
        yield s


def config_text(
    *, bootstrap: str, url: str, prefix: str, app_id: str, extra: str = "",
    players: str | None = None, judge_url: str | None = None, data_dir: str = ".arena-stream",
    flavor: str = "tansu",
) -> str:
    players = players or f"""
[[players]]
name = "target"
role = "target"
backend = "openai"
base_url = "{url}"
model = "t"
backoff_s = 0.01

[[players]]
name = "comp"
backend = "openai"
base_url = "{url}"
model = "c"
backoff_s = 0.01
"""
    # On Apache Kafka a killed worker's partitions move after the group's session
    # timeout (faust's default: 60 s); the fault suite kills workers, so the tests use
    # the broker's minimum, as the Tansu settings do.
    session = "session_timeout_s = 6.0\n" if flavor == "kafka" else ""
    return f"""
app_id = "{app_id}"
data_dir = "{data_dir}"

[broker]
bootstrap_servers = "{bootstrap}"
flavor = "{flavor}"
{session}topic_prefix = "{prefix}"
partitions = 2
{players}
[judge]
backend = "openai"
base_url = "{judge_url or url}"
model = "judge"
backoff_s = 0.01
max_retries = 2

[routing]
sft_margin = 3.0
dpo_margin = 2.0

[training]
enabled = false
{extra}
"""


@pytest.fixture
def make_config(broker: EmbeddedBroker | ApacheKafka, tmp_path: Path) -> Any:
    def make(url: str, **kw: Any) -> Config:
        tag = uuid.uuid4().hex[:8]
        text = config_text(bootstrap=broker.address, url=url, prefix=f"t{tag}.",
                           app_id=f"test-{tag}", data_dir=str(tmp_path / "data"),
                           flavor=broker.flavor, **kw)
        return loads(text)

    return make


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
