"""Kafka plumbing: the embedded broker and every broker quirk, topics, plain clients, the
commit guard, replay windows and dead letters. Nothing here knows the method."""
