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
* Ratings are cached in a JSONL file keyed by prompt id, content hash and the
  rater (judge model + rating template version): a re-run, or one after a
  crash, asks only for what is missing, and an edited prompt or another judge
  is never served a stale score.
* An answer with no readable score is asked again (with a reminder of the
  format); still unreadable, the prompt is recorded as unrated (``difficulty``
  null) and never counts as hard. A failed call (network, server) is not
  cached, so the next run tries again.

Everything random is drawn from ``seed``; the same input, seed and ratings give
byte-identical output.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec
import numpy as np
import structlog

from arena_stream.datasets.formats import FieldMapping
from arena_stream.datasets.sources import SourceOptions
from arena_stream.schemas.events import PromptIn

log = structlog.get_logger(__name__)

# Paper defaults (Luo et al. 2024, WizardArena).
DEFAULT_CLUSTERS = 500
DEFAULT_PER_CLUSTER = 2
DEFAULT_HARD_POOL = 20
DEFAULT_HARD = 1000

RATING_TEMPLATE_VERSION = "difficulty-v1"
RATING_ATTEMPTS = 3  # answers without a readable score before giving up on a prompt
MAX_RATED_CHARS = 12_000  # longer conversations are cut in the middle for the judge

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


RATING_PROMPT = """\
You are rating how DIFFICULT a request to an AI assistant is. Do not answer it.

Consider what a correct, complete, high-quality answer would demand:
- specialised knowledge (science, law, medicine, advanced mathematics, niche tools);
- multi-step reasoning, planning, calculation or proof;
- precise constraints to satisfy at once (format, length, style, edge cases);
- creativity or depth beyond a stock answer;
- code that must be correct and complete, not a sketch.

Scale:
0-2: trivial (greetings, a common fact, a one-line rewrite)
3-4: easy (a standard explanation or short task most assistants get right)
5-6: moderate (needs care, some expertise or several steps)
7-8: hard (expert knowledge or long careful reasoning; many assistants would slip)
9-10: very hard (research-level, intricate multi-constraint or long exact work)

The request{context}:
<<<
{conversation}
>>>

Reply with one short sentence of justification, then a last line of exactly this form:
Difficulty: N
where N is an integer from 0 to 10."""

FORMAT_REMINDER = (
    "Your reply did not end with a readable rating. Reply with only one line of the form "
    "'Difficulty: N', N an integer from 0 to 10."
)

_LABELLED = re.compile(r"difficulty\W{0,5}(?:score|rating|level)?\W{0,5}(\d+(?:\.\d+)?)", re.I)
_OUT_OF_TEN = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*(?:/|out of)\s*10(?!\d|\.\d)", re.I)
_BARE = re.compile(r"\W*(\d+(?:\.\d+)?)\W*")


def parse_difficulty(text: str) -> float | None:
    """The 0-10 score in a judge's answer, or ``None`` when there is no unambiguous one.

    Tried in order: the last "Difficulty: N" (a model that restates the scale
    before concluding still counts by its conclusion), the last "N/10", then a
    reply that is nothing but a number. Out-of-range numbers are not scores.
    """
    for pattern in (_LABELLED, _OUT_OF_TEN):
        found = pattern.findall(text)
        if found:
            value = float(found[-1])
            return value if 0.0 <= value <= 10.0 else None
    bare = _BARE.fullmatch(text.strip())
    if bare:
        value = float(bare.group(1))
        return value if 0.0 <= value <= 10.0 else None
    return None


def render_conversation(raw: dict[str, Any], *, limit: int = MAX_RATED_CHARS) -> tuple[str, bool]:
    """The conversation as the rater sees it, and whether it has several turns."""
    messages = raw.get("messages") or [{"role": "user", "content": raw.get("prompt") or ""}]
    if len(messages) == 1:
        text = str(messages[0].get("content") or "")
    else:
        text = "\n\n".join(
            f"[{str(m.get('role', 'user')).upper()}]\n{m.get('content') or ''}" for m in messages
        )
    if len(text) > limit:
        half = limit // 2
        text = f"{text[:half]}\n[... {len(text) - limit} characters omitted ...]\n{text[-half:]}"
    return text, len(messages) > 1


def rating_messages(raw: dict[str, Any]) -> list[dict[str, str]]:
    """The judge conversation that asks for one prompt's difficulty."""
    text, multi = render_conversation(raw)
    context = " (a conversation; rate its LAST user turn, in context)" if multi else ""
    return [{"role": "user", "content": RATING_PROMPT.format(context=context, conversation=text)}]


class Completer(Protocol):
    """What rating needs from a model client (see :mod:`arena_stream.players`)."""

    async def complete(
        self, messages: list[dict[str, str]], *, max_tokens: int | None = None
    ) -> Any: ...


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
    """Append-only JSONL of ratings; the last entry for a key wins.

    Each rating is written (and flushed) as soon as it is known, so an
    interrupted build loses at most the calls in flight. A torn last line from
    a crash is skipped on load.
    """

    def __init__(self, path: str | os.PathLike[str] | None, rater: str) -> None:
        self.path = Path(path) if path else None
        self.rater = rater
        self.entries: dict[tuple[str, str], Rating] = {}
        if self.path is not None and self.path.is_file():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    item = json.loads(line)
                    if item.get("rater") != self.rater:
                        continue
                    rating = Rating(
                        id=str(item["id"]), digest=str(item["digest"]), rater=self.rater,
                        difficulty=None if item["difficulty"] is None
                        else float(item["difficulty"]),
                        raw=str(item.get("raw", "")), attempts=int(item.get("attempts", 1)),
                        status="ok" if item["difficulty"] is not None else "unparseable",
                    )
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
                self.entries[(rating.id, rating.digest)] = rating

    def get(self, record: PromptRecord) -> Rating | None:
        return self.entries.get((record.id, record.digest))

    def put(self, rating: Rating) -> None:
        self.entries[(rating.id, rating.digest)] = rating
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(rating.to_json(), ensure_ascii=False) + "\n")
            handle.flush()


def rater_name(judge_model: str) -> str:
    """Cache identity of a rater: a different judge or template means new ratings."""
    return f"{judge_model}|{RATING_TEMPLATE_VERSION}"


async def rate_one(
    client: Completer, record: PromptRecord, rater: str, *, attempts: int = RATING_ATTEMPTS
) -> Rating:
    """Ask for one prompt's difficulty; unreadable answers are re-asked with a reminder.

    Raises :class:`~arena_stream.retry.CallFailed` when the call itself fails
    (after the client's own retries): that is not a property of the prompt and
    must not be cached.
    """
    messages = rating_messages(record.raw)
    reply = ""
    for attempt in range(1, attempts + 1):
        completion = await client.complete(messages)
        reply = str(getattr(completion, "text", completion))
        score = parse_difficulty(reply)
        if score is not None:
            return Rating(record.id, record.digest, rater, score, reply, attempt)
        messages = [
            *messages[:1],
            {"role": "assistant", "content": reply},
            {"role": "user", "content": FORMAT_REMINDER},
        ]
    return Rating(record.id, record.digest, rater, None, reply, attempts, status="unparseable")


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
    records: Sequence[PromptRecord], client: Completer, cache: RatingCache, *,
    attempts: int = RATING_ATTEMPTS, retry_unrated: bool = False,
) -> tuple[dict[str, Rating], RatingStats]:
    """Difficulty of every record, from the cache where possible, the rest concurrently.

    Concurrency is bounded by the client itself (``concurrency`` in its config),
    so all requests are started at once and queue there.
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
            rating = await rate_one(client, record, cache.rater, attempts=attempts)
        except CallFailed as exc:
            stats.failed += 1
            stats.errors.append(f"{record.id}: {exc}")
            log.warning("testset.rating_failed", id=record.id, error=str(exc))
            return
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
    hard: int
    pool: int
    rating: RatingStats | None = None


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
    client: Completer | None, cache: RatingCache | None, retry_unrated: bool = False,
) -> BuildResult:
    """Select, rate the hard pool, and assemble the mixed test set."""
    labels, diverse, pool = select(records, embeddings, options)
    ratings: dict[str, Rating] = {}
    stats: RatingStats | None = None
    if pool:
        if client is None or cache is None:
            raise ValueError("a hard subset needs a judge client and a rating cache")
        ratings, stats = await rate_prompts(
            [records[i] for i in pool], client, cache, retry_unrated=retry_unrated
        )
    hard = hardest(pool, records, ratings, options.hard)
    items = assemble(records, labels, diverse, hard, ratings)
    n_clusters = int(labels.max()) + 1 if len(labels) else 0
    return BuildResult(items, n_clusters, len(diverse), len(hard), len(pool), stats)


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
        }
    if result.records:
        rated = [x["difficulty"] for x in result.records if "difficulty" in x]
        if rated:
            out["mean_difficulty"] = round(math.fsum(rated) / len(rated), 3)
    return out
