"""What a running worker tells its operators: Prometheus metrics, liveness and readiness.

Served by the worker's web server (``[web]``) at ``/metrics`` (Prometheus text
format), ``/healthz`` (the process and its event loop are alive, the stream
has not stopped itself) and ``/readyz`` (partitions assigned and tables
recovered: the worker is doing work). docker-compose's health checks use them.

Most numbers are read when Prometheus scrapes (counters the stages already
keep, table sizes, consumer lag, judge health), so the hot path pays only for
the two latency histograms.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from arena_stream.ratings.judge_health import JudgeMonitor, health_metrics

if TYPE_CHECKING:
    from arena_stream.streams.worker import RunningWorker

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Telemetry:
    """A worker's metrics registry; the stages' latencies are observed into it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # RSS, CPU, open files
        self.generation_seconds = Histogram(
            "arena_generation_seconds", "time for a player to answer a prompt (retries included)",
            ["player", "ok"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.judgment_seconds = Histogram(
            "arena_judgment_seconds", "time for the judge to decide a battle (both games)",
            ["outcome"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.judges: JudgeMonitor | None = None
        self.worker: RunningWorker | None = None
        self.started = time.monotonic()

    def attach(self, worker: RunningWorker) -> None:
        """Start reading the worker's state at each scrape."""
        self.worker = worker
        self.judges = JudgeMonitor.for_config(worker.config)
        self.registry.register(_WorkerCollector(self))

    def metrics(self) -> bytes:
        return generate_latest(self.registry)

    def healthy(self) -> tuple[bool, str]:
        worker = self.worker
        if worker is None:
            return False, "not started"
        if worker.should_stop:
            return False, "the stream stopped itself"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        worker = self.worker
        if worker is None:
            return False, "not started"
        app = worker.app
        consumer = getattr(app, "consumer", None)
        if consumer is None or not consumer.assignment():
            return False, "no partitions assigned yet"
        if app.tables and not app.tables.recovery.completed.is_set():
            return False, "tables are recovering"
        return True, "ok"


class _WorkerCollector(Collector):
    """Reads counters, table sizes, lag and judge health from the worker at scrape time."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def collect(self) -> Iterator[Any]:
        worker = self.telemetry.worker
        if worker is None:
            return
        events = CounterMetricFamily(
            "arena_events", "what the stages did, by name (intake.accepted, judgments, "
            "deadletter.<stage>.<reason>, ...)", labels=["name"])
        for name, n in sorted(worker.runtime.counters.items()):
            events.add_metric([name], float(n))
        yield events
        tables = GaugeMetricFamily("arena_table_keys", "keys held per table", labels=["table"])
        for table, n in worker.table_sizes().items():
            tables.add_metric([table], float(n))
        yield tables
        reaped = CounterMetricFamily("arena_table_expired_keys",
                                     "keys forgotten by each table's retention", labels=["table"])
        for table, reaper in worker.wiring.reapers.items():
            reaped.add_metric([table], float(reaper.reaped))
        yield reaped
        lag = GaugeMetricFamily("arena_consumer_lag", "records not yet committed, per topic",
                                labels=["topic"])
        for topic, n in consumer_lag(worker.app).items():
            lag.add_metric([topic], float(n))
        yield lag
        monitor = self.telemetry.judges
        if monitor is not None:
            families: dict[tuple[str, tuple[str, ...]], GaugeMetricFamily] = {}
            for name, labels, value in health_metrics(monitor.report()):
                key = (name, tuple(labels))
                if key not in families:
                    families[key] = GaugeMetricFamily(
                        name, "judge health (see ratings --json)", labels=list(labels))
                families[key].add_metric(list(labels.values()), value)
            yield from families.values()


def consumer_lag(app: Any) -> dict[str, int]:
    """Per topic: the partitions' end offsets less their committed offsets (this worker's)."""
    from arena_stream.kafka import commits

    consumer = getattr(app, "consumer", None)
    if consumer is None:
        return {}
    lag: dict[str, int] = {}
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        if end is None:
            continue
        committed = commits.committed_offset(app, tp) or 0
        lag[tp.topic] = lag.get(tp.topic, 0) + max(0, int(end) - committed)
    return lag
