"""The paper's pairwise rule: two games per battle, positions swapped, one verdict.

**Scores.** For each game the judge sees the conversation and both answers
and gives each answer a score from 1 to 10 (criteria: coherence, factual
accuracy, context-awareness, overall quality).

**Combination rule** ("mean of both games", :func:`combine`). Each game's scores
are mapped back to model A / model B, whatever order they were shown in. The
battle's scores are the means over both games; the winner is the model with the
higher mean, or a tie when the means differ by no more than
``battles.tie_margin``; the margin is the absolute difference of the means. A
judge that favours the first-shown answer adds the same bonus to each model
once, so averaging cancels it; games that disagree are therefore decided by the
mean, not thrown away. ``Judgment.rule`` records ``agree`` when both games named
the same winner as the mean and ``disagree`` otherwise, so audits can count them.

:class:`ModelJudge` is what every judge that asks a model shares: render the
prompt (:mod:`arena_stream.judges.templates`), play both orders concurrently,
map the scores back and combine. A subclass only says how one game's two scores
are obtained (:meth:`ModelJudge.score_game`): parsed from a reply
(:mod:`~arena_stream.judges.llm`) or read from token probabilities
(:mod:`~arena_stream.judges.logprobs`). A judge that needs no model (a verifier)
still uses :func:`combine`, so every Judgment in the log means the same thing.
"""

from __future__ import annotations

import abc
import asyncio
import time
from typing import Literal

import msgspec

from arena_stream.config import BattlesConfig, JudgeConfig
from arena_stream.judges.base import JudgeFailed
from arena_stream.judges.templates import load_template, render
from arena_stream.models.clients import ChatClient
from arena_stream.models.retry import CallFailed
from arena_stream.schemas import Battle, Game, Judgment

Order = Literal["ab", "ba"]


def verdict_of(diff: float) -> str:
    """The winner named by a score difference ``a - b`` (no margin)."""
    return "model_a" if diff > 0 else ("model_b" if diff < 0 else "tie")


def combine(
    battle: Battle, games: list[Game], *, tie_margin: float, judge_model: str,
    template_version: str,
) -> Judgment:
    """The battle's verdict from its games by the mean-of-both rule (module docstring)."""
    score_a = sum(g.score_a for g in games) / len(games)
    score_b = sum(g.score_b for g in games) / len(games)
    diff = score_a - score_b
    winner = "tie" if abs(diff) <= tie_margin else ("model_a" if diff > 0 else "model_b")
    verdicts = {verdict_of(g.score_a - g.score_b) for g in games}
    rule = "agree" if verdicts == {winner} else "disagree"
    return Judgment(
        battle_id=battle.id,
        prompt_id=battle.prompt_id,
        round=battle.round,
        model_a=battle.model_a,
        model_b=battle.model_b,
        player_a=battle.player_a,
        player_b=battle.player_b,
        target=battle.target,
        winner=winner,
        score_a=round(score_a, 4),
        score_b=round(score_b, 4),
        margin=round(abs(diff), 4),
        games=games,
        rule=rule,
        judge_model=judge_model,
        template_version=template_version,
        messages=battle.messages,
        category=battle.category,
        answer_a=battle.answer_a,
        answer_b=battle.answer_b,
        ts=time.time(),
    )


class GameRequest(msgspec.Struct, frozen=True):
    """One game as the judge model sees it: the rendered prompt and the answers' order."""

    battle: Battle
    order: Order  # "ba": model_b's answer is shown first
    prompt: str
    first: str  # the answer shown as answer 1
    second: str


class GameScores(msgspec.Struct, frozen=True):
    """What one game yields, in the order shown (``score_1`` is the first-shown answer's)."""

    score_1: float
    score_2: float
    raw: str  # the judge's own output, verbatim (or the scores it was read as)
    explanation: str = ""
    attempts: int = 1
    method: str | None = None  # Game.method when it differs from the judge's own
    prompt_tokens: int = 0  # every call of the game (Game.prompt_tokens)
    completion_tokens: int = 0
    token_source: str = ""  # Game.token_source: "reported" or "counted"


class ModelJudge(abc.ABC):
    """A judge that asks one model about both orders of each battle (see the module doc)."""

    method: str  # Game.method: how a game's scores were obtained

    def __init__(self, spec: JudgeConfig, battles: BattlesConfig, client: ChatClient) -> None:
        self.spec = spec
        self.battles = battles
        self.client = client
        self.name = spec.model
        self.template, self.template_version = load_template(spec)

    def clients(self) -> dict[str, ChatClient]:
        return {"judge": self.client}

    def render(self, battle: Battle, first: str, second: str) -> str:
        return render(self.template, battle, first, second,
                      max_answer_chars=self.spec.max_answer_chars)

    def combine(self, battle: Battle, games: list[Game]) -> Judgment:
        return combine(battle, games, tie_margin=self.battles.tie_margin, judge_model=self.name,
                       template_version=self.template_version)

    async def judge(self, battle: Battle) -> Judgment:
        """Play both games concurrently and combine them; raises :class:`JudgeFailed`."""
        try:
            g1, g2 = await asyncio.gather(self._game(battle, "ab"), self._game(battle, "ba"))
        except CallFailed as exc:
            raise JudgeFailed(exc.reason, exc.message, exc.attempts) from exc
        return self.combine(battle, [g1, g2])

    async def _game(self, battle: Battle, order: Order) -> Game:
        first, second = (
            (battle.answer_a, battle.answer_b) if order == "ab"
            else (battle.answer_b, battle.answer_a)
        )
        request = GameRequest(battle, order, self.render(battle, first, second), first, second)
        scores = await self.score_game(request)
        s1, s2 = scores.score_1, scores.score_2
        score_a, score_b = (s1, s2) if order == "ab" else (s2, s1)
        return Game(order=order, score_a=score_a, score_b=score_b, raw=scores.raw,
                    explanation=scores.explanation, method=scores.method or self.method,
                    attempts=scores.attempts, prompt_tokens=scores.prompt_tokens,
                    completion_tokens=scores.completion_tokens,
                    token_source=scores.token_source)  # type: ignore[arg-type]

    @abc.abstractmethod
    async def score_game(self, request: GameRequest) -> GameScores:
        """Both answers' scores for one game; raises ``CallFailed`` (with ``attempts``)."""
