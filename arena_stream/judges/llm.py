"""The LLM judge: a model writes its verdict as a JSON object, and we parse it.

The verdict is read only from the judge's own JSON object
(``{"score_1": .., "score_2": .., "explanation": ..}``); a reply with no such
object, with two that disagree, or with scores outside 1..10 is an error,
retried, then dead-lettered: it never counts as a win.

Retries: a failed call (HTTP error, timeout, empty answer) has already been
retried by the client itself; only an unreadable verdict is asked again here,
so ``max_retries = 2`` means at most three calls per game, not nine.
"""

from __future__ import annotations

import json
import re

from arena_stream.judges.pairwise import GameRequest, GameScores, ModelJudge
from arena_stream.models.retry import CallFailed, with_retries


class ParseError(CallFailed):
    """The judge's reply holds no readable verdict (retryable: ask again)."""


_JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)


def parse_scores(text: str) -> tuple[float, float, str]:
    """The (score_1, score_2, explanation) from the judge's JSON object.

    Every object in the reply that names both scores is read; they must agree.
    """
    found: list[tuple[float, float, str]] = []
    for match in _JSON_OBJECT.finditer(text):
        try:
            obj = json.loads(match.group(0))
        except ValueError:
            continue
        if not isinstance(obj, dict) or "score_1" not in obj or "score_2" not in obj:
            continue
        try:
            s1, s2 = float(obj["score_1"]), float(obj["score_2"])
        except (TypeError, ValueError):
            raise ParseError("unparseable", "scores are not numbers") from None
        found.append((s1, s2, str(obj.get("explanation", ""))))
    if not found:
        raise ParseError(
            "unparseable", f"no JSON object with score_1 and score_2 in {text[:120]!r}"
        )
    if len({(s1, s2) for s1, s2, _ in found}) > 1:
        raise ParseError("ambiguous", f"the reply holds {len(found)} different verdicts")
    s1, s2, explanation = found[-1]
    for s in (s1, s2):
        if not 1.0 <= s <= 10.0:
            raise ParseError("out_of_range", f"score {s} is outside 1..10")
    return s1, s2, explanation


class LLMJudge(ModelJudge):
    """Any chat model (served or in-process) that replies with a JSON verdict."""

    method = "parse"

    async def score_game(self, request: GameRequest) -> GameScores:
        calls = [0]  # requests made for this game, the client's own retries included
        try:
            (s1, s2, explanation, raw), _ = await with_retries(
                lambda: self._parsed_call(request.prompt, calls),
                max_retries=self.spec.max_retries,
                base=self.spec.backoff_s,
                cap=self.spec.backoff_max_s,
            )
        except CallFailed as exc:
            exc.attempts = calls[0]
            raise
        return GameScores(s1, s2, raw, explanation, calls[0])

    async def _parsed_call(self, prompt: str, calls: list[int]) -> tuple[float, float, str, str]:
        try:
            completion = await self.client.complete([{"role": "user", "content": prompt}])
        except CallFailed as exc:
            # The client has already retried this with the same max_retries; retrying it
            # here as well would multiply the calls. Only unreadable verdicts retry here.
            calls[0] += exc.attempts
            exc.retryable = False
            raise
        calls[0] += completion.attempts
        s1, s2, explanation = parse_scores(completion.text)
        return s1, s2, explanation, completion.text
