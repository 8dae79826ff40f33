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
``verdict.py``            the verdict's JSON schema and the parse rule no answer can game
``logprobs.py``           ``LogprobJudge``: scores from token probabilities
``checks.py``             the check library: instruction following, references, yours
``verifier.py``           ``VerifierJudge``: checks instead of a model
``ensemble.py``           ``EnsembleJudge``: the verifier and an LLM judge, by a rule
``difficulty.py``         a prompt's 0-10 difficulty (the offline test set's hard half)
========================  ==========================================================

``[judge] kind`` picks the judge: ``"model"`` (the default; ``scoring`` picks the
LLM or the log-prob judge), ``"verifier"`` or ``"ensemble"``.

To add a judge (a reward model, say): write one module with a class that
satisfies ``Judge`` (reuse :func:`~arena_stream.judges.pairwise.combine` so its
Judgments mean what every other one means), and add one branch below.
"""

from __future__ import annotations

import msgspec

from arena_stream.config import BattlesConfig, JudgeConfig
from arena_stream.judges.base import Judge, JudgeFailed
from arena_stream.judges.ensemble import EnsembleJudge
from arena_stream.judges.llm import LLMJudge
from arena_stream.judges.logprobs import LogprobJudge
from arena_stream.judges.verifier import VerifierJudge
from arena_stream.models.clients import ChatClient, ScoresTokens, build_client

__all__ = ["Judge", "JudgeFailed", "build_judge"]


def build_judge(
    spec: JudgeConfig, battles: BattlesConfig, *, client: ChatClient | None = None
) -> Judge:
    """The judge ``[judge]`` describes; ``client`` replaces the model client it would build.

    ``kind``: ``"verifier"`` needs no model; ``"ensemble"`` combines the verifier with
    the model judge below. ``scoring``: ``"parse"`` reads the model's written verdict,
    ``"logprobs"`` reads token probabilities (in-process models only; a
    :class:`ConfigError` otherwise), ``"auto"`` takes log-probs whenever the client
    can give them.
    """
    if spec.kind == "verifier":
        return VerifierJudge(spec.verifier, battles)
    if spec.kind == "ensemble":
        model_judge = build_judge(msgspec.structs.replace(spec, kind="model"), battles,
                                  client=client)
        return EnsembleJudge(VerifierJudge(spec.verifier, battles), model_judge,
                             spec.ensemble.rule)
    client = client or build_client(spec, "judge")
    if spec.scoring == "logprobs" or (
        spec.scoring == "auto" and isinstance(client, ScoresTokens)
    ):
        return LogprobJudge(spec, battles, client)
    return LLMJudge(spec, battles, client)
