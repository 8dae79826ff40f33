"""The topics a worker lays out, read back from Apache Kafka with the admin API.

Tansu keeps no topic configs (memory storage, no DescribeConfigs worth the name), so
these run on Apache Kafka only: changelogs compacted, the rating log kept for ever,
each topic with its partitions, and topics created earlier with the wrong configs
corrected at start, their own other settings kept.
"""

from __future__ import annotations

from typing import Any

import pytest

from arena_stream.config import Config
from arena_stream.kafka.broker import client_settings
from arena_stream.kafka.io import topic_name
from arena_stream.kafka.topics import TOPICS, changelog_topic
from arena_stream.streams.worker import running_worker, wait_until_ready

pytestmark = pytest.mark.parametrize("broker", ["kafka"], indirect=True)

TABLES = ("prompt_digests", "pending", "judged", "ratings", "rating_log", "routed", "buffers")
KAFKA_DEFAULT_RETENTION_MS = str(7 * 24 * 3600 * 1000)


async def topic_configs(config: Config, names: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's effective configs, as DescribeConfigs answers them."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(**client_settings(config))
    await admin.start()
    try:
        answers = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    finally:
        await admin.close()
    configs: dict[str, dict[str, str]] = {}
    for answer in answers:
        for code, message, _type, name, entries in answer.resources:
            assert code == 0, (name, message)
            configs[name] = {e[0]: e[1] for e in entries}
    return configs


async def partition_counts(config: Config) -> dict[str, int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_settings(config))
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}
    finally:
        await admin.close()


async def test_topics_are_created_with_their_partitions_compaction_and_retention(
    make_config: Any, stub: Any
) -> None:
    config = make_config(stub.base_url)
    async with running_worker(config) as app:
        await wait_until_ready(app)
    changelogs = [changelog_topic(config.app_id, t) for t in TABLES]
    events = {spec.key: topic_name(config, spec.key) for spec in TOPICS}
    configs = await topic_configs(config, [*changelogs, *events.values()])

    for name in changelogs:  # state is rebuilt from these: the last value per key, for ever
        assert configs[name]["cleanup.policy"] == "compact", name
    for spec in TOPICS:
        have = configs[events[spec.key]]
        if spec.keep:  # the rating log, jobs, versions, training buffers: never expire
            assert (have["retention.ms"], have["retention.bytes"]) == ("-1", "-1"), spec.key
            assert have["cleanup.policy"] == "delete", spec.key
        else:  # the rest keep the cluster's retention, which the operator sets
            assert have["retention.ms"] == KAFKA_DEFAULT_RETENTION_MS, spec.key
    assert {events["judgments"], events["ratings"]} <= {
        events[s.key] for s in TOPICS if s.keep}

    counts = await partition_counts(config)
    assert config.broker.partitions == 2
    for spec in TOPICS:
        assert counts[events[spec.key]] == (2 if spec.partitioned else 1), spec.key
    # a table's changelog has one partition per partition of the stream that feeds it
    assert counts[changelog_topic(config.app_id, "pending")] == 2
    assert counts[changelog_topic(config.app_id, "ratings")] == 1


async def test_topics_created_earlier_with_wrong_configs_are_corrected_at_start(
    make_config: Any, stub: Any
) -> None:
    """faust skips topics that exist: a changelog made without compaction (by an older
    version, or by hand) would lose the dedup state at the cluster's retention."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    config = make_config(stub.base_url)
    digests = changelog_topic(config.app_id, "prompt_digests")
    judgments = topic_name(config, "judgments")
    admin = AIOKafkaAdminClient(**client_settings(config))
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(digests, 2, 1, topic_configs={"cleanup.policy": "delete",
                                                   "segment.ms": "3600000"}),
            NewTopic(judgments, 1, 1, topic_configs={"retention.ms": "86400000"}),
        ])
    finally:
        await admin.close()
    before = await topic_configs(config, [digests, judgments])
    assert before[digests]["cleanup.policy"] == "delete"
    assert before[judgments]["retention.ms"] == "86400000"

    async with running_worker(config) as app:
        await wait_until_ready(app)
    after = await topic_configs(config, [digests, judgments])
    assert after[digests]["cleanup.policy"] == "compact"
    assert after[digests]["segment.ms"] == "3600000"  # what was set on it is kept
    assert (after[judgments]["retention.ms"], after[judgments]["retention.bytes"]) == ("-1", "-1")
