"""Keep test prompts out of training data, and duplicates out of both.

An offline arena is only a fair proxy for the human one if the target never
trained on (something very like) the test prompts; Arena Learning removes, for
every test prompt, its nearest training prompts by embedding similarity. This
module does that, plus the usual hygiene within the training file:

1. **Exact duplicates**: same text after normalisation (Unicode NFKC, case,
   whitespace). The first occurrence is kept.
2. **Test overlap**: for every test prompt, its ``top_k`` most similar training
   prompts are removed when their cosine similarity is at least ``threshold``.
   A training prompt whose normalised text equals a test prompt's is removed
   whatever ``top_k`` says (``top_k`` bounds paraphrases, not copies).
3. **Near duplicates**: of two remaining training prompts with cosine similarity
   at least ``near_dup_threshold``, the later one goes (greedily in file order,
   so a removed prompt never causes another removal).

Each step works on the survivors of the previous ones, so a duplicate never
takes one of a test prompt's ``top_k`` slots. Step 3 compares all pairs in
blocks (quadratic time, bounded memory): fine for the tens of thousands of
prompts of an arena round.

:class:`Decontaminator` is the same test-overlap check for a stream, one
prompt at a time; there is no training set to rank against, so a prompt is
contaminated when any test prompt is at least ``threshold`` similar.

Similarities come from :mod:`arena_stream.embeddings` (MiniLM: paraphrases of
a prompt score about 0.93-0.99, a different question on the same topic about
0.5-0.75, hence the default 0.85).
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from arena_stream.offline.testset import BadLine, PromptRecord, read_prompts

DEFAULT_TOP_K = 5
DEFAULT_THRESHOLD = 0.85
DEFAULT_NEAR_DUP_THRESHOLD = 0.95
BLOCK_CELLS = 1 << 24  # similarity cells per block (64 MiB of float32)

Reason = Literal["exact_duplicate", "test_overlap", "near_duplicate"]

_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """The form two prompts must share to count as the same text."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_hash(text: str) -> str:
    """sha256 of :func:`normalize_text`, for exact matching at any scale."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class HeldOut:
    """A prompt of a test set, and the file it came from (for the report)."""

    id: str
    text: str
    source: str = ""


@dataclass
class Removal:
    """Why one training prompt was removed: what it matched and how closely."""

    id: str
    line: int
    reason: Reason
    match_id: str
    similarity: float
    match_source: str = ""  # test set file for "test_overlap", "" otherwise
    match_line: int = 0  # line of the kept training prompt, for duplicates


@dataclass(frozen=True)
class Options:
    top_k: int = DEFAULT_TOP_K
    threshold: float = DEFAULT_THRESHOLD
    near_dup_threshold: float = DEFAULT_NEAR_DUP_THRESHOLD


@dataclass
class Result:
    """Which training records survive (indices into the input) and what was removed."""

    kept: list[int]
    removed: list[Removal] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {"exact_duplicate": 0, "test_overlap": 0, "near_duplicate": 0}
        for r in self.removed:
            out[r.reason] += 1
        return out


def _block_rows(columns: int) -> int:
    return max(1, BLOCK_CELLS // max(1, columns))


def find_test_overlaps(
    train: np.ndarray, test: np.ndarray, *, top_k: int, threshold: float
) -> dict[int, tuple[int, float]]:
    """Training rows among some test row's ``top_k`` neighbours at >= ``threshold``.

    Maps training row -> (most similar such test row, similarity). Rows must be
    unit vectors (dot product = cosine).
    """
    hits: dict[int, tuple[int, float]] = {}
    n = len(train)
    if n == 0 or len(test) == 0 or top_k <= 0:
        return hits
    k = min(top_k, n)
    step = _block_rows(n)
    for start in range(0, len(test), step):
        sims = test[start:start + step] @ train.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for row, cols in enumerate(top):
            for j in cols.tolist():
                s = float(sims[row, j])
                if s >= threshold and (j not in hits or s > hits[j][1]):
                    hits[j] = (start + row, s)
    return hits


def near_duplicates(vectors: np.ndarray, threshold: float) -> dict[int, tuple[int, float]]:
    """Rows to drop as near duplicates of an earlier kept row: row -> (kept row, similarity).

    Greedy in row order: row i goes when any earlier *kept* row is at least
    ``threshold`` similar, so chains (a~b, b~c, a!~c) keep a and c.
    """
    n = len(vectors)
    dropped: dict[int, tuple[int, float]] = {}
    kept = np.zeros(n, dtype=bool)
    step = _block_rows(n)
    for start in range(0, n, step):
        stop = min(n, start + step)
        sims = vectors[start:stop] @ vectors[:stop].T
        for row in range(stop - start):
            i = start + row
            candidates = np.flatnonzero(sims[row, :i] >= threshold)
            candidates = candidates[kept[candidates]]
            if len(candidates):
                best = int(candidates[np.argmax(sims[row, candidates])])
                dropped[i] = (best, float(sims[row, best]))
            else:
                kept[i] = True
    return dropped


def decontaminate(
    train: Sequence[PromptRecord], train_vectors: np.ndarray,
    tests: Sequence[HeldOut], test_vectors: np.ndarray, options: Options = Options(),
) -> Result:
    """Apply the three steps (see the module docstring) and say what went where."""
    removed: dict[int, Removal] = {}

    # 1. exact duplicates within the training file
    first: dict[str, int] = {}
    for i, record in enumerate(train):
        h = text_hash(record.text)
        if h in first:
            j = first[h]
            removed[i] = Removal(record.id, record.line, "exact_duplicate", train[j].id, 1.0,
                                 match_line=train[j].line)
        else:
            first[h] = i

    # 2. overlap with the test sets: exact copies, then top-k neighbours above the threshold
    test_by_hash = {text_hash(t.text): t for t in tests}
    for h, i in first.items():
        t = test_by_hash.get(h)
        if t is not None:
            removed[i] = Removal(train[i].id, train[i].line, "test_overlap", t.id, 1.0, t.source)
    alive = [i for i in range(len(train)) if i not in removed]
    hits = find_test_overlaps(train_vectors[alive], test_vectors, top_k=options.top_k,
                         threshold=options.threshold)
    for row, (t_row, sim) in hits.items():
        i, t = alive[row], tests[t_row]
        removed[i] = Removal(train[i].id, train[i].line, "test_overlap", t.id, round(sim, 4),
                             t.source)

    # 3. near duplicates among the survivors
    alive = [i for i in range(len(train)) if i not in removed]
    for row, (kept_row, sim) in near_duplicates(train_vectors[alive],
                                                options.near_dup_threshold).items():
        i, j = alive[row], alive[kept_row]
        removed[i] = Removal(train[i].id, train[i].line, "near_duplicate", train[j].id,
                             round(sim, 4), match_line=train[j].line)

    kept = [i for i in range(len(train)) if i not in removed]
    return Result(kept, [removed[i] for i in sorted(removed)])


def read_tests(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[HeldOut], list[str]]:
    """Test prompts from JSONL files (test set output or plain prompts); problems as text."""
    tests: list[HeldOut] = []
    problems: list[str] = []
    for path in paths:
        records, bad = read_prompts(path, require_final_user=False, unique_ids=False)
        tests.extend(HeldOut(r.id, r.text, str(path)) for r in records)
        problems.extend(f"{path}:{b.line}: skipped: {b.error}" for b in bad)
    return tests, problems


def report(result: Result, bad: Sequence[BadLine], total: int, options: Options,
           *, prompts: str, against: Sequence[str]) -> dict[str, Any]:
    """The JSON report: parameters, counts, and every removal with its reason."""
    return {
        "prompts": prompts,
        "against": list(against),
        "parameters": asdict(options),
        "input_lines": total,
        "bad_lines": [{"line": b.line, "error": b.error} for b in bad],
        "kept": len(result.kept),
        "removed": len(result.removed),
        "by_reason": result.counts(),
        "removals": [asdict(r) for r in result.removed],
    }


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one prompt against the test set."""

    contaminated: bool
    reason: str | None = None
    match_id: str | None = None
    similarity: float = 0.0


class Decontaminator:
    """In-memory test-overlap filter for prompts as they arrive (e.g. on ``arena.prompts``).

    Build it once from the test set (embedding it costs a moment), then check
    prompts one by one or in batches; batches are much cheaper per prompt.
    """

    def __init__(
        self, test_texts: Sequence[str], *, test_ids: Sequence[str] | None = None,
        threshold: float = DEFAULT_THRESHOLD, model_path: str | os.PathLike[str] | None = None,
    ) -> None:
        from arena_stream.models.embeddings import embed

        if test_ids is not None and len(test_ids) != len(test_texts):
            raise ValueError("test_ids and test_texts differ in length")
        self.test_ids = list(test_ids) if test_ids is not None else [
            str(i) for i in range(len(test_texts))
        ]
        self.threshold = threshold
        self.model_path = model_path
        self._hashes = {text_hash(t): i for i, t in enumerate(test_texts)}
        self._vectors = embed(list(test_texts), model_path=model_path)

    @classmethod
    def from_files(cls, paths: Sequence[str | os.PathLike[str]], **kwargs: Any) -> Decontaminator:
        """Load the test prompts of one or more JSONL test sets."""
        tests, _ = read_tests(paths)
        return cls([t.text for t in tests], test_ids=[t.id for t in tests], **kwargs)

    def check(self, texts: Sequence[str]) -> list[Verdict]:
        """One verdict per text (use :func:`arena_stream.embeddings.conversation_text`)."""
        from arena_stream.models.embeddings import embed

        verdicts: list[Verdict | None] = []
        pending: list[int] = []
        for i, text in enumerate(texts):
            exact = self._hashes.get(text_hash(text))
            if exact is not None:
                test_id = self.test_ids[exact]
                verdicts.append(Verdict(True, f"same text as test prompt {test_id}", test_id, 1.0))
            else:
                verdicts.append(None)
                pending.append(i)
        if pending and len(self._vectors):
            sims = embed([texts[i] for i in pending], model_path=self.model_path) @ self._vectors.T
            for row, i in enumerate(pending):
                best = int(np.argmax(sims[row]))
                s = float(sims[row, best])
                if s >= self.threshold:
                    test_id = self.test_ids[best]
                    verdicts[i] = Verdict(
                        True, f"similar to test prompt {test_id} (cosine {s:.3f})", test_id,
                        round(s, 4),
                    )
                else:
                    verdicts[i] = Verdict(False, similarity=round(s, 4))
        return [v if v is not None else Verdict(False) for v in verdicts]

    def is_contaminated(self, text: str) -> tuple[bool, str | None]:
        """``(True, why)`` when ``text`` is (nearly) a test prompt, else ``(False, None)``."""
        verdict = self.check([text])[0]
        return verdict.contaminated, verdict.reason
