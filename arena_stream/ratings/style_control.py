"""Style-controlled ratings: LMArena's style control on a battles frame.

Takes LMArena-format battles with style counts (``conv_metadata``, our flat
``tokens_a`` ... ``lists_b`` columns, or only the answers: ``answer_a`` /
``answer_b`` as strings, or LMArena's ``conversation_a`` / ``conversation_b``),
builds the four standardised style features of :mod:`arena_stream.ratings.style`
and fits the contextual Bradley-Terry model of
:mod:`arena_stream.ratings.contextual` twice on the same battles and weights:
with the style terms (the style-controlled ratings) and without them (the
raw ratings beside them), so that the difference between the two columns is
the style effect alone.

Defaults are arena-rank's for its LMArena example (``ContextualPairDataset``
and ``ContextualBradleyTerry``): L2 penalty ``reg = 1`` on the mean loss, and
each battle weighted by ``1 / max(battles of its pair, 50)`` (normalised to a
mean of 1) so that heavily sampled pairs do not dominate. ``reweight=False``
weighs every battle alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.stats import norm

from arena_stream.ratings import contextual
from arena_stream.ratings.bradley_terry import (
    ALPHA,
    INIT_RATING,
    MIN_BATTLES,
    PRIOR_TIES,
    WINNER_OUTCOME,
    BattleDataError,
    _open_sides,
    collapse,
)
from arena_stream.ratings.style import (
    CONV_METADATA_KEYS,
    COUNT_COLUMNS,
    FEATURES,
    assistant_text,
    counts_from_conv_metadata,
    style_counts,
)
from arena_stream.schemas.events import LeaderboardRow

REG = 1.0  # arena-rank ContextualBradleyTerry's default
MIN_PAIR_COUNT = 50  # arena-rank ContextualPairDataset's default
COUNT_NAMES = [c for f in FEATURES for c in COUNT_COLUMNS[f]]
TEXT_COLUMNS = (("answer_a", "answer_b"), ("conversation_a", "conversation_b"))


def style_columns(df: pl.DataFrame, source: str = "battles") -> pl.DataFrame:
    """``df`` with the eight count columns (``tokens_a`` ... ``lists_b``) filled in.

    Sources in order: the count columns themselves, LMArena's
    ``conv_metadata``, the answer texts. A battle with none of them is an
    error naming the source, never a silent zero.
    """
    if all(c in df.columns for c in COUNT_NAMES):
        counts = df.select(COUNT_NAMES)
        nulls = [c for c in COUNT_NAMES if counts[c].null_count()]
        if not nulls:
            return df.with_columns(pl.col(c).cast(pl.Int64) for c in COUNT_NAMES)
    if "conv_metadata" in df.columns and isinstance(df.schema["conv_metadata"], pl.Struct):
        from_meta = _counts_from_metadata_struct(df, source)
        if from_meta is not None:
            return from_meta
    rows: list[list[int]] = []
    metas = df["conv_metadata"].to_list() if "conv_metadata" in df.columns else None
    texts = next(((df[x].to_list(), df[y].to_list()) for x, y in TEXT_COLUMNS
                  if x in df.columns and y in df.columns), None)
    if metas is None and texts is None:
        raise BattleDataError(
            f"{source}: style control needs style counts: LMArena's conv_metadata, the columns "
            f"{', '.join(COUNT_NAMES)}, or the answers (answer_a/answer_b or "
            "conversation_a/conversation_b)"
        )
    for i in range(df.height):
        try:
            if metas is not None and metas[i] is not None:
                sc = counts_from_conv_metadata(metas[i])
            elif texts is not None and texts[0][i] is not None and texts[1][i] is not None:
                sc = style_counts(assistant_text(texts[0][i]), assistant_text(texts[1][i]))
            else:
                raise ValueError("no conv_metadata and no answers")
        except (ValueError, TypeError) as exc:
            raise BattleDataError(f"{source}: battle {i + 1}: {exc}") from None
        rows.append([getattr(sc, c) for c in COUNT_NAMES])
    matrix = np.asarray(rows, dtype=np.int64).reshape(-1, len(COUNT_NAMES))
    return df.with_columns(
        pl.Series(c, matrix[:, k], dtype=pl.Int64) for k, c in enumerate(COUNT_NAMES)
    )


def _counts_from_metadata_struct(df: pl.DataFrame, source: str) -> pl.DataFrame | None:
    """The counts from a ``conv_metadata`` struct column in one vectorised pass.

    A dict of sub-counts (``{"h1": 2, ...}``) is summed, as LMArena's example
    does. Returns None (the per-row path decides) when some battle has no
    metadata or a key is missing, so mixed files still work.
    """
    meta = df["conv_metadata"]
    fields = {f.name: f.dtype for f in meta.dtype.fields}  # type: ignore[attr-defined]
    if meta.null_count():
        return None
    exprs: list[pl.Expr] = []
    for feature, keys in CONV_METADATA_KEYS.items():
        for key, name in zip(keys, COUNT_COLUMNS[feature], strict=True):
            if key not in fields:
                return None
            field = pl.col("conv_metadata").struct.field(key)
            dtype = fields[key]
            if isinstance(dtype, pl.Struct):
                parts = [field.struct.field(f.name).cast(pl.Int64) for f in dtype.fields]
                expr = pl.sum_horizontal(parts) if parts else pl.lit(0, dtype=pl.Int64)
            elif dtype.is_numeric():
                expr = field.cast(pl.Int64)
            else:
                raise BattleDataError(f"{source}: conv_metadata {key} is {dtype}, not counts")
            exprs.append(expr.alias(name))
    counts = df.select(exprs)
    for c in COUNT_NAMES:
        if counts[c].null_count():
            return None
    return df.with_columns(counts.get_columns())


def style_features(counts: np.ndarray) -> np.ndarray:
    """(N, 8) counts (a, b per feature) -> (N, 4) standardised relative differences."""
    a, b = counts[:, 0::2].astype(np.float64), counts[:, 1::2].astype(np.float64)
    total = a + b
    raw = (a - b) / np.where(total == 0, 1.0, total)
    mean = raw.mean(axis=0)
    std = raw.std(axis=0)
    return (raw - mean) / np.where(std == 0, 1.0, std)


def pair_weights(a: np.ndarray, b: np.ndarray, min_pair_count: int = MIN_PAIR_COUNT) -> np.ndarray:
    """arena-rank's inverse-propensity weights: ``1 / max(pair's battles, m)``, mean 1."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    _, inverse, counts = np.unique(np.stack([lo, hi], axis=1), axis=0, return_inverse=True,
                                   return_counts=True)
    w = 1.0 / np.maximum(counts[inverse.ravel()], min_pair_count)
    return w / w.mean()


@dataclass(frozen=True)
class StyleRatings:
    """Style-controlled and raw ratings (rating points) and the style coefficients."""

    models: list[str]
    rating: np.ndarray  # style-controlled
    lower: np.ndarray
    upper: np.ndarray
    raw: np.ndarray  # the same fit without style terms
    raw_lower: np.ndarray
    raw_upper: np.ndarray
    battles: np.ndarray
    features: tuple[str, ...]
    coef: np.ndarray  # natural log-odds per standard deviation of the feature
    coef_lower: np.ndarray
    coef_upper: np.ndarray
    provisional: tuple[str, ...] = ()
    constant: tuple[str, ...] = ()  # features that did not vary: not fitted, shown as 0

    @staticmethod
    def ranks(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
        """LMArena's rank: 1 + the models whose lower bound is above this upper bound."""
        return 1 + (lower[None, :] > upper[:, None]).sum(axis=1)

    def table(self) -> list[dict[str, object]]:
        """One dict per model, best style-controlled rating first (``--json``)."""
        rank = self.ranks(self.lower, self.upper)
        raw_rank = self.ranks(self.raw_lower, self.raw_upper)
        out = []
        for i in np.argsort(-self.rating, kind="stable"):
            out.append({
                "model": self.models[i], "rating": float(self.rating[i]),
                "lower": float(self.lower[i]), "upper": float(self.upper[i]),
                "rank": int(rank[i]), "raw_rating": float(self.raw[i]),
                "raw_lower": float(self.raw_lower[i]), "raw_upper": float(self.raw_upper[i]),
                "raw_rank": int(raw_rank[i]), "rank_change": int(raw_rank[i] - rank[i]),
                "battles": int(self.battles[i]),
                "provisional": self.models[i] in self.provisional,
            })
        return out

    def rows(self) -> list[LeaderboardRow]:
        """The style-controlled ratings as leaderboard rows (for plots), best first."""
        rank = self.ranks(self.lower, self.upper)
        return [
            LeaderboardRow(model=self.models[i], rating=float(self.rating[i]),
                           lower=float(self.lower[i]), upper=float(self.upper[i]),
                           battles=int(self.battles[i]), rank=int(rank[i]),
                           provisional=self.models[i] in self.provisional)
            for i in np.argsort(-self.rating, kind="stable")
        ]

    def coefficients(self) -> list[dict[str, object]]:
        """Each style coefficient with its interval, also in rating points."""
        return [
            {"feature": f, "coef": float(c), "lower": float(lo), "upper": float(hi),
             "rating_points": float(ALPHA * c), "constant": f in self.constant}
            for f, c, lo, hi in zip(self.features, self.coef, self.coef_lower, self.coef_upper,
                                    strict=True)
        ]


def _intervals(
    pb: contextual.Problem, params: np.ndarray, v: np.ndarray, *, reg: float, ties: float,
    z: float,
) -> tuple[np.ndarray, np.ndarray]:
    cov = contextual.sandwich(pb, params, reg=reg, ties=ties)
    half = z * np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", v, cov, v), 0.0))
    return half, cov


def fit_style(
    battles: pl.DataFrame,
    *,
    reg: float = REG,
    reweight: bool = True,
    min_pair_count: int = MIN_PAIR_COUNT,
    prior_ties: float = PRIOR_TIES,
    min_battles: int = MIN_BATTLES,
    confidence: float = 0.95,
    features: Sequence[str] = FEATURES,
) -> StyleRatings:
    """Style-controlled ratings of ``battles`` (validated, with the count columns)."""
    df = battles.filter(pl.col("model_a") != pl.col("model_b"))
    if df.height == 0:
        raise BattleDataError("no battles between two different models")
    models = sorted(set(df["model_a"].to_list()) | set(df["model_b"].to_list()))
    if len(models) < 2:
        raise BattleDataError("need battles between at least two different models")
    index = {m: i for i, m in enumerate(models)}
    a = np.array([index[m] for m in df["model_a"].to_list()], dtype=np.int64)
    b = np.array([index[m] for m in df["model_b"].to_list()], dtype=np.int64)
    outcome = df["winner"].replace_strict(WINNER_OUTCOME, return_dtype=pl.Float64).to_numpy()
    cols = [c for f in features for c in COUNT_COLUMNS[f]]
    x_all = style_features(df.select(cols).to_numpy())
    # a feature constant over these battles (no answer has a header) has no coefficient to
    # fit: it is left out and reported as 0 with a zero-width interval and constant=True
    varies = x_all.std(axis=0) > 0
    x = x_all[:, varies]
    weight = pair_weights(a, b, min_pair_count) if reweight else np.ones(len(a))
    n, p = len(models), x.shape[1]
    z = float(norm.ppf(0.5 + confidence / 2.0))
    v = np.zeros((n, n + p))
    v[:, :n] = np.eye(n) - 1.0 / n
    results = []
    for feats in (x, np.zeros((len(a), 0))):
        pb = contextual.Problem(a=a, b=b, outcome=outcome, features=feats, weight=weight, n=n)
        params = contextual.fit(pb, reg=reg, ties=prior_ties)
        vv = v[:, : n + feats.shape[1]]
        half, cov = _intervals(pb, params, vv, reg=reg, ties=prior_ties, z=z)
        results.append((params, half, cov))
    (params, half, cov), (raw_params, raw_half, _) = results
    rating = ALPHA * (v @ params) + INIT_RATING
    raw = ALPHA * (v[:, :n] @ raw_params) + INIT_RATING
    coef = np.zeros(len(features))
    coef_half = np.zeros(len(features))
    coef[varies] = params[n:]
    coef_half[varies] = z * np.sqrt(np.maximum(np.diag(cov)[n:], 0.0))
    battles_per = np.bincount(a, minlength=n) + np.bincount(b, minlength=n)
    unbounded = _open_sides(collapse(df.select("model_a", "model_b", "winner")))
    return StyleRatings(
        models=models, rating=rating, lower=rating - ALPHA * half, upper=rating + ALPHA * half,
        raw=raw, raw_lower=raw - ALPHA * raw_half, raw_upper=raw + ALPHA * raw_half,
        battles=battles_per, features=tuple(features), coef=coef, coef_lower=coef - coef_half,
        coef_upper=coef + coef_half,
        provisional=tuple(m for m, k in zip(models, battles_per, strict=True)
                          if k < min_battles or m in unbounded),
        constant=tuple(f for f, v in zip(features, varies, strict=True) if not v),
    )
