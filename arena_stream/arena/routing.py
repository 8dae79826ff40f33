"""Turning judgments into training data, the flywheel's input.

- **SFT**: every battle the target *loses* by at least ``sft_margin`` gives
  the conversation with the winner's answer as the assistant turn.
- **DPO**: every battle *involving* the target decided by at least
  ``dpo_margin`` gives chosen = the winner's answer, rejected = the loser's
  (whichever side the target was on).

The defaults (3.0 and 2.0 on the 1-10 scale) are the paper's best thresholds.
A tie is never routed. Sample ids are the battle id, so a judgment routed
twice yields the same sample, which the buffers drop.
"""

from __future__ import annotations

from arena_stream.config import RoutingConfig
from arena_stream.schemas import DPOPair, Judgment, Message, SFTSample


def route(judgment: Judgment, routing: RoutingConfig, *, now: float) -> list[SFTSample | DPOPair]:
    target = judgment.target
    if target is None or judgment.winner == "tie":
        return []
    if target not in (judgment.model_a, judgment.model_b):
        return []
    a_won = judgment.winner == "model_a"
    winner, loser = (
        (judgment.model_a, judgment.model_b) if a_won else (judgment.model_b, judgment.model_a)
    )
    win_answer, lose_answer = (
        (judgment.answer_a, judgment.answer_b) if a_won else (judgment.answer_b, judgment.answer_a)
    )
    out: list[SFTSample | DPOPair] = []
    if loser == target and judgment.margin >= routing.sft_margin:
        out.append(
            SFTSample(
                id=judgment.battle_id,
                battle_id=judgment.battle_id,
                prompt_id=judgment.prompt_id,
                round=judgment.round,
                messages=[*judgment.messages, Message("assistant", win_answer)],
                winner=winner,
                loser=loser,
                margin=judgment.margin,
                ts=now,
            )
        )
    if judgment.margin >= routing.dpo_margin:
        out.append(
            DPOPair(
                id=judgment.battle_id,
                battle_id=judgment.battle_id,
                prompt_id=judgment.prompt_id,
                round=judgment.round,
                prompt=list(judgment.messages),
                chosen=win_answer,
                rejected=lose_answer,
                chosen_model=winner,
                rejected_model=loser,
                margin=judgment.margin,
                ts=now,
            )
        )
    return out
