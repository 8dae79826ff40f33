"""WizardArena-style offline test set: a diverse half and a hard half.

Arena Learning evaluates with an offline arena whose Elo ranking has to agree
with the human one. Two properties make that work, and each half of the test
set supplies one:

* **Diverse**: K-Means over prompt embeddings (the paper: 500 clusters) and a
  few prompts from every cluster (the paper: 2). No topic is left out and no
  popular topic dominates, whatever the source distribution looks like.
* **Hard**: from a larger per-cluster pool (the paper: 20 per cluster) the judge
  rates each prompt's difficulty 0-10 and the hardest are kept (the paper:
  1000). Easy prompts do not separate strong models; hard ones do.

Choices this module makes, on purpose:

* Diverse picks are a **seeded random** sample per cluster by default (as in the
  paper): the prompts nearest the centroid tend to be near-copies of each other,
  which would waste the cluster's slots. ``diverse_pick="centroid"`` takes the
  nearest ones instead, for those who want the most typical prompts.
* A prompt in both halves appears once, with ``subset = "hard"`` (hardness is
  the rarer, paid-for property; the cluster id already records its topic) and
  ``subsets = ["diverse", "hard"]`` listing every membership.
* Difficulty comes from any judge (:mod:`arena_stream.judges.difficulty`): an
  in-process one is read from its token probabilities (always a rating), a
  served one writes it, and an answer with no readable score is asked again
  (with a reminder of the format); still unreadable, the prompt is recorded as
  unrated (``difficulty`` null) and never counts as hard. A failed call
  (network, server) is not cached, so the next run tries again.
* Ratings are cached (:mod:`arena_stream.offline.cache`, the SQLite file
  ``eval`` uses too) keyed by prompt id, content hash, the rater (judge model,
  rating template version, method) and the judge's settings: a re-run, or one
  after a crash, asks only for what is missing, and an edited prompt or another
  judge is never served a stale score.
* A build never comes out without its hard half in silence: the summary counts
  rated, unrated and failed prompts, the hard prompts kept against those asked
  for, and the difficulty distribution of the pool and of the kept subset;
  :func:`shortfall` says why a hard subset is too small to use.

Everything random is drawn from ``seed``; the same input, seed and ratings give
byte-identical output.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import structlog

from arena_stream.datasets.formats import FieldMapping
from arena_stream.datasets.sources import SourceOptions
from arena_stream.judges.difficulty import DifficultyRater
from arena_stream.offline.cache import OfflineCache
from arena_stream.progress_bars import progress_bar
from arena_stream.schemas.events import PromptIn

log = structlog.get_logger(__name__)

# Paper defaults (Luo et al. 2024, WizardArena).
DEFAULT_CLUSTERS = 500
DEFAULT_PER_CLUSTER = 2
DEFAULT_HARD_POOL = 20
DEFAULT_HARD = 1000


DiversePick = Literal["random", "centroid"]


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class PromptRecord:
    """One input line: its original JSON (kept whole for output) and what we derive from it."""

    id: str
    line: int  # 1-based line number in the input file
    raw: dict[str, Any]  # the decoded object exactly as given
    raw_line: str  # the line itself, without its newline
    text: str  # the user turns joined: what gets embedded
    digest: str  # sha256 of the canonical content (turns), for caches and exact matches


@dataclass(frozen=True)
class BadLine:
    """An input line that was skipped, and why."""

    line: int
    error: str


def content_digest(prompt: PromptIn) -> str:
    """sha256 over the conversation's turns only, so metadata edits do not invalidate caches."""
    if prompt.messages:
        turns = [[m.role, m.content] for m in prompt.messages]
    else:
        turns = [["user", prompt.prompt or ""]]
    canonical = json.dumps(turns, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _check_shape(prompt: PromptIn, *, require_final_user: bool) -> str | None:
    """Why this prompt cannot be used, or ``None`` when it can."""
    if not prompt.id.strip():
        return "empty id"
    if prompt.messages:
        if not any(m.role == "user" and m.content.strip() for m in prompt.messages):
            return "no non-empty user turn"
        if require_final_user and prompt.messages[-1].role != "user":
            return "the conversation must end with a user turn"
        return None
    if prompt.prompt is None or not prompt.prompt.strip():
        return "needs a non-empty 'prompt' or 'messages'"
    return None


def read_prompts(
    path: str | os.PathLike[str], *, require_final_user: bool = True, unique_ids: bool = True,
    mapping: FieldMapping | None = None, options: SourceOptions | None = None,
) -> tuple[list[PromptRecord], list[BadLine]]:
    """Read prompts from any source users have; bad records come back with their number.

    JSON lines, JSON arrays, Parquet, Hugging Face datasets and stdin, in our
    format or another (:mod:`arena_stream.datasets.formats`), which is written
    out in ours. With ``unique_ids`` a repeated id is a bad record (the first
    one wins), because ids key the caches and the output.
    """
    from arena_stream.datasets.prompts import converted_records
    from arena_stream.models.embeddings import conversation_text

    records: list[PromptRecord] = []
    bad: list[BadLine] = []
    seen: set[str] = set()
    for item in converted_records(os.fspath(path), mapping, options):
        if item.error is not None or item.raw is None:
            bad.append(BadLine(item.position, item.error or "empty"))
            continue
        raw_line = item.raw.decode("utf-8")
        try:
            raw = msgspec.json.decode(raw_line)
            if not isinstance(raw, dict):
                raise msgspec.ValidationError("expected a JSON object")
            prompt = msgspec.convert(raw, type=PromptIn)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            bad.append(BadLine(item.position, str(exc)))
            continue
        problem = _check_shape(prompt, require_final_user=require_final_user)
        if problem is None and unique_ids and prompt.id in seen:
            problem = f"duplicate id {prompt.id!r}"
        if problem is not None:
            bad.append(BadLine(item.position, problem))
            continue
        seen.add(prompt.id)
        records.append(PromptRecord(
            id=prompt.id, line=item.position, raw=raw, raw_line=raw_line,
            text=conversation_text(prompt), digest=content_digest(prompt),
        ))
    return records, bad


# --------------------------------------------------------------------------- clustering


def cluster(embeddings: np.ndarray, clusters: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """K-Means labels and centroids; ``clusters`` is clamped to the number of distinct rows.

    Labels are renumbered in order of each cluster's first member, so cluster ids
    are stable and dense (no empty cluster, even with duplicated prompts).
    """
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, embeddings.shape[1]), dtype=np.float32)
    distinct = len(np.unique(embeddings.round(6), axis=0))
    k = max(1, min(clusters, distinct))
    if k == 1:
        labels = np.zeros(n, dtype=np.int64)
    else:
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=k, n_init=3, random_state=seed, max_iter=300)
        labels = model.fit_predict(embeddings.astype(np.float64)).astype(np.int64)
    order = {old: new for new, old in enumerate(dict.fromkeys(labels.tolist()))}
    labels = np.array([order[x] for x in labels.tolist()], dtype=np.int64)
    centroids = np.stack([embeddings[labels == c].mean(axis=0) for c in range(len(order))])
    return labels, centroids.astype(np.float32)


def pick_diverse(
    labels: np.ndarray, embeddings: np.ndarray, centroids: np.ndarray, per_cluster: int,
    rng: np.random.Generator, *, how: DiversePick = "random",
) -> list[int]:
    """Up to ``per_cluster`` indices from every cluster, in cluster order."""
    picked: list[int] = []
    for c in range(len(centroids)):
        members = np.flatnonzero(labels == c)
        take = min(per_cluster, len(members))
        if take <= 0:
            continue
        if how == "centroid":
            distance = np.linalg.norm(embeddings[members] - centroids[c], axis=1)
            chosen = members[np.lexsort((members, distance))[:take]]
        else:
            chosen = np.sort(rng.choice(members, size=take, replace=False))
        picked.extend(int(i) for i in chosen)
    return picked


def sample_pool(labels: np.ndarray, per_cluster: int, rng: np.random.Generator) -> list[int]:
    """Up to ``per_cluster`` random indices from every cluster: the candidates for "hard"."""
    pool: list[int] = []
    for c in range(int(labels.max()) + 1 if len(labels) else 0):
        members = np.flatnonzero(labels == c)
        take = min(per_cluster, len(members))
        if take > 0:
            pool.extend(int(i) for i in np.sort(rng.choice(members, size=take, replace=False)))
    return pool


# --------------------------------------------------------------------------- difficulty


@dataclass
class Rating:
    """A prompt's difficulty, or ``None`` with the judge's last unreadable answer."""

    id: str
    digest: str
    rater: str
    difficulty: float | None
    raw: str
    attempts: int
    status: Literal["ok", "unparseable"] = "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "digest": self.digest, "rater": self.rater,
            "difficulty": self.difficulty, "status": self.status, "attempts": self.attempts,
            "raw": self.raw, "ts": round(time.time(), 3),
        }


class RatingCache:
    """Difficulty ratings in the offline cache (:mod:`arena_stream.offline.cache`).

    A rating is keyed by the prompt's id and content hash, the rater (judge
    model, rating template version, method) and ``settings``, the judge's
    whole fingerprint (backend, server, decoding settings, system prompt,
    template): an edited prompt or any change to the judge is never served a
    stale score. Each rating is committed as soon as it is known, so an
    interrupted build loses at most the calls in flight.
    """

    NAMESPACE = "difficulty"

    def __init__(self, cache: OfflineCache, rater: str,
                 settings: dict[str, Any] | None = None) -> None:
        self.cache = cache
        self.rater = rater
        self.settings = settings or {}

    def _key(self, prompt_id: str, content_digest: str) -> dict[str, Any]:
        return {"prompt_id": prompt_id, "digest": content_digest, "rater": self.rater,
                "judge": self.settings}

    def get(self, record: PromptRecord) -> Rating | None:
        item = self.cache.get(self.NAMESPACE, self._key(record.id, record.digest))
        if not isinstance(item, dict):
            return None
        try:
            difficulty = item["difficulty"]
            if difficulty is not None and not (
                isinstance(difficulty, int | float) and not isinstance(difficulty, bool)
                and math.isfinite(difficulty) and 0.0 <= difficulty <= 10.0
            ):
                return None  # an edited or corrupted entry: rate that prompt again
            return Rating(
                id=record.id, digest=record.digest, rater=self.rater,
                difficulty=None if difficulty is None else float(difficulty),
                raw=str(item.get("raw", "")), attempts=int(item.get("attempts", 1)),
                status="ok" if difficulty is not None else "unparseable",
            )
        except (ValueError, KeyError, TypeError):
            return None

    def put(self, rating: Rating) -> None:
        self.cache.put(self.NAMESPACE, self._key(rating.id, rating.digest), rating.to_json())


async def rate_one(rater: DifficultyRater, record: PromptRecord) -> Rating:
    """One prompt's difficulty from ``rater``; ``CallFailed`` when the call itself fails."""
    reading = await rater.rate(record.raw)
    return Rating(record.id, record.digest, rater.name, reading.difficulty, reading.raw,
                  reading.attempts, status="ok" if reading.difficulty is not None
                  else "unparseable")


@dataclass
class RatingStats:
    """What a rating pass did, for the build summary."""

    cached: int = 0
    asked: int = 0
    unparseable: int = 0
    failed: int = 0
    calls: int = 0
    errors: list[str] = field(default_factory=list)


async def rate_prompts(
    records: Sequence[PromptRecord], rater: DifficultyRater, cache: RatingCache, *,
    retry_unrated: bool = False,
) -> tuple[dict[str, Rating], RatingStats]:
    """Difficulty of every record, from the cache where possible, the rest concurrently.

    Concurrency is bounded by the judge's client itself (``concurrency`` in its
    config, or the in-process engine's batch), so all requests are started at once
    and queue there.
    """
    from arena_stream.models.retry import CallFailed

    stats = RatingStats()
    ratings: dict[str, Rating] = {}
    todo: list[PromptRecord] = []
    for record in records:
        hit = cache.get(record)
        if hit is not None and (hit.difficulty is not None or not retry_unrated):
            ratings[record.id] = hit
            stats.cached += 1
        else:
            todo.append(record)

    async def one(record: PromptRecord) -> None:
        try:
            rating = await rate_one(rater, record)
        except CallFailed as exc:
            stats.failed += 1
            stats.errors.append(f"{record.id}: {exc}")
            log.warning("testset.rating_failed", id=record.id, error=str(exc))
            return
        finally:
            bar.advance()
        stats.asked += 1
        stats.calls += rating.attempts
        if rating.difficulty is None:
            stats.unparseable += 1
            log.warning("testset.unrated", id=record.id, reply=rating.raw[:200])
        cache.put(rating)
        ratings[record.id] = rating
        done = stats.asked + stats.failed
        if done % 100 == 0:
            log.info("testset.rating_progress", done=done, total=len(todo))

    with progress_bar(len(todo), "difficulty", unit="prompt") as bar:
        await asyncio.gather(*(one(r) for r in todo))
    return ratings, stats


# --------------------------------------------------------------------------- build


@dataclass(frozen=True)
class BuildOptions:
    """Sizes follow the paper by default; every one is clamped to what the data has."""

    clusters: int = DEFAULT_CLUSTERS
    per_cluster: int = DEFAULT_PER_CLUSTER
    hard_pool: int = DEFAULT_HARD_POOL
    hard: int = DEFAULT_HARD
    seed: int = 0
    diverse_pick: DiversePick = "random"


@dataclass
class BuildResult:
    """The test set's records (ready to write) and how they came about."""

    records: list[dict[str, Any]]
    clusters: int
    diverse: int
    hard: int  # hard prompts kept
    pool: int  # prompts rated for difficulty (or meant to be)
    rating: RatingStats | None = None
    hard_asked: int = 0
    pool_difficulties: list[float] = field(default_factory=list)  # the rated pool prompts
    hard_difficulties: list[float] = field(default_factory=list)  # the kept ones
    unrated: list[Rating] = field(default_factory=list)  # pool prompts with no readable rating

    @property
    def hard_target(self) -> int:
        """The hard prompts the data allows of those asked for (the pool bounds them)."""
        return min(self.hard_asked, self.pool)


def select(
    records: Sequence[PromptRecord], embeddings: np.ndarray, options: BuildOptions
) -> tuple[np.ndarray, list[int], list[int]]:
    """Cluster, then choose the diverse indices and the hard candidate pool (no judge yet).

    One generator, drawn from in a fixed order (diverse first, then the pool),
    makes the whole selection a function of the seed.
    """
    labels, centroids = cluster(embeddings, options.clusters, seed=options.seed)
    rng = np.random.default_rng(options.seed)
    diverse = pick_diverse(
        labels, embeddings, centroids, options.per_cluster, rng, how=options.diverse_pick
    )
    pool = sample_pool(labels, options.hard_pool, rng) if options.hard > 0 else []
    return labels, diverse, pool


def hardest(pool: Sequence[int], records: Sequence[PromptRecord],
            ratings: dict[str, Rating], count: int) -> list[int]:
    """The ``count`` best-rated pool indices; ties go to the earlier input line."""
    rated = [
        i for i in pool
        if (r := ratings.get(records[i].id)) is not None and r.difficulty is not None
    ]
    rated.sort(key=lambda i: (-(ratings[records[i].id].difficulty or 0.0), records[i].line))
    return rated[:count]


def assemble(
    records: Sequence[PromptRecord], labels: np.ndarray, diverse: Sequence[int],
    hard: Sequence[int], ratings: dict[str, Rating],
) -> list[dict[str, Any]]:
    """Output records: the original object plus subset, subsets, cluster and difficulty.

    Order: the diverse picks in cluster order, then the hard-only ones, hardest first.
    """
    hard_set = set(hard)
    diverse_set = set(diverse)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i in [*diverse, *hard]:
        record = records[i]
        if record.id in seen:
            continue
        seen.add(record.id)
        subsets = [s for s, inside in (("diverse", i in diverse_set), ("hard", i in hard_set))
                   if inside]
        item = dict(record.raw)
        item["subset"] = "hard" if i in hard_set else "diverse"
        item["subsets"] = subsets
        item["cluster"] = int(labels[i])
        rating = ratings.get(record.id)
        if rating is not None and rating.difficulty is not None:
            item["difficulty"] = rating.difficulty
        out.append(item)
    return out


async def build(
    records: Sequence[PromptRecord], embeddings: np.ndarray, options: BuildOptions, *,
    rater: DifficultyRater | None, cache: RatingCache | None, retry_unrated: bool = False,
) -> BuildResult:
    """Select, rate the hard pool, and assemble the mixed test set."""
    labels, diverse, pool = select(records, embeddings, options)
    ratings: dict[str, Rating] = {}
    stats: RatingStats | None = None
    if pool:
        if rater is None or cache is None:
            raise ValueError("a hard subset needs a difficulty rater and a rating cache")
        ratings, stats = await rate_prompts(
            [records[i] for i in pool], rater, cache, retry_unrated=retry_unrated
        )
    hard = hardest(pool, records, ratings, options.hard)
    items = assemble(records, labels, diverse, hard, ratings)
    n_clusters = int(labels.max()) + 1 if len(labels) else 0
    pooled = [ratings[records[i].id] for i in pool if records[i].id in ratings]
    return BuildResult(
        items, n_clusters, len(diverse), len(hard), len(pool), stats, hard_asked=options.hard,
        pool_difficulties=[r.difficulty for r in pooled if r.difficulty is not None],
        hard_difficulties=[ratings[records[i].id].difficulty or 0.0 for i in hard],
        unrated=[r for r in pooled if r.difficulty is None],
    )


def shortfall(result: BuildResult) -> str | None:
    """Why the hard subset is unusable (empty, or under half of what the data allows), or None.

    The reason names what went wrong with the ratings, so that a user sees at once
    whether the judge cannot rate (unreadable replies) or could not be reached.
    """
    target = result.hard_target
    if result.hard_asked <= 0 or target <= 0 or (result.hard * 2 >= target and result.hard > 0):
        return None
    what = ("no hard prompt was kept" if result.hard == 0 else
            f"only {result.hard} hard prompts were kept of {target} asked for")
    causes = []
    if result.unrated:
        last = result.unrated[-1].raw.strip().replace("\n", " ")
        causes.append(f"{len(result.unrated)} of {result.pool} pool prompts have no readable "
                      f"difficulty (the judge's last reply: {last[:80]!r})")
    failed = result.rating.failed if result.rating is not None else 0
    if failed:
        causes.append(f"{failed} rating calls failed ({result.rating.errors[-1][:120]})"
                      if result.rating is not None and result.rating.errors
                      else f"{failed} rating calls failed")
    if not causes:
        causes.append(f"only {len(result.pool_difficulties)} pool prompts were rated")
    return f"{what}: {'; '.join(causes)}"


def difficulty_distribution(values: Sequence[float]) -> dict[str, Any]:
    """Count, range, mean, median and a 0..10 histogram (by rounded value) of difficulties."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    histogram = {str(d): 0 for d in range(11)}
    for v in ordered:
        histogram[str(min(10, max(0, round(v))))] += 1
    return {
        "n": len(ordered), "min": round(ordered[0], 3), "median": round(float(np.median(
            ordered)), 3), "mean": round(math.fsum(ordered) / len(ordered), 3),
        "max": round(ordered[-1], 3), "histogram": histogram,
    }


def write_jsonl(path: str | os.PathLike[str], items: Sequence[dict[str, Any]]) -> None:
    """Write records atomically (temp file, then rename): no half-written test set."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    tmp.replace(target)


def summary(result: BuildResult, bad: Sequence[BadLine], total: int) -> dict[str, Any]:
    """A JSON-able account of a build, printed by the command."""
    out: dict[str, Any] = {
        "input": total, "bad_lines": len(bad), "clusters": result.clusters,
        "diverse": result.diverse, "hard": result.hard, "hard_pool": result.pool,
        "written": len(result.records),
    }
    if result.rating is not None:
        r = result.rating
        out["ratings"] = {
            "cached": r.cached, "asked": r.asked, "calls": r.calls,
            "unparseable": r.unparseable, "failed": r.failed,
            "rated": len(result.pool_difficulties), "unrated": len(result.unrated),
        }
    if result.hard_asked > 0:
        out["hard_asked"] = result.hard_asked
        out["hard_kept"] = result.hard
        out["difficulty"] = {
            "pool": difficulty_distribution(result.pool_difficulties),
            "hard": difficulty_distribution(result.hard_difficulties),
        }
    if result.records:
        rated = [x["difficulty"] for x in result.records if "difficulty" in x]
        if rated:
            out["mean_difficulty"] = round(math.fsum(rated) / len(rated), 3)
    return out
