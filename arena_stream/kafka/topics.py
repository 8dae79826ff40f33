"""The registry of topics: every name, its partition count and what it carries.

Names live under a configurable prefix (default ``arena.``). Everything about
one prompt is keyed by the prompt id, so its generations, battles and
judgments stay in order on one partition. The stages whose state spans all
prompts (ratings, training buffers, jobs, versions) use one partition: Elo is
sequential by nature, and a single ordered log makes "which samples belong to
which job" a plain offset range.
"""

from __future__ import annotations

from dataclasses import dataclass

from arena_stream.config import BrokerConfig
from arena_stream.kafka.broker import TopicPlan


@dataclass(frozen=True)
class TopicSpec:
    key: str  # short name used in code and on the command line: "judgments"
    suffix: str  # appended to the prefix: "judgments" -> "arena.judgments"
    event: str  # schemas.EVENT_TYPES key of what it carries
    partitioned: bool  # True: config.broker.partitions; False: one partition
    doc: str
    key_doc: str = "prompt id"  # what the Kafka key is
    # Kept for ever (retention.ms = -1): logs that state is rebuilt or audited from (the
    # rating log, training buffers that jobs name by offset, versions). The others keep
    # the cluster's default retention, which the user sets.
    keep: bool = False


def _topics() -> tuple[TopicSpec, ...]:
    from arena_stream.arena.kinds import KINDS

    buffers = tuple(
        TopicSpec(k.topic, f"train.{k.name}", k.name, False, k.doc, keep=True)
        for k in KINDS.values()
    )
    return (
        TopicSpec("prompts", "prompts", "prompt", True, "prompts published by users"),
        TopicSpec(
            "checked",
            "prompts.checked",
            "prompt",
            True,
            "valid prompts, keyed by id through our own partitioner, waiting for admission "
            "(internal)",
        ),
        TopicSpec(
            "accepted",
            "prompts.accepted",
            "prompt",
            True,
            "validated, deduplicated prompts the players answer (internal)",
        ),
        TopicSpec("generations", "generations", "generation", True, "one per player and prompt"),
        TopicSpec("battles", "battles", "battle", True, "answer pairs waiting for the judge"),
        TopicSpec("judgments", "judgments", "judgment", False,
                  "the judge's verdicts, the rating log", keep=True),
        TopicSpec("ratings", "ratings", "rating", False, "every Elo change", "model", keep=True),
        TopicSpec(
            "leaderboard",
            "leaderboard",
            "leaderboard",
            False,
            "periodic Bradley-Terry snapshots with 95% intervals",
            '"leaderboard"',
        ),
        *buffers,
        TopicSpec("jobs", "train.jobs", "job", False, "training jobs and their progress",
                  "job id", keep=True),
        TopicSpec("models", "models", "model", False, "trained model versions", "player name",
                  keep=True),
        TopicSpec(
            "deadletter",
            "deadletter",
            "deadletter",
            False,
            "what could not be processed, and why",
            "prompt or battle id",
        ),
    )


# The training buffers come from the training-kind registry: one topic per kind.
TOPICS: tuple[TopicSpec, ...] = _topics()

BY_KEY = {t.key: t for t in TOPICS}

# `rejudge` writes a second judge's verdicts on replayed battles to a topic of its own
# (one per name), never to the judgments topic: the live ratings stay untouched.
REJUDGE_SUFFIX = "judgments.rejudge."
REJUDGED = TopicSpec("rejudged", REJUDGE_SUFFIX + "<name>", "judgment", False,
                     "a second judge's verdicts on replayed battles (`rejudge`)", keep=True)

class Topics:
    """Resolved names and partition counts for one configuration."""

    def __init__(self, broker: BrokerConfig, app_id: str = "arena-stream") -> None:
        self.prefix = broker.topic_prefix
        self.partitions = broker.partitions
        self.app_id = app_id

    def name(self, key: str) -> str:
        """Full topic name for a registry key; a full name passes through unchanged."""
        spec = BY_KEY.get(key)
        if spec is None:
            for s in TOPICS:
                if self.prefix + s.suffix == key:
                    return key
            if self.is_rejudged(key):
                return key
            raise KeyError(f"unknown topic {key!r}; known: {', '.join(BY_KEY)}")
        return self.prefix + spec.suffix

    def rejudged(self, name: str) -> str:
        """The topic a second judge called ``name`` writes to (``rejudge --name``)."""
        if not name or any(not (c.isalnum() or c in "._-") for c in name):
            raise ValueError(f"a rejudge name is letters, digits, '.', '_' or '-': {name!r}")
        return self.prefix + REJUDGE_SUFFIX + name

    def is_rejudged(self, name: str) -> bool:
        head = self.prefix + REJUDGE_SUFFIX
        return name.startswith(head) and len(name) > len(head)

    def spec(self, key_or_name: str) -> TopicSpec:
        name = self.name(key_or_name)
        if self.is_rejudged(name):
            return REJUDGED
        return next(s for s in TOPICS if self.prefix + s.suffix == name)

    def partitions_of(self, key: str) -> int:
        return self.partitions if self.spec(key).partitioned else 1

    def all(self) -> dict[str, TopicPlan]:
        """Every event topic this configuration needs, with its layout.

        The worker's own internal topics (table changelogs) are laid out by the worker,
        named and configured by faust (:meth:`arena_stream.streams.app.Wiring.internal_topics`).
        """
        return {
            self.prefix + s.suffix: TopicPlan(self.partitions if s.partitioned else 1,
                                              keep=s.keep)
            for s in TOPICS
        }


def changelog_topic(app_id: str, table: str) -> str:
    """The changelog topic of a worker's table, as faust names it (asked, not copied)."""
    import faust

    app = faust.App(app_id, autodiscover=False, web_enabled=False)
    return str(app.Table(table).changelog_topic.get_topic_name())
