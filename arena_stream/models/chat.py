"""The conversation a model is shown: one function, shared by serving and training.

A player's ``system_prompt`` is part of what it is: every client puts it in
front of the conversation before the chat template is applied. The trainer
must format its samples the same way, or the target learns to answer under a
prompt it never sees when it plays (SmolLM2's template, for one, inserts its
own default system prompt when a conversation has none). Both sides call
:func:`served_messages`, so they cannot drift apart; ``tests/test_training_serving.py``
checks the tokens are identical.
"""

from __future__ import annotations

from collections.abc import Sequence


def served_messages(
    system_prompt: str | None, messages: Sequence[dict[str, str]]
) -> list[dict[str, str]]:
    """``messages`` as the player sees them: its system prompt first, unless one is there."""
    if system_prompt and not (messages and messages[0]["role"] == "system"):
        return [{"role": "system", "content": system_prompt}, *messages]
    return list(messages)
