"""Judges: from a battle (two answers to one prompt) to a verdict.

:func:`build_judge` is the one place a judge is built from ``[judge]``; the
stream (``streams/runtime.py``) and the offline evaluation both call it. The
interface every judge satisfies is :class:`~arena_stream.judges.base.Judge`.

Where things live:

========================  ==========================================================
``base.py``               the ``Judge`` protocol and ``JudgeFailed``
``pairwise.py``           the two-games-swapped mean-of-both rule (``combine``) and
                          ``ModelJudge``, the base of every judge that asks a model
``templates.py``          judge prompts and the answer fences (injection defences)
``llm.py``                ``LLMJudge``: a model writes a JSON verdict, parsed
``logprobs.py``           ``LogprobJudge``: scores from token probabilities
========================  ==========================================================

To add a judge (a verifier, a reward model, an ensemble): write one module with a
class that satisfies ``Judge`` (reuse :func:`~arena_stream.judges.pairwise.combine`
so its Judgments mean what every other one means), and add one branch below.
"""

from __future__ import annotations

from arena_stream.config import BattlesConfig, JudgeConfig
from arena_stream.judges.base import Judge, JudgeFailed
from arena_stream.judges.llm import LLMJudge
from arena_stream.judges.logprobs import LogprobJudge
from arena_stream.models.clients import ChatClient, ScoresTokens, build_client

__all__ = ["Judge", "JudgeFailed", "build_judge"]


def build_judge(
    spec: JudgeConfig, battles: BattlesConfig, *, client: ChatClient | None = None
) -> Judge:
    """The judge ``[judge]`` describes; ``client`` replaces the model client it would build.

    ``scoring``: ``"parse"`` reads the model's written verdict, ``"logprobs"`` reads
    token probabilities (in-process models only; a :class:`ConfigError` otherwise),
    ``"auto"`` takes log-probs whenever the client can give them.
    """
    client = client or build_client(spec, "judge")
    if spec.scoring == "logprobs" or (
        spec.scoring == "auto" and isinstance(client, ScoresTokens)
    ):
        return LogprobJudge(spec, battles, client)
    return LLMJudge(spec, battles, client)
