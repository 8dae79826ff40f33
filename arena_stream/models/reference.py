"""The ``reference`` player: gold answers as a competitor (``backend = "reference"``).

A dataset's human-written answers, or a stronger model's answers collected
earlier, travel with each prompt as ``metadata.reference``; this player answers
with them, so the target battles the answer it should have given. No model is
loaded and no call is made, so it costs nothing and never fails.

Which reference: a string is the answer as is; a list (several acceptable
answers, as the verifier's ``reference`` check allows) gives its first
non-empty string. Numbers are written as text. A prompt without a usable
reference is **skipped** by this player: the generate stage emits a
``Generation`` with ``ok = False`` and the reason ``no_reference`` (so collect
does not wait for it and forms the other battles), counts it under
``generate.<player>.skipped`` and logs it, but sends no dead letter: a prompt
set where only some prompts have references is normal, not an error.
"""

from __future__ import annotations

from typing import Any

from arena_stream.config import ModelConfig
from arena_stream.models.clients import Completion
from arena_stream.models.retry import CallFailed

SKIPPED = "no_reference"


def reference_answer(metadata: dict[str, Any]) -> str | None:
    """The answer the reference player gives for a prompt's metadata, or None to skip it."""
    ref = metadata.get("reference")
    if isinstance(ref, list):
        ref = next((r for r in ref if isinstance(r, str | int | float) and not isinstance(r, bool)
                    and str(r).strip()), None)
    if isinstance(ref, bool) or not isinstance(ref, str | int | float):
        return None
    text = str(ref)
    return text if text.strip() else None


class ReferenceClient:
    """A :class:`~arena_stream.models.clients.ChatClient` without a model.

    The generate stage asks :func:`reference_answer` for the prompt's answer
    (only it sees the metadata); :meth:`complete` exists for the interface and
    refuses, since a conversation alone carries no reference.
    """

    def __init__(self, spec: ModelConfig, label: str) -> None:
        self.spec = spec
        self.label = label
        self.version = 0

    async def complete(
        self, messages: list[dict[str, str]], *, max_tokens: int | None = None
    ) -> Completion:
        raise CallFailed(SKIPPED, f"{self.label}: the reference player answers from a prompt's "
                         "metadata.reference, not from a conversation", retryable=False)

    async def use_version(self, version: int, path: str, served_name: str | None = None,
                          adapter: bool | None = None) -> None:
        raise ValueError(f"{self.label}: the reference player has no versions to train")

    async def ready(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
