"""The LLM judge: a model writes its verdict as a JSON object, and we read it.

Where the judge's client can constrain replies to a JSON schema (an
OpenAI-compatible server with structured outputs) and ``[judge] structured`` is
on (the default), the verdict is asked for as :data:`~arena_stream.judges.verdict.
VERDICT_SCHEMA`; a server that refuses it is asked in free text, remembered per
client. Either way the reply is read by :func:`~arena_stream.judges.verdict.
parse_verdict`, whose rule no answer can steer or suppress; its docstring says
how. A reply with no readable verdict is asked again, then dead-lettered: it
never counts as a win.

Retries: a failed call (HTTP error, timeout, empty answer) has already been
retried by the client itself; only an unreadable verdict is asked again here,
so ``max_retries = 2`` means at most three calls per game, not nine.
"""

from __future__ import annotations

from dataclasses import dataclass

from arena_stream.arena.tokens import filled_counts
from arena_stream.judges.pairwise import GameRequest, GameScores, ModelJudge
from arena_stream.judges.verdict import VERDICT_SCHEMA, ParseError, parse_verdict
from arena_stream.models.clients import Completion, FollowsJsonSchema
from arena_stream.models.retry import CallFailed, with_retries

__all__ = ["LLMJudge", "ParseError"]


@dataclass
class _Spent:
    """What one game cost: calls, and the tokens of every reply that came back (a reply
    without a readable verdict was paid for too). A server that reports no usage has its
    tokens counted by :mod:`arena_stream.arena.tokens`, and the game says so."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    source: str = ""

    def add(self, completion: Completion, prompt: str) -> None:
        self.calls += completion.attempts
        p, c, source = filled_counts(completion.prompt_tokens, completion.completion_tokens,
                                     prompt=prompt, completion=completion.text)
        self.prompt_tokens += p
        self.completion_tokens += c
        self.source = "counted" if "counted" in (self.source, source) else source


class LLMJudge(ModelJudge):
    """Any chat model (served or in-process) that replies with a JSON verdict."""

    method = "parse"  # Game.method; "structured" for a game whose reply followed the schema

    async def score_game(self, request: GameRequest) -> GameScores:
        spent = _Spent()  # requests made for this game (the client's retries included), tokens
        try:
            result, _ = await with_retries(
                lambda: self._parsed_call(request, spent),
                max_retries=self.spec.max_retries,
                base=self.spec.backoff_s,
                cap=self.spec.backoff_max_s,
            )
        except CallFailed as exc:
            exc.attempts = spent.calls
            raise
        return GameScores(result.score_1, result.score_2, result.raw, result.explanation,
                          spent.calls, result.method, spent.prompt_tokens,
                          spent.completion_tokens, spent.source)

    async def _parsed_call(self, request: GameRequest, spent: _Spent) -> GameScores:
        try:
            completion = await self._ask(request.prompt)
        except CallFailed as exc:
            # The client has already retried this with the same max_retries; retrying it
            # here as well would multiply the calls. Only unreadable verdicts retry here.
            spent.calls += exc.attempts
            exc.retryable = False
            raise
        spent.add(completion, request.prompt)
        s1, s2, explanation = parse_verdict(completion.text, shown=request.prompt)
        return GameScores(s1, s2, completion.text, explanation,
                          method="structured" if completion.structured else "parse")

    async def _ask(self, prompt: str) -> Completion:
        messages = [{"role": "user", "content": prompt}]
        if self.spec.structured and isinstance(self.client, FollowsJsonSchema):
            return await self.client.complete_json(messages, VERDICT_SCHEMA, name="verdict")
        return await self.client.complete(messages)
