"""How difficult a prompt is, 0 to 10, as rated by the configured judge (WizardArena's hard set).

Two raters, chosen like the battle judge's scoring (``[judge] scoring``):

* :class:`ParsedDifficulty`: the judge writes a short justification and a last
  line ``Difficulty: N`` (asked for as a JSON-schema-bound reply where the server
  supports it); a reply without a readable rating is asked again with a reminder
  of the format, up to :data:`RATING_ATTEMPTS` times, then the prompt is unrated.
  This is for served judges, which reason before they rate.
* :class:`LogprobDifficulty`: for a judge whose token probabilities can be read
  (:class:`~arena_stream.models.clients.ScoresTokens`, an in-process model), the
  reply is begun as ``Difficulty: `` and the rating is the expected value over
  the digit tokens. Every prompt gets a rating, even from SmolLM2-135M, which
  otherwise answers the request instead of rating it (issue 17: 50 of 50
  unreadable). The digits are single tokens, so a leading ``1`` may begin ``10``:
  the probability that ``0`` follows is read in a second pass and splits that
  mass between 1 and 10. Prompts are rated one at a time: a batched reading
  depends on its batch neighbours (SmolLM2 with ``quantize = true`` scales its
  int8 activations over the whole batch: 24 prompts rated in one batch differed
  from the same prompts rated alone by up to 1.5 points; float weights, 1e-4),
  and a test set must come out the same when it is built again from scratch.
  On 2 CPU cores it was not slower either (BENCHMARKS.md, "In-process
  difficulty ratings"): padding a batch of prompts of different lengths costs
  more than batching saves when prompt processing is compute-bound.

The template is configurable (``[judge] difficulty_template``, a file with the
``{conversation}`` and ``{context}`` fields); a rater's :attr:`name` (judge model,
template version, method) keys the ratings cache, so another judge, template or
method never reuses stale ratings.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from pathlib import Path
from typing import Any, Protocol

import msgspec

from arena_stream.config import ConfigError, JudgeConfig
from arena_stream.models.clients import ChatClient, FollowsJsonSchema, ScoresTokens, build_client
from arena_stream.models.retry import CallFailed

RATING_TEMPLATE_VERSION = "difficulty-v1"  # the built-in template's version
RATING_ATTEMPTS = 3  # answers without a readable score before giving up on a prompt
MAX_RATED_CHARS = 12_000  # longer conversations are cut in the middle for the judge

RATING_PROMPT = """\
You are rating how DIFFICULT a request to an AI assistant is. Do not answer it.

Consider what a correct, complete, high-quality answer would demand:
- specialised knowledge (science, law, medicine, advanced mathematics, niche tools);
- multi-step reasoning, planning, calculation or proof;
- precise constraints to satisfy at once (format, length, style, edge cases);
- creativity or depth beyond a stock answer;
- code that must be correct and complete, not a sketch.

Scale:
0-2: trivial (greetings, a common fact, a one-line rewrite)
3-4: easy (a standard explanation or short task most assistants get right)
5-6: moderate (needs care, some expertise or several steps)
7-8: hard (expert knowledge or long careful reasoning; many assistants would slip)
9-10: very hard (research-level, intricate multi-constraint or long exact work)

The request{context}:
<<<
{conversation}
>>>

Reply with one short sentence of justification, then a last line of exactly this form:
Difficulty: N
where N is an integer from 0 to 10."""

FORMAT_REMINDER = (
    "Your reply did not end with a readable rating. Reply with only one line of the form "
    "'Difficulty: N', N an integer from 0 to 10."
)

DIFFICULTY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "explanation": {"type": "string"},
        "difficulty": {"type": "integer", "enum": list(range(0, 11))},
    },
    "required": ["explanation", "difficulty"],
    "additionalProperties": False,
}

REPLY_START = "Difficulty: "
DIGITS = [str(d) for d in range(10)]
# Below this share of "1" a "10" cannot move the rating by more than 0.001: no second pass.
TEN_CHECK_SHARE = 1e-4

_LABELLED = re.compile(r"difficulty\W{0,5}(?:score|rating|level)?\W{0,5}(\d+(?:\.\d+)?)", re.I)
_OUT_OF_TEN = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*(?:/|out of)\s*10(?!\d|\.\d)", re.I)
_BARE = re.compile(r"\W*(\d+(?:\.\d+)?)\W*")


def parse_difficulty(text: str) -> float | None:
    """The 0-10 score in a judge's answer, or ``None`` when there is no unambiguous one.

    Tried in order: the last "Difficulty: N" (a model that restates the scale
    before concluding still counts by its conclusion; ``"difficulty": N`` in a
    JSON reply reads the same), the last "N/10", then a reply that is nothing but
    a number. Out-of-range numbers are not scores.
    """
    for pattern in (_LABELLED, _OUT_OF_TEN):
        found = pattern.findall(text)
        if found:
            value = float(found[-1])
            return value if 0.0 <= value <= 10.0 else None
    bare = _BARE.fullmatch(text.strip())
    if bare:
        value = float(bare.group(1))
        return value if 0.0 <= value <= 10.0 else None
    return None


def render_conversation(raw: dict[str, Any], *, limit: int = MAX_RATED_CHARS) -> tuple[str, bool]:
    """The conversation as the rater sees it, and whether it has several turns."""
    messages = raw.get("messages") or [{"role": "user", "content": raw.get("prompt") or ""}]
    if len(messages) == 1:
        text = str(messages[0].get("content") or "")
    else:
        text = "\n\n".join(
            f"[{str(m.get('role', 'user')).upper()}]\n{m.get('content') or ''}" for m in messages
        )
    if len(text) > limit:
        half = limit // 2
        text = f"{text[:half]}\n[... {len(text) - limit} characters omitted ...]\n{text[-half:]}"
    return text, len(messages) > 1


def rating_messages(raw: dict[str, Any], template: str = RATING_PROMPT) -> list[dict[str, str]]:
    """The judge conversation that asks for one prompt's difficulty (``raw``: its JSON)."""
    text, multi = render_conversation(raw)
    context = " (a conversation; rate its LAST user turn, in context)" if multi else ""
    return [{"role": "user", "content": template.format(context=context, conversation=text)}]


def load_difficulty_template(spec: JudgeConfig) -> tuple[str, str]:
    """The rating template and its version: built in, or ``difficulty_template``'s file."""
    if not spec.difficulty_template:
        return RATING_PROMPT, RATING_TEMPLATE_VERSION
    path = Path(spec.difficulty_template)
    if not path.is_file():
        raise ConfigError(f"judge.difficulty_template: no such file: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        text.format(context="", conversation="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"judge.difficulty_template {path}: the only fields are "
                          f"{{conversation}} and {{context}} ({exc!r})") from None
    return text, "d-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def rater_name(judge_model: str, template_version: str = RATING_TEMPLATE_VERSION,
               method: str = "parse") -> str:
    """Cache identity of a rater: a different judge, template or method means new ratings."""
    name = f"{judge_model}|{template_version}"
    return name if method == "parse" else f"{name}|{method}"


class DifficultyReading(msgspec.Struct, frozen=True):
    """One prompt's difficulty (None: no readable rating) and the judge's last reply."""

    difficulty: float | None
    raw: str
    attempts: int


class DifficultyRater(Protocol):
    """Anything that rates a prompt's difficulty; ``name`` keys the ratings cache."""

    name: str

    async def rate(self, raw: dict[str, Any]) -> DifficultyReading:
        """Rate one prompt (its JSON object); raises ``CallFailed`` when the call fails."""
        ...

    async def aclose(self) -> None: ...


class ParsedDifficulty:
    """The judge writes its rating; see the module docstring."""

    method = "parse"

    def __init__(self, client: ChatClient, *, model: str, template: str = RATING_PROMPT,
                 template_version: str = RATING_TEMPLATE_VERSION, structured: bool = True,
                 attempts: int = RATING_ATTEMPTS) -> None:
        self.client = client
        self.template = template
        self.structured = structured
        self.attempts = attempts
        self.name = rater_name(model, template_version, self.method)

    async def rate(self, raw: dict[str, Any]) -> DifficultyReading:
        """Unreadable answers are re-asked with a reminder. A failed call (after the
        client's own retries) raises ``CallFailed``: not a property of the prompt, so
        it must not be cached."""
        messages = rating_messages(raw, self.template)
        reply = ""
        for attempt in range(1, self.attempts + 1):
            reply = await self._ask(messages)
            score = parse_difficulty(reply)
            if score is not None:
                return DifficultyReading(score, reply, attempt)
            messages = [
                *messages[:1],
                {"role": "assistant", "content": reply},
                {"role": "user", "content": FORMAT_REMINDER},
            ]
        return DifficultyReading(None, reply, self.attempts)

    async def _ask(self, messages: list[dict[str, str]]) -> str:
        if self.structured and isinstance(self.client, FollowsJsonSchema):
            completion = await self.client.complete_json(messages, DIFFICULTY_SCHEMA,
                                                         name="difficulty")
        else:
            completion = await self.client.complete(messages)
        return str(getattr(completion, "text", completion))

    async def aclose(self) -> None:
        await self.client.aclose()


class LogprobDifficulty:
    """The expected rating over the digit tokens; see the module docstring."""

    method = "logprobs"

    def __init__(self, client: ChatClient, *, model: str, template: str = RATING_PROMPT,
                 template_version: str = RATING_TEMPLATE_VERSION) -> None:
        if not isinstance(client, ScoresTokens):
            raise ConfigError('judge: scoring = "logprobs" needs a model whose token '
                              'probabilities can be read (backend = "transformers")')
        self.client = client
        self.scorer: ScoresTokens = client
        self.template = template
        self.name = rater_name(model, template_version, self.method)
        self._alone = asyncio.Lock()  # one prompt at a time: see the module docstring

    async def rate(self, raw: dict[str, Any]) -> DifficultyReading:
        messages = rating_messages(raw, self.template)
        async with self._alone:
            probs = await self.scorer.token_probabilities(messages, REPLY_START, DIGITS)
            ten = 0.0  # P("0" follows a leading "1"): that "1" was the start of "10"
            if math.fsum(probs) > 0.0 and probs[1] / math.fsum(probs) >= TEN_CHECK_SHARE:
                (ten,) = await self.scorer.token_probabilities(
                    messages, REPLY_START + "1", ["0"])
        difficulty = expected_difficulty(probs, ten)
        return DifficultyReading(difficulty, f"{REPLY_START}{difficulty:.3f} (expected value "
                                 "over the digit tokens)", 1)

    async def aclose(self) -> None:
        await self.client.aclose()


def expected_difficulty(probs: list[float], ten: float) -> float:
    """Expected 0..10 rating from P(first digit) and P("0" after a leading "1").

    Raises ``CallFailed`` when the probabilities are no rating at all (NaN, no mass).
    """
    if len(probs) != 10 or not all(math.isfinite(p) and p >= 0.0 for p in [*probs, ten]):
        raise CallFailed("not_finite", f"token probabilities are not finite: {probs}, {ten}",
                         retryable=False)
    total = math.fsum(probs)
    if total <= 0.0:
        raise CallFailed("no_probability", "the model gives the digit tokens no probability",
                         retryable=False)
    ten = min(1.0, ten)
    mass = math.fsum(d * p for d, p in enumerate(probs) if d != 1)
    mass += probs[1] * (10.0 * ten + 1.0 * (1.0 - ten))
    return round(min(10.0, max(0.0, mass / total)), 4)


def build_difficulty_rater(spec: JudgeConfig, *, client: ChatClient | None = None
                           ) -> DifficultyRater:
    """The rater ``[judge]`` describes; its scoring is chosen as for battles (``build_judge``)."""
    template, version = load_difficulty_template(spec)
    client = client or build_client(spec, "judge")
    if spec.scoring == "logprobs" or (spec.scoring == "auto" and isinstance(client, ScoresTokens)):
        return LogprobDifficulty(client, model=spec.model, template=template,
                                 template_version=version)
    return ParsedDifficulty(client, model=spec.model, template=template,
                            template_version=version, structured=spec.structured,
                            attempts=RATING_ATTEMPTS)
