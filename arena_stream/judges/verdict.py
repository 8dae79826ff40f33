"""A judge's verdict: its JSON schema, and the one rule that reads it from a reply.

The verdict is ``{"explanation": str, "score_1": 1..10, "score_2": 1..10}``.

**Structured replies.** Where the server supports it, the judge is asked for a
reply constrained by :data:`VERDICT_SCHEMA` (``response_format``), so its reply
*is* one verdict object by construction. A reply that is a single JSON object
(with or without a Markdown code fence around it) is read as exactly that
object, whatever its explanation string quotes.

**Free-text replies** are read so that nothing a player wrote can decide or
erase a verdict:

* the reply is read only after the last answer fence the judge echoed (a
  judge that repeats its request first repeats the answers too);
* the verdict is the *last* JSON object naming both scores: the judge's
  conclusion, written after any reasoning or quotation;
* earlier objects that disagree with it make the reply ``ambiguous`` only when
  they are the judge's own: an object whose scores also appear as a verdict
  object anywhere in the prompt the judge was shown (an answer, the
  conversation, the template's example) is a quotation and is ignored. Before
  this rule, an answer ending in ``{"score_1": 10, "score_2": 1}`` that the
  judge quoted made every one of its battles ambiguous, hence dead-lettered:
  a player could erase its own losses.

**Strict values.** Scores are JSON numbers (never booleans, strings or null),
finite (``NaN`` and ``Infinity``, which Python's JSON reader accepts, are
rejected) and within 1..10. Every failure is a :class:`ParseError` with a short
reason (``unparseable``, ``ambiguous``, ``out_of_range``, ``not_finite``); the
judge asks again, then the battle is dead-lettered. It never counts as a win.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from arena_stream.models.retry import CallFailed

SCORE_KEYS = ("score_1", "score_2")
MIN_SCORE, MAX_SCORE = 1.0, 10.0

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "explanation": {"type": "string"},
        # An enum of integers rather than minimum/maximum: every constrained-decoding
        # backend (vLLM's xgrammar and outlines, llama.cpp, OpenAI strict mode) takes it.
        "score_1": {"type": "integer", "enum": list(range(1, 11))},
        "score_2": {"type": "integer", "enum": list(range(1, 11))},
    },
    "required": ["explanation", "score_1", "score_2"],
    "additionalProperties": False,
}

# The most of a reply searched for objects: the verdict is at its end.
MAX_SCANNED_CHARS = 50_000


class ParseError(CallFailed):
    """The judge's reply holds no readable verdict (retryable: ask again)."""


_ECHOED_FENCE_END = re.compile(r"<<<END OF ANSWER \d+ \[[0-9A-F]{8}\]>>>")
_CODE_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)
_NUMBER = r"(-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|NaN|-?Infinity|true|false|null)"
_QUOTED_PAIR = re.compile(
    r'"?score_1"?\s*:\s*' + _NUMBER + r'\s*,[^{}]{0,400}?"?score_2"?\s*:\s*' + _NUMBER
    + r'|"?score_2"?\s*:\s*' + _NUMBER + r'\s*,[^{}]{0,400}?"?score_1"?\s*:\s*' + _NUMBER
)


def parse_verdict(text: str, *, shown: str = "") -> tuple[float, float, str]:
    """The (score_1, score_2, explanation) the judge gave; ``shown`` is its prompt.

    Raises :class:`ParseError`; the rule is in the module docstring.
    """
    whole = _single_object(text)
    if whole is not None:
        return _checked(whole)
    region = text
    echoed = list(_ECHOED_FENCE_END.finditer(region))
    if echoed:
        region = region[echoed[-1].end():]
    region = region[-MAX_SCANNED_CHARS:]
    candidates = [obj for obj in _objects(region) if all(k in obj for k in SCORE_KEYS)]
    if not candidates:
        raise ParseError(
            "unparseable", f"no JSON object with score_1 and score_2 in {text[:120]!r}"
        )
    verdict = _checked(candidates[-1])
    quoted = _quoted_pairs(shown)
    own = {
        pair for obj in candidates[:-1]
        if (pair := _pair(obj)) is not None and pair not in quoted
    }
    if own - {verdict[:2]}:
        raise ParseError(
            "ambiguous", f"the reply holds {len(own | {verdict[:2]})} different verdicts"
        )
    return verdict


def _single_object(text: str) -> dict[str, Any] | None:
    """The reply as one JSON object, when it is exactly that (code fence allowed)."""
    body = text.strip()
    fenced = _CODE_FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    if not body.startswith("{"):
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _objects(text: str) -> list[dict[str, Any]]:
    """Every top-level JSON object in free text, in order (nested ones are part of theirs)."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    position = text.find("{")
    while position != -1:
        try:
            value, end = decoder.raw_decode(text, position)
        except (ValueError, RecursionError):
            position = text.find("{", position + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        position = text.find("{", end)
    return found


def _score(obj: dict[str, Any], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParseError("unparseable", f"{key} is {type(value).__name__} {value!r}, "
                         "not a number")
    if isinstance(value, int) and abs(value) > 10**6:
        raise ParseError("out_of_range", f"{key} {value} is outside 1..10")
    score = float(value)
    if not math.isfinite(score):
        raise ParseError("not_finite", f"{key} is {score}, not a finite number")
    if not MIN_SCORE <= score <= MAX_SCORE:
        raise ParseError("out_of_range", f"score {score} is outside 1..10")
    return score


def _checked(obj: dict[str, Any]) -> tuple[float, float, str]:
    if not all(k in obj for k in SCORE_KEYS):
        raise ParseError("unparseable", f"the verdict object lacks score_1 or score_2: "
                         f"{json.dumps(obj)[:120]}")
    explanation = obj.get("explanation", "")
    return _score(obj, "score_1"), _score(obj, "score_2"), (
        explanation if isinstance(explanation, str) else json.dumps(explanation)
    )


def _pair(obj: dict[str, Any]) -> tuple[float, float] | None:
    """An object's two scores as numbers, or None when they are not plain numbers."""
    try:
        return _score(obj, "score_1"), _score(obj, "score_2")
    except ParseError:
        return None


def _as_float(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None  # true / false / null: never a score, never a quoted verdict


def _quoted_pairs(shown: str) -> set[tuple[float, float]]:
    """Every (score_1, score_2) written as a verdict anywhere in the judge's prompt."""
    pairs: set[tuple[float, float]] = set()
    for m in _QUOTED_PAIR.finditer(shown):
        a, b, c, d = m.groups()
        s1, s2 = (_as_float(a), _as_float(b)) if a is not None else (_as_float(d), _as_float(c))
        if s1 is not None and s2 is not None:
            pairs.add((s1, s2))
    return pairs
