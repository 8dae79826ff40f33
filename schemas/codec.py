"""JSON codecs for events: one encoder, one cached decoder per type.

msgspec's typed decoders validate while they parse, so a wrong field type is
rejected at the edge with a path to the offending field.
"""

from __future__ import annotations

import functools
import time
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


def encode(event: Any) -> bytes:
    """Encode an event (or any msgspec-supported value) as compact JSON."""
    return _encoder.encode(event)


@functools.cache
def decoder(kind: type[T]) -> msgspec.json.Decoder[T]:
    return msgspec.json.Decoder(kind)


def decode(data: bytes | str, kind: type[T]) -> T:
    """Decode JSON into ``kind``; raises msgspec.ValidationError / DecodeError."""
    return decoder(kind).decode(data)


def to_builtins(event: Any) -> Any:
    return msgspec.to_builtins(event)


def stamp(event: T) -> T:
    """Set the event's creation time if it has none yet."""
    if getattr(event, "ts", None) == 0.0:
        event.ts = time.time()  # type: ignore[attr-defined]
    return event
