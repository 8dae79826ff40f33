"""The Faust application: topics and tables declared in one place, then the agents.

Topology (one agent per concern; every topic keyed by prompt id unless noted)::

    prompts ──intake──► prompts.accepted ──generate-<player> (one agent per player)──► generations
    generations ──collect──► battles ──judge──► judgments (1 partition, the rating log)
    judgments ──rate──► ratings (key: model) + leaderboard snapshots,
                 and routes losses ──► train.sft / train.dpo ──trigger──► train.jobs
    models ──(every worker tails it)──► target hot swap
    anything that fails ──► deadletter, with the reason and the original bytes

Every stage is idempotent, because Kafka delivers at least once and the
embedded broker has no transactions: ids are deterministic and each stateful
agent remembers what it has done in a changelogged table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust

from arena_stream.config import Config
from arena_stream.kafka import commits
from arena_stream.kafka.broker import Quirks, faust_broker_credentials
from arena_stream.kafka.topics import Topics
from arena_stream.streams.runtime import Runtime


def create_app(config: Config, runtime: Runtime | None = None) -> faust.App:
    """Build the app for ``config`` (its broker must be reachable, topics created)."""
    from arena_stream.streams import agents

    topics = Topics(config.broker, config.app_id)
    datadir = Path(config.data_dir) / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    quirks = Quirks.for_broker(config.broker)
    settings: dict[str, Any] = dict(
        broker=f"kafka://{config.broker.bootstrap_servers}",
        store="memory://",
        autodiscover=False,
        topic_partitions=config.broker.partitions,
        topic_replication_factor=config.broker.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        web_enabled=False,  # the live page is arena_stream.web, served beside the worker
        broker_credentials=faust_broker_credentials(config),
        processing_guarantee="exactly_once" if config.broker.exactly_once else "at_least_once",
        datadir=str(datadir),
        stream_buffer_maxsize=1024,  # bounded in-flight work per stream
        logging_config=None,
    )
    settings.update(quirks.faust_settings())
    app = faust.App(config.app_id, **settings)
    quirks.apply_to_faust(app)
    commits.install(app)  # faust's own commit rule can step over unfinished work
    app.arena_config = config  # type: ignore[attr-defined]
    app.arena_topics = topics  # type: ignore[attr-defined]
    runtime = runtime or Runtime(config)
    app.arena_runtime = runtime  # type: ignore[attr-defined]
    t = _declare_topics(app, topics)
    tables = _declare_tables(app, topics)
    agents.register(app, config, runtime, t, tables)
    return app


def _declare_topics(app: faust.App, topics: Topics) -> dict[str, faust.TopicT]:
    from arena_stream.kafka.topics import TOPICS

    return {
        spec.key: app.topic(
            topics.name(spec.key),
            partitions=topics.partitions_of(spec.key),
            key_serializer="raw",
            value_serializer="raw",
        )
        for spec in TOPICS
    }


def _declare_tables(app: faust.App, topics: Topics) -> dict[str, faust.TableT]:
    from arena_stream.kafka.topics import TABLES

    json_schema = faust.Schema(key_serializer="json", value_serializer="json")
    # Changelog topics keep faust's own naming, "<app_id>-<table>-changelog",
    # which Topics.changelog() mirrors so they are created up front.
    return {
        name: app.Table(
            name,
            default=None,
            partitions=topics.partitions if partitioned else 1,
            schema=json_schema,
        )
        for name, partitioned in TABLES.items()
    }
