"""Generated LMArena-format battles (``conv_metadata`` as in arena-human-preference-140k).

Each battle gets random style counts for both answers; the outcome follows a
contextual Bradley-Terry model with known strengths and a planted effect per
style feature (in natural log-odds per unit of the raw relative difference
``(a - b) / (a + b)``), so tests can check that style control recovers it.
"""

from __future__ import annotations

import numpy as np
import polars as pl

STRENGTHS = {f"model-{i}": s for i, s in enumerate([-1.2, -0.7, -0.3, 0.0, 0.2, 0.5, 0.9, 1.3])}


def generate(
    n: int,
    *,
    seed: int,
    length_effect: float = 1.5,
    bold_effect: float = 0.0,
    tie_rate: float = 0.1,
    verbose: tuple[str, ...] = ("model-1",),
) -> pl.DataFrame:
    """``n`` battles; models in ``verbose`` write three times as many tokens on average."""
    rng = np.random.default_rng(seed)
    names = np.array(list(STRENGTHS))
    strength = np.array(list(STRENGTHS.values()))
    k = len(names)
    a = rng.integers(0, k, n)
    b = (a + rng.integers(1, k, n)) % k
    scale = np.where(np.isin(names, verbose), 3.0, 1.0)
    tokens_a = np.round(rng.lognormal(np.log(300 * scale[a]), 0.7)).astype(int) + 1
    tokens_b = np.round(rng.lognormal(np.log(300 * scale[b]), 0.7)).astype(int) + 1
    bold_a, bold_b = rng.poisson(2, n), rng.poisson(2, n)
    rel = (tokens_a - tokens_b) / (tokens_a + tokens_b)
    total_bold = bold_a + bold_b
    rel_bold = (bold_a - bold_b) / np.where(total_bold == 0, 1, total_bold)
    logit = strength[a] - strength[b] + length_effect * rel + bold_effect * rel_bold
    p = 1 / (1 + np.exp(-logit))
    tie = rng.random(n) < tie_rate
    winner = np.where(tie, "tie", np.where(rng.random(n) < p, "model_a", "model_b"))
    meta = [
        {
            "sum_assistant_a_tokens": int(tokens_a[i]),
            "sum_assistant_b_tokens": int(tokens_b[i]),
            "header_count_a": {f"h{j}": int(rng.poisson(0.3)) for j in range(1, 7)},
            "header_count_b": {f"h{j}": int(rng.poisson(0.3)) for j in range(1, 7)},
            "list_count_a": {"ordered": int(rng.poisson(1)), "unordered": int(rng.poisson(2))},
            "list_count_b": {"ordered": int(rng.poisson(1)), "unordered": int(rng.poisson(2))},
            "bold_count_a": {"**": int(bold_a[i]), "__": 0},
            "bold_count_b": {"**": int(bold_b[i]), "__": 0},
        }
        for i in range(n)
    ]
    return pl.DataFrame({"model_a": names[a], "model_b": names[b], "winner": winner,
                         "conv_metadata": meta})
