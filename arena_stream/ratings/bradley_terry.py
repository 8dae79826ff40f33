"""Bradley-Terry ratings on the Elo scale, with intervals users can trust.

The online Elo in the ratings stream depends on the order of battles and on
its K factor; the leaderboard instead fits the Bradley-Terry model by maximum
likelihood on every battle at once, as LMArena and the Arena Learning paper
do. Conventions (they match LMArena's ``arena-rank`` package):

* ``P(a beats b) = 1 / (1 + 10 ** ((R_b - R_a) / 400))``; a tie (``tie`` or
  ``tie (bothbad)``) counts as half a win and half a loss. Alternatives:
  ``tie_model="davidson"`` (ties as a third outcome, :mod:`arena_stream.ratings.ties`)
  or dropping ties before fitting (``leaderboard --exclude-ties``).
* Without an anchor the ratings are centred so that their *mean* is 1000:
  an average model sits at 1000 whatever the set of models.
* With ``anchor=(model, rating)`` every rating, and every bootstrap sample,
  is shifted so that ``model`` has exactly ``rating`` (the paper pins
  Llama-2-70B-Chat at 1100). Intervals are then intervals of the
  *difference* to the anchor, so the anchor's own interval has zero width.
* ``rank`` is LMArena's rule: 1 + the number of models whose lower bound is
  above this model's upper bound. Models whose intervals overlap share a
  rank, so a rank is a claim the data supports, not an artefact of noise.

Speed comes from collapsing identical ``(model_a, model_b, outcome)`` rows
into counts before fitting: a million battles among 50 models become at most
7,350 weighted cells, and a bootstrap round only redraws those counts
(multinomially), which is exactly resampling the battles with replacement.
Every fit is Newton's method on the cells (:mod:`arena_stream.ratings.solver`),
and all bootstrap rounds are solved together, warm-started from the point
estimate: three or four batched iterations in all, where L-BFGS needed a dozen
function evaluations per round (``bench/bench_leaderboard.py``: 100 rounds on
a million battles in 0.25-0.35 s, 14 to 31 times faster than FastChat's
``compute_bootstrap_bt`` on two processes in the same run; BENCHMARKS.md).

Little data and separation. A model that won (or lost) every battle has no
finite maximum-likelihood rating, and a dozen battles make any interval built
on the normal approximation false confidence. Every fit therefore carries a
weak prior, the same offline and in the stream's snapshots
(:mod:`arena_stream.ratings.snapshots` calls :func:`fit_collapsed`): each
model gets ``PRIOR_TIES = 1`` virtual tie against a virtual opponent of
average strength, i.e. the penalty ``log(2 cosh(theta / 2))`` per model.
It keeps every rating finite, weighs what one real battle weighs (a model with
1,000 battles moves by a third of a rating point at most) and, because it grows
only linearly, does not pretend to know how far an unbeaten model stands
above the rest. A model is *provisional* when it has fewer than
``MIN_BATTLES`` battles or lies outside the largest strongly connected
component of the "beats or ties" graph (Zermelo's condition for the maximum
likelihood to exist; :attr:`Ratings.unbounded`). Its interval is then the
profile-likelihood interval (:mod:`arena_stream.ratings.profile`), whatever
the method asked for: skewed where the data are, very wide on the side only
the prior bounds. Rows say so (``LeaderboardRow.provisional``, ``note`` and
``open_side``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components
from scipy.special import expit
from scipy.stats import norm

from arena_stream.ratings.profile import Smooth, profile_interval
from arena_stream.ratings.solver import Cells, gradient_and_hessian, newton
from arena_stream.schemas.events import Judgment, LeaderboardRow

SCALE = 400.0
BASE = 10.0
INIT_RATING = 1000.0
PRIOR_TIES = 1.0  # virtual ties per model against an average opponent
MIN_BATTLES = 30  # fewer battles than this: the rating is provisional
ALPHA = SCALE / math.log(BASE)  # natural log-odds -> rating points

WINNER_OUTCOME: dict[str, float] = {
    "model_a": 1.0,
    "model_b": 0.0,
    "tie": 0.5,
    "tie (bothbad)": 0.5,
}
REQUIRED_COLUMNS = ("model_a", "model_b", "winner")

Method = Literal["bootstrap", "sandwich"]
TieModel = Literal["half", "davidson"]


class BattleDataError(ValueError):
    """Battles are missing columns, have nulls or an unknown ``winner`` value."""


# ---------------------------------------------------------------------------
# Loading


def _validate(df: pl.DataFrame, source: str, keep: Sequence[str] = ()) -> pl.DataFrame:
    """Keep the LMArena columns (and ``ts``, and the ``keep`` columns, when present); check them.

    Errors name the source and the offending values, because a leaderboard
    silently computed from half-parsed data is worse than none.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise BattleDataError(
            f"{source}: missing column(s) {', '.join(missing)}; "
            f"LMArena battles need {', '.join(REQUIRED_COLUMNS)}"
        )
    cols = [pl.col(c).cast(pl.String) for c in REQUIRED_COLUMNS]
    if "ts" in df.columns:
        cols.append(pl.col("ts").cast(pl.Float64))
    elif "tstamp" in df.columns:  # LMArena's name for the battle time
        cols.append(pl.col("tstamp").cast(pl.Float64).alias("ts"))
    cols += [pl.col(c) for c in keep if c in df.columns and c not in (*REQUIRED_COLUMNS, "ts")]
    out = df.select(cols)
    for c in REQUIRED_COLUMNS:
        nulls = out[c].null_count()
        if nulls:
            raise BattleDataError(f"{source}: {nulls} row(s) have no {c}")
    unknown = out.filter(~pl.col("winner").is_in(list(WINNER_OUTCOME)))["winner"].unique()
    if len(unknown):
        shown = ", ".join(repr(v) for v in unknown.sort().head(5).to_list())
        raise BattleDataError(
            f"{source}: unknown winner value(s) {shown}; "
            f"expected one of {', '.join(WINNER_OUTCOME)}"
        )
    return out


def load_battles(path: str | Path, *, keep: Sequence[str] = ()) -> pl.DataFrame:
    """Read LMArena-format battles from JSON lines, a JSON array or Parquet.

    A file whose first character is ``[`` is a JSON array (LMArena publishes
    its battles so); anything else not Parquet is JSON lines. Returns
    ``model_a``, ``model_b``, ``winner`` (and ``ts`` in unix seconds when the
    file has ``ts`` or LMArena's ``tstamp``, and those of ``keep`` that it
    has, e.g. ``conv_metadata`` or ``category``); other columns are dropped so
    that a multi-gigabyte conversation column never reaches memory twice.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"battles file not found: {p}")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            df = pl.read_parquet(p)
        elif _starts_with_bracket(p):
            df = _read_json_array(p, keep)
        else:
            df = pl.read_ndjson(p, infer_schema_length=None)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise BattleDataError(f"{p}: cannot read battles: {exc}") from None
    return _validate(df, str(p), keep)


def _starts_with_bracket(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    return head[:1] == b"["


def _read_json_array(path: Path, keep: Sequence[str]) -> pl.DataFrame:
    """Only the wanted columns of a JSON array: its conversations are never materialised."""
    from typing import Any

    import msgspec

    typed = {"model_a": str | None, "model_b": str | None, "winner": str | None,
             "tstamp": float | None, "ts": float | None}
    wanted = [*typed, *(k for k in keep if k not in typed)]
    # Attribute names are positional, so any column name (even "not-an-identifier") works.
    row = msgspec.defstruct("BattleRow", [(f"c{i}", typed.get(k, Any), None)
                                          for i, k in enumerate(wanted)],
                            rename={f"c{i}": k for i, k in enumerate(wanted)})
    try:
        rows = msgspec.json.decode(path.read_bytes(), type=list[row])  # type: ignore[valid-type]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BattleDataError(f"{path}: not a JSON array of battles: {exc}") from None
    columns: dict[str, list[object]] = {c: [getattr(r, f"c{i}") for r in rows]
                                        for i, c in enumerate(("model_a", "model_b", "winner"))}
    schema: dict[str, Any] = dict.fromkeys(columns, pl.String)
    for i, name in enumerate(wanted[3:], start=3):  # optional: only the columns the file has
        values = [getattr(r, f"c{i}") for r in rows]
        if any(v is not None for v in values):
            columns[name] = values
            if name in typed:
                schema[name] = pl.Float64
    return pl.DataFrame(columns, schema_overrides=schema, strict=False)


def battles_from_judgments(judgments: Iterable[Judgment], *, style: bool = False) -> pl.DataFrame:
    """The stream's judgments as LMArena-format battles (with ``ts``, ``category``, ``prompt_id``).

    ``style=True`` adds the eight style counts (``tokens_a`` ... ``lists_b``):
    the judgment's own ``style`` when the judge stage recorded it, else counted
    from its answers (:func:`arena_stream.ratings.style.style_counts`).
    """
    from arena_stream.ratings.style import COUNT_COLUMNS, FEATURES, style_counts

    names = [c for f in FEATURES for c in COUNT_COLUMNS[f]]
    data: dict[str, list[object]] = {k: [] for k in ("model_a", "model_b", "winner", "ts",
                                                     "category", "prompt_id")}
    counts: list[list[int]] = []
    for j in judgments:
        data["model_a"].append(j.model_a)
        data["model_b"].append(j.model_b)
        data["winner"].append(j.winner)
        data["ts"].append(j.ts)
        data["category"].append(j.category)
        data["prompt_id"].append(j.prompt_id)
        if style:
            sc = j.style if j.style is not None else style_counts(j.answer_a, j.answer_b)
            counts.append([getattr(sc, c) for c in names])
    schema: dict[str, pl.DataType | type[pl.DataType]] = {
        "model_a": pl.String, "model_b": pl.String, "winner": pl.String, "ts": pl.Float64,
        "category": pl.String, "prompt_id": pl.String,
    }
    df = pl.DataFrame(data, schema=schema)
    if style:
        matrix = np.asarray(counts, dtype=np.int64).reshape(-1, len(names))
        df = df.with_columns(pl.Series(c, matrix[:, k], dtype=pl.Int64)
                             for k, c in enumerate(names))
    return _validate(df, "judgments", keep=["category", "prompt_id", *(names if style else [])])


# ---------------------------------------------------------------------------
# Collapsing


@dataclass(frozen=True)
class Collapsed:
    """Battles reduced to unique ``(a, b, outcome)`` rows with their counts."""

    models: list[str]  # sorted; index i is model i
    a: np.ndarray  # int64 (R,)
    b: np.ndarray  # int64 (R,)
    outcome: np.ndarray  # float64 (R,): 1 a won, 0.5 tie, 0 b won
    count: np.ndarray  # float64 (R,)
    battles: np.ndarray  # int64 (n,): battles each model played

    @property
    def n_models(self) -> int:
        return len(self.models)

    @property
    def total(self) -> float:
        return float(self.count.sum())

    @cached_property
    def cells(self) -> Cells:
        """The sparse structure the Newton solver works on (built once per collapse)."""
        return Cells.build(self.a, self.b, self.outcome, self.n_models)


def collapse(battles: pl.DataFrame) -> Collapsed:
    """Group identical battles into counts; drops self-battles (they carry no information).

    The grouping happens on the raw strings in polars (multi-threaded
    hashing), so the per-battle work is one pass; everything after, the
    outcome mapping included, is on a few thousand rows. Expects validated
    battles (:func:`load_battles`, :func:`fit`).
    """
    grouped = (
        battles.lazy()
        .group_by("model_a", "model_b", "winner")
        .agg(pl.len().alias("n"))
        .filter(pl.col("model_a") != pl.col("model_b"))
        .with_columns(
            pl.col("winner").replace_strict(WINNER_OUTCOME, return_dtype=pl.Float64).alias("o")
        )
        .group_by("model_a", "model_b", "o")  # "tie" and "tie (bothbad)" are one cell
        .agg(pl.col("n").sum())
        .collect()
    )
    models = sorted(set(grouped["model_a"].to_list()) | set(grouped["model_b"].to_list()))
    index = {m: i for i, m in enumerate(models)}
    a = np.array([index[m] for m in grouped["model_a"].to_list()], dtype=np.int64)
    b = np.array([index[m] for m in grouped["model_b"].to_list()], dtype=np.int64)
    count = grouped["n"].to_numpy().astype(np.float64)
    n = len(models)
    per_model = np.bincount(a, weights=count, minlength=n) + np.bincount(
        b, weights=count, minlength=n
    )
    order = np.lexsort((grouped["o"].to_numpy(), b, a))  # deterministic row order
    return Collapsed(
        models=models,
        a=a[order],
        b=b[order],
        outcome=grouped["o"].to_numpy().astype(np.float64)[order],
        count=count[order],
        battles=per_model.round().astype(np.int64),
    )


# ---------------------------------------------------------------------------
# Fitting (natural log-odds units; ALPHA converts to rating points)


def _ridge(ties: float, total: float) -> float:
    """No ridge under the prior; without one (``prior_ties=0``, plain maximum likelihood)
    a ridge of 1e-8 per battle keeps the Hessian invertible."""
    return 0.0 if ties > 0 else 1e-8 * total


def _fit(
    c: Collapsed,
    count: np.ndarray,
    *,
    ties: float = PRIOR_TIES,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """Penalised maximum-likelihood log-strengths for one or many sets of cell counts.

    ``count`` is (R,) or (B, R) (bootstrap rounds, solved together); the
    result has the same leading shape. Not centred: the prior (or, without
    one, the ridge) fixes the common level; shown ratings use contrasts.
    """
    counts = np.atleast_2d(count)
    cells = c.cells
    x0 = np.zeros((counts.shape[0], c.n_models)) if start is None else np.broadcast_to(
        start, (counts.shape[0], c.n_models))
    theta = newton(cells, counts, x0, ties=ties, ridge=_ridge(ties, float(counts.sum(1).max())))
    return theta[0] if np.ndim(count) == 1 else theta


def _hessian_and_meat(c: Collapsed, theta: np.ndarray, ties: float) -> tuple[np.ndarray, ...]:
    """Observed information H (with the prior) and score outer-product M, over battles."""
    cells = c.cells
    _, hess = gradient_and_hessian(cells, c.count[None, :], theta[None, :], ties=ties,
                                   ridge=_ridge(ties, c.total))
    p = expit(theta[c.a] - theta[c.b])
    m = c.count * (c.outcome - p) ** 2  # per battle (o - p)^2, identical within a cell
    n = c.n_models
    meat = np.asarray(cells.laplacian @ m).reshape(n, n)
    return hess[0], meat


def _contrasts(n: int, anchor: int | None) -> np.ndarray:
    """Rows ``v_i`` with ``rating_i = ALPHA * v_i . theta + offset``: the shown scale."""
    v = np.eye(n)
    if anchor is None:
        return v - 1.0 / n
    v[:, anchor] -= 1.0
    return v


def _sandwich_var(c: Collapsed, theta: np.ndarray, ties: float, v: np.ndarray) -> np.ndarray:
    """Robust variances of the contrasts ``v @ theta`` from ``H^-1 M H^-1``.

    Valid even when Bradley-Terry is misspecified: a judge's preferences are
    not transitive in general; the model-based ``H^-1`` would then understate
    the uncertainty, the sandwich does not.
    """
    hess, meat = _hessian_and_meat(c, theta, ties)
    w = np.linalg.solve(hess, v.T)  # H^-1 v'
    return np.einsum("ji,jk,ki->i", w, meat, w)


def _open_sides(c: Collapsed) -> dict[str, str]:
    """Models whose maximum-likelihood rating is infinite, and on which side.

    Edge ``b -> a`` when ``a`` ever beat or tied ``b``. The MLE exists only
    if every model can reach every other (Zermelo). Models outside the
    largest strongly connected component sit at infinity relative to it:
    ``"upper"`` when the main group reaches them but they never reach it
    back (they never lost to it, directly or through others), ``"lower"``
    the other way round, ``"both"`` when not compared either way.
    """
    n = c.n_models
    a_won = c.outcome > 0.0  # a beat or tied b: edge b -> a
    b_won = c.outcome < 1.0  # b beat or tied a: edge a -> b
    rows = np.concatenate([c.b[a_won], c.a[b_won]])
    cols = np.concatenate([c.a[a_won], c.b[b_won]])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    k, labels = connected_components(graph, directed=True, connection="strong")
    if k == 1:
        return {}
    main = int(np.bincount(labels).argmax())
    root = int(np.flatnonzero(labels == main)[0])
    above = np.zeros(n, dtype=bool)  # reachable from the main group: beat someone who ...
    above[breadth_first_order(graph, root, directed=True, return_predecessors=False)] = True
    below = np.zeros(n, dtype=bool)  # reaches the main group
    below[breadth_first_order(graph.T.tocsr(), root, directed=True,
                              return_predecessors=False)] = True
    sides: dict[str, str] = {}
    for i, m in enumerate(c.models):
        if labels[i] != main:
            sides[m] = "upper" if above[i] and not below[i] else (
                "lower" if below[i] and not above[i] else "both")
    return sides


_SIDE_NOTE = {
    "upper": "never lost to the others: the data set no upper bound",
    "lower": "never beat the others: the data set no lower bound",
    "both": "not compared both ways with the others: the data bound neither side",
}


def _provisional(c: Collapsed, sides: dict[str, str], min_battles: int) -> dict[str, str]:
    """Why each provisional model's rating rests on too little: model -> short note."""
    notes: dict[str, str] = {}
    for i, m in enumerate(c.models):
        why = [_SIDE_NOTE[sides[m]]] if m in sides else []
        if c.battles[i] < min_battles:
            why.append(f"{c.battles[i]} battles (< {min_battles})")
        if why:
            notes[m] = "; ".join(why)
    return notes


# ---------------------------------------------------------------------------
# Public results


@dataclass(frozen=True)
class Ratings:
    """Fitted ratings with their 95% interval (rating points, already anchored)."""

    models: list[str]
    rating: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    battles: np.ndarray
    method: str
    samples: np.ndarray | None = None  # bootstrap ratings (rounds, n), when bootstrapped
    unbounded: tuple[str, ...] = ()  # models with no finite MLE (never lost / never won)
    notes: dict[str, str] | None = None  # provisional models -> why
    open_sides: dict[str, str] | None = None  # unbounded models -> "upper" / "lower" / "both"
    tie_model: str = "half"
    ties: dict[str, float] | None = None  # Davidson's tie parameter and its interval

    @property
    def provisional(self) -> tuple[str, ...]:
        """Models whose rating rests on too few battles or is not bounded by the data."""
        return tuple(self.notes or ())

    def rows(self) -> list[LeaderboardRow]:
        """Rows sorted by rating, with LMArena's interval-overlap rank."""
        rank = 1 + (self.lower[None, :] > self.upper[:, None]).sum(axis=1)
        order = np.argsort(-self.rating, kind="stable")
        return [
            LeaderboardRow(
                model=self.models[i],
                rating=float(self.rating[i]),
                lower=float(self.lower[i]),
                upper=float(self.upper[i]),
                battles=int(self.battles[i]),
                rank=int(rank[i]),
                provisional=self.models[i] in (self.notes or {}),
                note=(self.notes or {}).get(self.models[i], ""),
                open_side=(self.open_sides or {}).get(self.models[i], ""),
            )
            for i in order
        ]


def fit(
    battles: pl.DataFrame,
    *,
    method: Method = "bootstrap",
    rounds: int = 100,
    seed: int = 0,
    anchor: tuple[str, float] | None = None,
    confidence: float = 0.95,
    prior_ties: float = PRIOR_TIES,
    min_battles: int = MIN_BATTLES,
    tie_model: TieModel = "half",
) -> Ratings:
    """Fit Bradley-Terry and compute intervals; see the module docstring for conventions.

    ``bootstrap`` redraws the collapsed counts ``rounds`` times from a
    multinomial seeded by ``seed`` (reproducible) and takes percentile
    intervals of the refits; ``sandwich`` is the closed-form robust interval,
    instant and what LMArena publishes now. The point rating is always the
    fit on all battles; provisional models get profile intervals either way.
    """
    c = collapse(_validate(battles, "battles"))
    return fit_collapsed(c, method=method, rounds=rounds, seed=seed, anchor=anchor,
                         confidence=confidence, prior_ties=prior_ties, min_battles=min_battles,
                         tie_model=tie_model)


def fit_collapsed(
    c: Collapsed,
    *,
    method: Method = "bootstrap",
    rounds: int = 100,
    seed: int = 0,
    anchor: tuple[str, float] | None = None,
    confidence: float = 0.95,
    prior_ties: float = PRIOR_TIES,
    min_battles: int = MIN_BATTLES,
    tie_model: TieModel = "half",
) -> Ratings:
    """:func:`fit` on battles already collapsed into counted cells (the stream's snapshots)."""
    if method not in ("bootstrap", "sandwich"):
        raise ValueError(f"unknown method {method!r}; use 'bootstrap' or 'sandwich'")
    if tie_model not in ("half", "davidson"):
        raise ValueError(f"unknown tie model {tie_model!r}; use 'half' or 'davidson'")
    if c.n_models < 2:
        raise BattleDataError("need battles between at least two different models")
    if tie_model == "davidson":
        return _fit_davidson(c, method=method, rounds=rounds, seed=seed, anchor=anchor,
                             confidence=confidence, prior_ties=prior_ties,
                             min_battles=min_battles)
    theta = _fit(c, c.count, ties=prior_ties)
    models = c.models
    if anchor is not None and anchor[0] not in models:
        raise ValueError(f"anchor model {anchor[0]!r} has no battles")
    anchor_index = None if anchor is None else models.index(anchor[0])
    v = _contrasts(c.n_models, anchor_index)
    offset = INIT_RATING if anchor is None else anchor[1]
    rating = ALPHA * (v @ theta) + offset
    tail = (1.0 - confidence) / 2.0
    samples: np.ndarray | None = None
    if method == "sandwich":
        var = _sandwich_var(c, theta, prior_ties, v)
        half = float(norm.ppf(1.0 - tail)) * ALPHA * np.sqrt(np.maximum(var, 0.0))
        lower, upper = rating - half, rating + half
    else:
        if rounds < 2:
            raise ValueError("bootstrap needs at least 2 rounds")
        rng = np.random.default_rng(seed)
        total = round(c.total)
        draws = rng.multinomial(total, c.count / c.count.sum(), size=rounds).astype(np.float64)
        thetas = _fit(c, draws, ties=prior_ties, start=theta)
        samples = ALPHA * (thetas @ v.T) + offset
        lower = np.quantile(samples, tail, axis=0)
        upper = np.quantile(samples, 1.0 - tail, axis=0)
    sides = _open_sides(c)
    notes = _provisional(c, sides, min_battles)
    smooth = Smooth.bradley_terry(c.cells, c.count, ties=prior_ties,
                                  ridge=_ridge(prior_ties, c.total))
    for i, m in enumerate(models):
        if m in notes and i != anchor_index:
            lo, hi = profile_interval(smooth, theta, v[i], confidence=confidence)
            lower[i], upper[i] = ALPHA * lo + offset, ALPHA * hi + offset
    return Ratings(
        models=models,
        rating=rating,
        lower=lower,
        upper=upper,
        battles=c.battles,
        method=method,
        samples=samples,
        unbounded=tuple(sides),
        notes=notes,
        open_sides=sides,
    )


def _fit_davidson(
    c: Collapsed, *, method: Method, rounds: int, seed: int,
    anchor: tuple[str, float] | None, confidence: float, prior_ties: float, min_battles: int,
) -> Ratings:
    """:func:`fit_collapsed` with Davidson's tie model (:mod:`arena_stream.ratings.ties`).

    Provisional rows get profile intervals of Davidson's likelihood (the tie
    propensity profiled out with the other strengths), as with half-wins.
    """
    from arena_stream.ratings import ties as dv

    models = c.models
    if anchor is not None and anchor[0] not in models:
        raise ValueError(f"anchor model {anchor[0]!r} has no battles")
    anchor_index = None if anchor is None else models.index(anchor[0])
    v = _contrasts(c.n_models, anchor_index)
    offset = INIT_RATING if anchor is None else anchor[1]
    args = (c.a, c.b, c.outcome)
    point = dv.fit_davidson(*args, c.count, c.n_models, ties=prior_ties)
    rating = ALPHA * (v @ point.theta) + offset
    z = dv.z_value(confidence)
    cov = dv.sandwich_cov(point, *args, c.count, c.n_models, ties=prior_ties)
    nu_half = z * float(np.sqrt(max(cov[-1, -1], 0.0)))
    samples: np.ndarray | None = None
    if method == "sandwich":
        vv = np.hstack([v, np.zeros((c.n_models, 1))])
        half = z * ALPHA * np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", vv, cov, vv), 0.0))
        lower, upper = rating - half, rating + half
    else:
        if rounds < 2:
            raise ValueError("bootstrap needs at least 2 rounds")
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(round(c.total), c.count / c.count.sum(), size=rounds)
        fits = [dv.fit_davidson(*args, d.astype(np.float64), c.n_models, ties=prior_ties,
                                start=point) for d in draws]
        samples = ALPHA * (np.stack([f.theta for f in fits]) @ v.T) + offset
        tail = (1.0 - confidence) / 2.0
        lower = np.quantile(samples, tail, axis=0)
        upper = np.quantile(samples, 1.0 - tail, axis=0)
        nus = np.array([f.log_nu for f in fits])
        nu_half = float(np.quantile(np.abs(nus - point.log_nu), confidence))
    sides = _open_sides(c)
    notes = _provisional(c, sides, min_battles)
    smooth = dv.smooth(*args, c.count, c.n_models, ties=prior_ties)
    x_hat = np.append(point.theta, point.log_nu)
    for i, m in enumerate(models):
        if m in notes and i != anchor_index:
            lo, hi = profile_interval(smooth, x_hat, np.append(v[i], 0.0), confidence=confidence)
            lower[i], upper[i] = ALPHA * lo + offset, ALPHA * hi + offset
    return Ratings(
        models=models, rating=rating, lower=lower, upper=upper, battles=c.battles,
        method=method, samples=samples, unbounded=tuple(sides),
        notes=notes, open_sides=sides, tie_model="davidson",
        ties=dv.tie_summary(point.log_nu, nu_half, confidence),
    )


def leaderboard(
    battles: pl.DataFrame,
    *,
    method: Method = "bootstrap",
    rounds: int = 100,
    seed: int = 0,
    anchor: tuple[str, float] | None = None,
    prior_ties: float = PRIOR_TIES,
    min_battles: int = MIN_BATTLES,
    tie_model: TieModel = "half",
) -> list[LeaderboardRow]:
    """Leaderboard rows, best first; ``rank`` is LMArena's interval-overlap rank."""
    return fit(battles, method=method, rounds=rounds, seed=seed, anchor=anchor,
               prior_ties=prior_ties, min_battles=min_battles, tie_model=tie_model).rows()


def rating_history(
    battles: pl.DataFrame,
    models: Sequence[str] | None = None,
    *,
    checkpoints: int = 20,
    anchor: tuple[str, float] | None = None,
) -> pl.DataFrame:
    """Ratings refitted on growing prefixes of the battles (in ``ts`` order when present).

    Answers "how did target@v3's rating move as evidence came in", with
    sandwich intervals because they cost nothing per checkpoint. Returns one
    row per checkpoint and model: ``checkpoint``, ``battles`` (prefix length),
    ``ts`` (time of the prefix's last battle, or null), ``model``, ``rating``,
    ``lower``, ``upper``, ``model_battles``.
    """
    if "ts" in battles.columns:
        battles = battles.sort("ts", maintain_order=True)
    total = battles.height
    ends = sorted({max(1, round(total * (k + 1) / checkpoints)) for k in range(checkpoints)})
    wanted = set(models) if models is not None else None
    records: list[dict[str, object]] = []
    for k, end in enumerate(ends):
        prefix = battles.head(end)
        c_models = set(prefix["model_a"].to_list()) | set(prefix["model_b"].to_list())
        if len(c_models) < 2 or (anchor is not None and anchor[0] not in c_models):
            continue
        r = fit(prefix, method="sandwich", anchor=anchor)
        ts = float(prefix["ts"][-1]) if "ts" in prefix.columns else None
        for i, m in enumerate(r.models):
            if wanted is not None and m not in wanted:
                continue
            records.append(
                {
                    "checkpoint": k,
                    "battles": end,
                    "ts": ts,
                    "model": m,
                    "rating": float(r.rating[i]),
                    "lower": float(r.lower[i]),
                    "upper": float(r.upper[i]),
                    "model_battles": int(r.battles[i]),
                }
            )
    schema = {
        "checkpoint": pl.Int64,
        "battles": pl.Int64,
        "ts": pl.Float64,
        "model": pl.String,
        "rating": pl.Float64,
        "lower": pl.Float64,
        "upper": pl.Float64,
        "model_battles": pl.Int64,
    }
    return pl.DataFrame(records, schema=schema)
