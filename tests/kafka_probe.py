"""Run by tests/test_kafka_fixture.py in a pytest of its own: one test that needs Kafka.

Not collected by the suite (the name does not start with ``test_``).
"""

from __future__ import annotations

from typing import Any


def test_needs_apache_kafka(apache_kafka: Any) -> None:
    assert apache_kafka.address
