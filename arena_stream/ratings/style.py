"""Style counts of two answers and the style features of LMArena's style control.

LMArena separates substance from style with a contextual Bradley-Terry model
(:mod:`arena_stream.ratings.contextual`): besides the two models' strengths,
each battle's outcome depends on how the two answers differ in length and
markdown. This module holds the per-battle inputs, with the definitions of
LMArena (``conv_metadata`` in ``arena-human-preference-140k``, and the
``arena-rank`` package's LMArena example):

* **headers**: lines that start with one to six ``#`` and a space;
* **list items**: lines that start (after indentation) with ``1.``-style
  numbers or ``-``, ``*``, ``+`` and a space;
* **bold spans**: ``**text**`` or ``__text__`` within one line;
* fenced code blocks (between triple backticks) are removed before the three
  markdown counts, so code is not mistaken for markdown;
* **tokens**: the answer's length in tokens. LMArena counts with a BPE
  tokenizer (tiktoken); no tokenizer's vocabulary can be fetched here, so
  :func:`count_tokens` counts words and punctuation marks (and each CJK
  character), which is close to proportional to BPE tokens. The feature
  only uses ``(a - b) / (a + b)``, where a common factor cancels exactly.

Feature per battle and kind: ``(a - b) / (a + b)``, with a total of 0 taken
as 1 (so two answers without headers give 0), then standardised over the
battles being fitted (mean 0, standard deviation 1; a constant feature is
left at 0). The stream records the counts with every judgment
(``Judgment.style``, from :func:`style_counts`); battles files may carry
LMArena's ``conv_metadata`` instead, or only the answers.

Pure Python on purpose: the judge stage calls :func:`style_counts` per battle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from arena_stream.arena.tokens import count_tokens
from arena_stream.schemas.events import Battle, StyleCounts

# Order of the features everywhere (columns, coefficients): LMArena's example's order.
FEATURES = ("tokens", "headers", "bold", "lists")
FEATURE_LABELS = {
    "tokens": "answer tokens",
    "headers": "markdown headers",
    "bold": "bold spans",
    "lists": "list items",
}
# LMArena's conv_metadata keys for each feature, answer a then answer b.
CONV_METADATA_KEYS = {
    "tokens": ("sum_assistant_a_tokens", "sum_assistant_b_tokens"),
    "headers": ("header_count_a", "header_count_b"),
    "bold": ("bold_count_a", "bold_count_b"),
    "lists": ("list_count_a", "list_count_b"),
}
# Our flat columns (and StyleCounts fields), answer a then answer b.
COUNT_COLUMNS = {f: (f"{f}_a", f"{f}_b") for f in FEATURES}

_CODE_BLOCK = re.compile(r"```[^`]*```")
_HEADER = re.compile(r"^#{1,6}\s", re.MULTILINE)
_LIST_ITEM = re.compile(r"^\s*(?:\d+\.|[-*+])\s", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")
def markdown_counts(text: str) -> tuple[int, int, int]:
    """``(headers, bold spans, list items)`` of one answer, code blocks removed first."""
    prose = _CODE_BLOCK.sub("", text)
    return len(_HEADER.findall(prose)), len(_BOLD.findall(prose)), len(_LIST_ITEM.findall(prose))


def style_counts(
    answer_a: str,
    answer_b: str,
    *,
    tokens_a: int | None = None,
    tokens_b: int | None = None,
) -> StyleCounts:
    """The style counts of a battle's two answers (for ``Judgment.style``).

    ``tokens_a`` / ``tokens_b``: the server's completion token counts when
    known (they replace :func:`count_tokens`; give both or neither, so the two
    sides are counted alike).
    """
    if (tokens_a is None) != (tokens_b is None):
        raise ValueError("give both answers' token counts or neither")
    ha, ba, la = markdown_counts(answer_a)
    hb, bb, lb = markdown_counts(answer_b)
    return StyleCounts(
        tokens_a=count_tokens(answer_a) if tokens_a is None else int(tokens_a),
        tokens_b=count_tokens(answer_b) if tokens_b is None else int(tokens_b),
        headers_a=ha, headers_b=hb, bold_a=ba, bold_b=bb, lists_a=la, lists_b=lb,
    )


def battle_style(battle: Battle) -> StyleCounts:
    """A battle's style counts, with its servers' token counts when both players gave them."""
    known = battle.tokens_a > 0 and battle.tokens_b > 0
    return style_counts(battle.answer_a, battle.answer_b,
                        tokens_a=battle.tokens_a if known else None,
                        tokens_b=battle.tokens_b if known else None)


def _metadata_count(value: Any, key: str) -> int:
    """One ``conv_metadata`` entry: an int, or a dict of sub-counts (``h1``..``h6``) to sum."""
    if isinstance(value, Mapping):
        return int(sum(v for v in value.values() if v is not None))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"conv_metadata {key}: expected a count or a dict of counts, "
                         f"got {value!r}")
    return int(value)


def counts_from_conv_metadata(meta: Mapping[str, Any]) -> StyleCounts:
    """LMArena's ``conv_metadata`` of one battle as :class:`StyleCounts`."""
    values: dict[str, int] = {}
    for feature, keys in CONV_METADATA_KEYS.items():
        for side, key in zip("ab", keys, strict=True):
            if key not in meta or meta[key] is None:
                raise ValueError(f"conv_metadata has no {key}")
            values[f"{feature}_{side}"] = _metadata_count(meta[key], key)
    return StyleCounts(**values)


def assistant_text(conversation: Any) -> str:
    """The assistant turns of an LMArena ``conversation_a``/``_b`` joined, or a plain answer."""
    if isinstance(conversation, str):
        return conversation
    parts: list[str] = []
    for turn in conversation or ():
        if isinstance(turn, Mapping) and turn.get("role") == "assistant":
            content = turn.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):  # multimodal content: keep the text parts
                parts.extend(p.get("text", "") for p in content
                             if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return "\n".join(parts)


def relative_difference(a: float, b: float) -> float:
    """``(a - b) / (a + b)``, with a total of 0 taken as 1."""
    total = a + b
    return (a - b) / (total if total != 0 else 1)
