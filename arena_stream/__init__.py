"""arena-stream: Arena Learning (Luo et al., 2024) as an event-driven flywheel on Kafka."""

__version__ = "0.1.0"
