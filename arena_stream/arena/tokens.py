"""Token counts of every model call: the model's own when it gave them, else an estimate.

Costs and budgets are computed from tokens, so a call whose server reported no
usage (some OpenAI-compatible servers leave ``usage`` out, or send zeros) must
not look free. When the model gave no count, the text is counted here with
:func:`count_tokens` (words, numbers, punctuation marks, each CJK character):
cheap, deterministic, and within a small factor of a BPE tokenizer's count for
prose. Style control (:mod:`arena_stream.ratings.style`) measures answer
lengths with the same counter. The record says which it is
(``token_source``: ``"reported"`` or ``"counted"``), so a cost built on
estimates is never mistaken for a bill.

A counted prompt is the text of its messages only: the chat template's
special tokens and a system prompt added by the client are not seen here, so
an estimate errs low on short prompts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

from arena_stream.schemas import Generation, Message

__all__ = ["count_tokens", "estimate_prompt_tokens", "filled_counts", "with_token_counts"]

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Words, numbers and punctuation marks, each CJK character on its own."""
    return len(_TOKEN.findall(text))


def estimate_prompt_tokens(messages: Iterable[Message | dict[str, str]]) -> int:
    """The estimated tokens of a conversation's text (see the module docstring)."""
    total = 0
    for m in messages:
        total += count_tokens(m["content"] if isinstance(m, dict) else m.content)
    return total


def filled_counts(
    prompt_tokens: int, completion_tokens: int, *, prompt: str | Iterable[Message | dict[str, str]],
    completion: str,
) -> tuple[int, int, str]:
    """``(prompt_tokens, completion_tokens, token_source)`` with a missing count estimated.

    A count of 0 is missing (no model reads or writes nothing); if either is
    estimated the pair is ``"counted"``, since their sum is then an estimate.
    """
    source = "reported"
    if prompt_tokens <= 0:
        prompt_tokens = (count_tokens(prompt) if isinstance(prompt, str)
                         else estimate_prompt_tokens(prompt))
        source = "counted"
    if completion_tokens <= 0 and completion:
        completion_tokens = count_tokens(completion)
        source = "counted"
    return prompt_tokens, completion_tokens, source


def with_token_counts(gen: Generation) -> Generation:
    """``gen`` with both token counts filled in and ``token_source`` set.

    The generate stage calls this on every answer it emits. A failed
    generation (``ok`` false) has no answer and keeps its zeros: what a failed
    call cost is not known. A generation that already says where its counts
    come from is returned as it is.
    """
    if gen.token_source or not gen.ok:
        return gen
    p, c, source = filled_counts(gen.prompt_tokens, gen.completion_tokens, prompt=gen.messages,
                                 completion=gen.answer)
    return msgspec.structs.replace(gen, prompt_tokens=p, completion_tokens=c, token_source=source)
