"""evaluate: every new target version plays the fixed held-out set, in the stream.

When a target version is taken (and for the version a worker starts with,
``target@v0`` on a fresh log), :func:`evaluate` publishes each prompt of
``[evaluation] heldout`` to ``prompts`` under the id ``eval:v<N>:<id>``. From
there they travel like any prompt (intake, generate, collect, judge, rate),
with three differences, each keyed on that id:

- intake does not test them against ``[decontamination] against`` (the
  held-out set is what that list is meant to hold);
- route never turns their judgments into training samples
  (:func:`is_heldout`), so training never sees a held-out prompt;
- the held-out ratings (:mod:`arena_stream.arena.lineage`) take only their
  judgments, one Bradley-Terry fit over every version's held-out battles.

The ids are deterministic, so every worker may publish the same evaluation:
admit keeps each id once (within ``[state] dedup_window_s``), and a restarted
worker that publishes again changes nothing. Which version answered is the
Generation's own ``model`` (``target@vN``), not the id's version: should the
target switch before an evaluation prompt is answered, the battle counts for
the version that really played.
"""

from __future__ import annotations

import re

from arena_stream.schemas import Prompt
from arena_stream.streams.stages.base import Outcome

PREFIX = "eval:"
_ID = re.compile(r"^eval:v(\d+):(.+)$")


def eval_id(version: int, prompt_id: str) -> str:
    """The id under which ``version`` plays held-out prompt ``prompt_id``."""
    return f"{PREFIX}v{version}:{prompt_id}"


def is_heldout(prompt_id: str) -> bool:
    """Whether a prompt (or a battle's, a judgment's prompt) is a held-out evaluation."""
    return prompt_id.startswith(PREFIX)


def parse_eval_id(prompt_id: str) -> tuple[int, str] | None:
    """(version, held-out prompt id) of an evaluation id, None for any other id."""
    match = _ID.match(prompt_id)
    return (int(match.group(1)), match.group(2)) if match else None


def evaluate(version: int, heldout: list[Prompt], now: float = 0.0) -> Outcome:
    """The held-out prompts for ``version``, to send to ``prompts`` (keyed by their ids)."""
    out = Outcome()
    for prompt in heldout:
        pid = eval_id(version, prompt.id)
        out.emit("prompts", pid, Prompt(id=pid, messages=prompt.messages,
                                        category=prompt.category, metadata=prompt.metadata,
                                        ts=now))
    out.count("evaluate.prompts", len(heldout))
    return out
