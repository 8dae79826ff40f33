"""The verifier judge: programmatic checks instead of a model (``[judge] kind = "verifier"``).

Each answer is checked against the checks its prompt declares (``metadata.checks``
and ``metadata.reference``, see :mod:`arena_stream.judges.checks`) plus those of
``[judge.verifier] checks``. An answer's score is 1 + 9 x the share of its checks
passed (``scoring = "fraction"``), or 10 when it passes them all and 1 otherwise
(``scoring = "all"``); the battle is then decided by the same mean-of-both rule
as every other judge (:func:`~arena_stream.judges.pairwise.combine`).

**No position bias, and how the Judgment shows it.** The checks read one answer
at a time and never learn whether it was shown first. The Judgment still holds
two games, ``ab`` and ``ba``, as every Judgment does, but they are the same
results mapped to both orders (equal ``score_a`` and ``score_b``, ``method =
"verifier"``, no model call: ``attempts = 0``), and ``rule = "verifier"`` says
that no position-swapped model play was involved. ``Judgment.checks`` lists
every check and its outcome for each answer.

It is exact, cheap and cannot be talked to: an answer that writes a verdict or
quotes the instruction passes only the checks it really passes. A battle whose
prompt declares no check has no verifier verdict (``no_checks``), and a check
that cannot be evaluated (unknown, badly parameterised, a failing function)
dead-letters the battle with ``bad_check`` and the reason: both are mistakes in
the prompt or the config, and neither is taken as a win for anyone.
"""

from __future__ import annotations

import json

import msgspec

from arena_stream.config import BattlesConfig, ConfigError, VerifierConfig
from arena_stream.judges import checks
from arena_stream.judges.base import JudgeFailed
from arena_stream.judges.pairwise import combine
from arena_stream.models.clients import ChatClient
from arena_stream.schemas import Battle, CheckReport, CheckResult, Game, Judgment


class Verification(msgspec.Struct, frozen=True):
    """Both answers' checks, and the scores they give."""

    report: CheckReport
    score_a: float
    score_b: float

    @property
    def decisive(self) -> bool:
        """Exactly one answer passed every check."""
        return self.report.passed_a != self.report.passed_b


class VerifierJudge:
    """Judges battles by the checks of :mod:`arena_stream.judges.checks` alone."""

    name = "verifier"

    def __init__(self, config: VerifierConfig, battles: BattlesConfig) -> None:
        self.config = config
        self.battles = battles
        try:
            self.registry = checks.Registry(config.custom, config.modules)
        except checks.CheckSpecError as exc:
            raise ConfigError(f"judge.verifier.custom: {exc}") from None
        for i, spec in enumerate(config.checks):  # configured checks must make sense now
            try:
                checks.validate(spec, self.registry)
            except checks.CheckSpecError as exc:
                raise ConfigError(f"judge.verifier.checks[{i}]: {exc}") from None
        self.template_version = checks.version(config.checks, config.custom)

    def clients(self) -> dict[str, ChatClient]:
        return {}

    def verify(self, battle: Battle) -> Verification:
        """Check both answers; :class:`JudgeFailed` when the checks cannot be evaluated."""
        try:
            results_a = self._check(battle, battle.answer_a)
            results_b = self._check(battle, battle.answer_b)
        except checks.CheckSpecError as exc:
            raise JudgeFailed("bad_check", str(exc)) from exc
        if not results_a:
            raise JudgeFailed("no_checks", f"prompt {battle.prompt_id} declares no check "
                              "(metadata.checks) and [judge.verifier] checks is empty")
        report = CheckReport(a=results_a, b=results_b, passed_a=checks.all_passed(results_a),
                             passed_b=checks.all_passed(results_b), decided=True,
                             version=self.template_version)
        return Verification(report, self._score(results_a), self._score(results_b))

    async def judge(self, battle: Battle) -> Judgment:
        return self.verdict(battle, self.verify(battle))

    def verdict(self, battle: Battle, verification: Verification, *,
                judge_model: str | None = None, template_version: str | None = None,
                ) -> Judgment:
        """The Judgment of a verification: two identical games, ``rule = "verifier"``."""
        v = verification
        raw = json.dumps({"a": _tally(v.report.a), "b": _tally(v.report.b)})
        explanation = (f"model_a passed {_tally(v.report.a)} checks, "
                       f"model_b {_tally(v.report.b)}")
        games = [Game(order=order, score_a=v.score_a, score_b=v.score_b, raw=raw,
                      explanation=explanation, method="verifier", attempts=0)
                 for order in ("ab", "ba")]
        judgment = combine(battle, games, tie_margin=self.battles.tie_margin,
                           judge_model=judge_model or self.name,
                           template_version=template_version or self.template_version)
        return msgspec.structs.replace(judgment, rule="verifier", checks=v.report)

    def _check(self, battle: Battle, answer: str) -> list[CheckResult]:
        return checks.evaluate(battle.metadata, answer, messages=battle.messages,
                               registry=self.registry, extra=self.config.checks)

    def _score(self, results: list[CheckResult]) -> float:
        passed = sum(r.passed for r in results)
        if self.config.scoring == "all":
            return 10.0 if passed == len(results) else 1.0
        return round(1.0 + 9.0 * passed / len(results), 4)


def _tally(results: list[CheckResult]) -> str:
    return f"{sum(r.passed for r in results)}/{len(results)}"
