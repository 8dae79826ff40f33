"""Turning judgments into training data, the flywheel's input.

- **SFT**: every battle the target *loses* by at least ``sft_margin`` gives
  the conversation with the winner's answer as the assistant turn.
- **DPO**: every battle *involving* the target decided by at least
  ``dpo_margin`` gives chosen = the winner's answer, rejected = the loser's
  (whichever side the target was on).

The defaults (3.0 and 2.0 on the 1-10 scale) are the paper's best thresholds.
A tie is never routed. Sample ids are the battle id, so a judgment routed
twice yields the same sample, which the buffers drop. Which kinds exist, and
which topic each kind's samples go to, is the registry's business
(:mod:`arena_stream.arena.kinds`, whose entries point at these rules).
"""

from __future__ import annotations

from typing import Protocol

from arena_stream.schemas import DPOPair, Judgment, Message, SFTSample


class Thresholds(Protocol):
    """The margins routing needs (``[routing]`` in the config)."""

    sft_margin: float
    dpo_margin: float


def _decided(judgment: Judgment) -> tuple[str, str, str, str] | None:
    """(winner, loser, winner's answer, loser's answer) of a decided target battle, else None."""
    target = judgment.target
    if target is None or judgment.winner == "tie":
        return None
    if target not in (judgment.model_a, judgment.model_b):
        return None
    if judgment.winner == "model_a":
        return judgment.model_a, judgment.model_b, judgment.answer_a, judgment.answer_b
    return judgment.model_b, judgment.model_a, judgment.answer_b, judgment.answer_a


def sft_samples(judgment: Judgment, routing: Thresholds, now: float) -> list[SFTSample]:
    """A battle the target lost by at least ``sft_margin``: learn the winner's answer."""
    decided = _decided(judgment)
    if decided is None:
        return []
    winner, loser, win_answer, _ = decided
    if loser != judgment.target or judgment.margin < routing.sft_margin:
        return []
    return [SFTSample(
        id=judgment.battle_id, battle_id=judgment.battle_id, prompt_id=judgment.prompt_id,
        round=judgment.round, messages=[*judgment.messages, Message("assistant", win_answer)],
        winner=winner, loser=loser, margin=judgment.margin, ts=now,
    )]


def dpo_pairs(judgment: Judgment, routing: Thresholds, now: float) -> list[DPOPair]:
    """A target battle decided by at least ``dpo_margin``: prefer the winner to the loser."""
    decided = _decided(judgment)
    if decided is None or judgment.margin < routing.dpo_margin:
        return []
    winner, loser, win_answer, lose_answer = decided
    return [DPOPair(
        id=judgment.battle_id, battle_id=judgment.battle_id, prompt_id=judgment.prompt_id,
        round=judgment.round, prompt=list(judgment.messages), chosen=win_answer,
        rejected=lose_answer, chosen_model=winner, rejected_model=loser,
        margin=judgment.margin, ts=now,
    )]
