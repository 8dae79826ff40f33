"""The log-prob judge: scores read from an in-process model's token probabilities.

Instead of letting the judge write a reply and parsing it, its reply is begun
for it (``{"score_1": ``) and the probabilities of the digit tokens 1..9 are read
at the next position; the score is their expected value. The first score is then
written as its rounded value and the second read the same way, in the same
forward pass (:class:`~arena_stream.models.clients.ScoresTokens`). Every game
therefore yields a verdict, which makes even SmolLM2-135M usable as a judge of
the machinery. Measured: that model prefers whichever answer is shown first
about 85% of the time, and with positions swapped its preference on obvious
good/bad pairs is barely above chance. It is not a judge of quality.

It needs a client with the ``ScoresTokens`` capability (``backend =
"transformers"``); ``scoring = "auto"`` picks it whenever the judge's client has
that capability.
"""

from __future__ import annotations

import math

from arena_stream.arena.tokens import count_tokens
from arena_stream.config import BattlesConfig, ConfigError, JudgeConfig
from arena_stream.judges.pairwise import GameRequest, GameScores, ModelJudge
from arena_stream.models.clients import ChatClient, CountsTokens, ScoresTokens
from arena_stream.models.retry import CallFailed

REPLY_START = '{"score_1": '
BETWEEN_SCORES = ', "score_2": '
DIGITS = [str(d) for d in range(1, 10)]
DIGIT_VALUES = [float(d) for d in range(1, 10)]


def expected_value(probs: list[float], values: list[float]) -> float:
    """The expected value of ``values`` under ``probs`` renormalised, or :class:`CallFailed`.

    A model whose probabilities are not finite (a broken checkpoint or adapter
    gives NaN logits) or that puts no mass at all on the candidates has no
    verdict; inventing one (a middle score) would rate a battle nobody judged.
    """
    if len(probs) != len(values) or not all(math.isfinite(p) and p >= 0.0 for p in probs):
        raise CallFailed("not_finite", f"token probabilities are not finite: {probs}",
                         retryable=False)
    total = math.fsum(probs)
    if total <= 0.0:
        raise CallFailed("no_probability", "the model gives the candidate tokens no "
                         "probability", retryable=False)
    value = math.fsum(v * p for v, p in zip(values, probs, strict=True)) / total
    if not (math.isfinite(value) and min(values) <= value <= max(values)):
        raise CallFailed("not_finite", f"expected value {value} is outside "
                         f"{min(values)}..{max(values)}", retryable=False)
    return round(value, 4)


def expected_digit(probs: list[float]) -> float:
    """Expected score over the digit tokens 1..9, renormalised.

    A leading "1" may begin "10"; telling them apart takes a second forward
    pass, which the 135M judge does not earn, so "1" is read as 1.
    """
    return expected_value(probs, DIGIT_VALUES)


def rounded_expected_index(probs: list[float]) -> int:
    """Index of the digit the first score is written as before the second is read.

    Called inside the model's batch; a reading with no verdict picks "5" here
    and is rejected when the judge reads it (:func:`expected_digit`).
    """
    try:
        return min(8, max(0, round(expected_digit(probs)) - 1))
    except CallFailed:
        return 4


class LogprobJudge(ModelJudge):
    """Expected 1..9 scores from an in-process model's digit probabilities."""

    method = "logprobs"

    def __init__(self, spec: JudgeConfig, battles: BattlesConfig, client: ChatClient) -> None:
        if not isinstance(client, ScoresTokens):
            raise ConfigError(
                f'judge: scoring = "logprobs" needs a model whose token probabilities can be '
                f'read (backend = "transformers"), not backend = "{spec.backend}"'
            )
        super().__init__(spec, battles, client)
        self.scorer: ScoresTokens = client

    async def score_game(self, request: GameRequest) -> GameScores:
        messages = [{"role": "user", "content": request.prompt}]
        first, second = await self.scorer.token_probabilities_twice(
            messages, REPLY_START, DIGITS, BETWEEN_SCORES, rounded_expected_index,
        )
        s1, s2 = expected_digit(first), expected_digit(second)
        raw = f"{REPLY_START}{s1:.3f}{BETWEEN_SCORES}{s2:.3f}}}"
        # The scoring pass reads the prompt and writes nothing: prompt tokens only, the
        # tokenizer's count where the client has one, else the estimate.
        if isinstance(self.client, CountsTokens):
            tokens = await self.client.count_prompt_tokens(messages, REPLY_START)
            source = "reported"
        else:
            tokens, source = count_tokens(request.prompt + REPLY_START), "counted"
        return GameScores(s1, s2, raw, prompt_tokens=tokens, token_source=source)
