"""The judge interface: what the stream and the offline evaluation need from any judge.

A judge turns a :class:`~arena_stream.schemas.Battle` into a
:class:`~arena_stream.schemas.Judgment`, or raises :class:`JudgeFailed` with a
short reason; the caller dead-letters the battle with that reason. It never
returns a verdict it did not reach: a failure is never a win for anyone.

Judges are built from ``[judge]`` in exactly one place,
:func:`arena_stream.judges.build_judge`. Where each kind lives:

* :mod:`arena_stream.judges.pairwise`: the two-games-swapped rule (``combine``) and
  the base every model judge shares (render, play both orders, combine);
* :mod:`arena_stream.judges.llm`: a model that writes its verdict (parsed);
* :mod:`arena_stream.judges.logprobs`: an in-process model whose verdict is read
  from its token probabilities.

A new way of judging (a verifier, a reward model, an ensemble of judges) is one
new module with a class that satisfies :class:`Judge`, plus one branch in
``build_judge``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from arena_stream.models.clients import ChatClient
from arena_stream.schemas import Battle, Judgment


class JudgeFailed(Exception):
    """The judge could not produce a valid verdict after its retries.

    ``reason`` is a short machine-readable code (it becomes the dead letter's
    reason), ``attempts`` the model calls spent on the battle.
    """

    def __init__(self, reason: str, message: str, attempts: int = 0) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.attempts = attempts


@runtime_checkable
class Judge(Protocol):
    """Anything that judges battles."""

    name: str  # recorded as Judgment.judge_model
    template_version: str  # recorded as Judgment.template_version

    async def judge(self, battle: Battle) -> Judgment:
        """The battle's verdict; raises :class:`JudgeFailed` when there is none."""
        ...

    def clients(self) -> dict[str, ChatClient]:
        """The model clients this judge calls, by label, for start-up checks (may be empty)."""
        ...
