"""The ensemble: the verifier and an LLM judge on one battle (``[judge] kind = "ensemble"``).

Checks are exact where they apply and blind where they do not (two answers that
both follow every instruction can still differ in quality); an LLM judge sees
quality but can be biased or fooled. The ensemble lets each decide where it is
strong, by ``[judge.ensemble] rule``:

* ``verifier-first`` (default): when exactly one answer passes every check, the
  verifier decides and the LLM judge is not called; when both or neither pass,
  or the prompt declares no check, the LLM judge decides.
* ``llm-first``: the LLM judge decides; when it calls a tie, or fails (its
  battle would be dead-lettered), a decisive verifier decides instead.

The Judgment says who decided: ``rule`` is ``verifier`` or ``llm:<the LLM
judge's own rule>`` (``agree`` / ``disagree``), ``judge_model`` is the
ensemble's name (``verifier+<model>``), and ``checks`` carries every check's
outcome, with ``checks.decided`` telling whether they decided. A check that
cannot be evaluated dead-letters the battle (``bad_check``), as with the
verifier alone: a broken check is a mistake to fix, not a reason to let the
LLM judge quietly take over.
"""

from __future__ import annotations

import msgspec
import structlog

from arena_stream.judges.base import Judge, JudgeFailed
from arena_stream.judges.verifier import Verification, VerifierJudge
from arena_stream.models.clients import ChatClient
from arena_stream.schemas import Battle, Judgment

log = structlog.get_logger(__name__)


class EnsembleJudge:
    """A verifier and an LLM judge, combined by a configurable rule (see the module doc)."""

    def __init__(self, verifier: VerifierJudge, llm: Judge, rule: str) -> None:
        if rule not in ("verifier-first", "llm-first"):
            raise ValueError(f"unknown ensemble rule {rule!r}")
        self.verifier = verifier
        self.llm = llm
        self.rule = rule
        self.name = f"{verifier.name}+{llm.name}"
        self.template_version = f"{verifier.template_version}+{llm.template_version}"

    def clients(self) -> dict[str, ChatClient]:
        return self.llm.clients()

    async def judge(self, battle: Battle) -> Judgment:
        try:
            checked: Verification | None = self.verifier.verify(battle)
        except JudgeFailed as exc:
            if exc.reason != "no_checks":
                raise
            checked = None  # nothing to verify: the LLM judge decides alone
        decisive = checked is not None and checked.decisive
        if self.rule == "verifier-first":
            if checked is not None and decisive:
                return self._by_verifier(battle, checked)
            return self._by_llm(await self.llm.judge(battle), checked)
        try:
            judgment = await self.llm.judge(battle)
        except JudgeFailed as exc:
            if checked is not None and decisive:
                log.warning("judge.ensemble_fallback", battle_id=battle.id, reason=exc.reason)
                return self._by_verifier(battle, checked)
            raise
        if judgment.winner == "tie" and checked is not None and decisive:
            return self._by_verifier(battle, checked)
        return self._by_llm(judgment, checked)

    def _by_verifier(self, battle: Battle, checked: Verification) -> Judgment:
        return self.verifier.verdict(battle, checked, judge_model=self.name,
                                     template_version=self.template_version)

    def _by_llm(self, judgment: Judgment, checked: Verification | None) -> Judgment:
        report = (None if checked is None
                  else msgspec.structs.replace(checked.report, decided=False))
        return msgspec.structs.replace(
            judgment, rule=f"llm:{judgment.rule}", judge_model=self.name,
            template_version=self.template_version, checks=report,
        )
