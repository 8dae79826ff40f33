"""Pairing answers into battles.

Two modes, as in the paper: ``target-vs-competitors`` (each competitor
against the target: the training mode) and ``round-robin`` (every pair of
players: the paper found it gives the best training data). Battle ids are a
hash of the prompt and the two rated models, so re-forming the battles of a
prompt (after a redelivery or a restart) yields the same ids, and every later
stage can drop what it has already seen.
"""

from __future__ import annotations

import hashlib
import itertools

from arena_stream.schemas import Battle, Generation


def battle_id(prompt_id: str, model_a: str, model_b: str, play: str = "") -> str:
    """Deterministic: the same prompt admission and the same two models give the same id."""
    raw = f"{prompt_id}\x1f{model_a}\x1f{model_b}" + (f"\x1f{play}" if play else "")
    return "b-" + hashlib.sha256(raw.encode()).hexdigest()[:24]


def pairs(
    generations: list[Generation], mode: str, target_player: str
) -> list[tuple[Generation, Generation]]:
    """The (a, b) pairs to judge among the successful generations of one prompt.

    The order inside a pair is deterministic (target first, else configured
    order); the judge plays both orders anyway, so position carries no bias.
    """
    ok = [g for g in generations if g.ok]
    if mode == "round-robin":
        return list(itertools.combinations(ok, 2))
    target = next((g for g in ok if g.player == target_player), None)
    if target is None:
        return []
    return [(target, g) for g in ok if g.player != target_player]


def reported_completion_tokens(gen: Generation) -> int:
    """The answer's token count as its model reported it, 0 when it was only estimated.

    Style control compares both answers' lengths in one unit: a model's own count
    beside an estimate would not be; with a 0 the judge stage counts both alike.
    """
    return 0 if gen.token_source == "counted" else gen.completion_tokens


def form_battles(
    generations: list[Generation], *, mode: str, target_player: str, now: float
) -> list[Battle]:
    out = []
    matched = pairs(generations, mode, target_player)
    for a, b in matched:
        target = (
            a.model
            if a.player == target_player
            else (b.model if b.player == target_player else None)
        )
        out.append(
            Battle(
                id=battle_id(a.prompt_id, a.model, b.model, a.play),
                prompt_id=a.prompt_id,
                mode=mode,
                round=max(a.round, b.round),
                messages=a.messages,
                category=a.category,
                metadata=a.metadata,
                model_a=a.model,
                model_b=b.model,
                player_a=a.player,
                player_b=b.player,
                answer_a=a.answer,
                answer_b=b.answer,
                target=target,
                of=len(matched),
                tokens_a=reported_completion_tokens(a),
                tokens_b=reported_completion_tokens(b),
                ts=now,
            )
        )
    return out
