"""Following a run from the outside: which prompts are done, the standings, the versions.

A prompt is done when it was rejected (at intake, or because it formed no
battle), or when all its battles have been seen on the battles topic (each
carries how many its prompt formed, ``Battle.of``) and each has both rating
updates or a judge dead letter. The tracker only observes the topics; it never
re-derives what the stream decided.
"""

from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass, field
from typing import Any

import msgspec

from arena_stream.config import Config
from arena_stream.ratings.standings import Standing, latest_ratings
from arena_stream.schemas import (
    Battle,
    DeadLetter,
    Generation,
    LeaderboardSnapshot,
    ModelVersion,
    RatingUpdate,
    TrainingJob,
    TrainingProgress,
    decode,
    decode_jobs_record,
)
from arena_stream.streams.stages.evaluate import is_heldout

TOPICS = ("generations", "battles", "ratings", "deadletter", "models", "jobs", "leaderboard")


@dataclass
class PromptState:
    answered: set[str] = field(default_factory=set)  # players who reported (ok or not)
    expected: int = 0  # battles the prompt formed (Battle.of), once one is seen
    battles: set[str] = field(default_factory=set)
    rejected: str | None = None

    @property
    def formed(self) -> bool:
        return self.expected > 0 and len(self.battles) >= self.expected


@dataclass
class Tracker:
    config: Config
    prompts: dict[str, PromptState] = field(default_factory=dict)
    rated: set[str] = field(default_factory=set)  # battles whose both updates arrived
    _updated: dict[str, set[str]] = field(default_factory=dict)  # battle -> models updated
    failed_battles: set[str] = field(default_factory=set)
    updates: dict[str, RatingUpdate] = field(default_factory=dict)
    versions: list[ModelVersion] = field(default_factory=list)
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> last state
    training: dict[str, TrainingProgress] = field(default_factory=dict)  # job id -> last step
    snapshot: LeaderboardSnapshot | None = None
    dead_letters: int = 0
    dead_reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    # player -> prompts it skipped (a reference player and prompts without a reference)
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)

    def expect(self, prompt_ids: list[str]) -> None:
        for pid in prompt_ids:
            self.prompts.setdefault(pid, PromptState())

    def feed(self, topic_key: str, value: bytes) -> None:
        # Not ours to judge: the stream dead-letters bad records.
        with contextlib.suppress(msgspec.MsgspecError):
            self._feed(topic_key, value)

    def state_of(self, prompt_id: str) -> PromptState | None:
        """A prompt the run waits for, or None. Held-out evaluation prompts are taken even
        before the run expects them: the worker publishes them when a version is applied,
        which can be before the run learns of that version, and their battles must count."""
        state = self.prompts.get(prompt_id)
        if state is None and is_heldout(prompt_id):
            state = self.prompts[prompt_id] = PromptState()
        return state

    def _feed(self, key: str, value: bytes) -> None:
        if key == "generations":
            gen = decode(value, Generation)
            if not gen.ok and (gen.error or "").startswith("no_reference"):
                self.skipped[gen.player] += 1
            state = self.state_of(gen.prompt_id)
            if state is not None:
                state.answered.add(gen.player)
        elif key == "battles":
            battle = decode(value, Battle)
            state = self.state_of(battle.prompt_id)
            if state is not None:
                state.expected = battle.of
                state.battles.add(battle.id)
        elif key == "ratings":
            u = decode(value, RatingUpdate)
            # A judgment makes two updates (one per model); the standings are final for a
            # battle only when both are in, or the report could show one model a battle behind.
            models = self._updated.setdefault(u.battle_id, set())
            models.add(u.model)
            if len(models) >= 2:
                self.rated.add(u.battle_id)
                del self._updated[u.battle_id]
            self.updates[f"{u.model}"] = u
        elif key == "deadletter":
            d = decode(value, DeadLetter)
            self.dead_letters += 1
            self.dead_reasons[f"{d.stage}/{d.reason}"] += 1
            if d.stage == "judge" and d.ref:
                self.failed_battles.add(d.ref)
            elif d.stage == "intake" and d.key and self.state_of(d.key) is not None:
                self.prompts[d.key].rejected = d.reason
            elif d.reason == "no_battle" and d.ref and self.state_of(d.ref) is not None:
                self.prompts[d.ref].rejected = d.reason
        elif key == "models":
            self.versions.append(decode(value, ModelVersion))
        elif key == "jobs":
            record = decode_jobs_record(value)
            if isinstance(record, TrainingJob):
                self.jobs.setdefault(record.id, "emitted")
            elif record.state != "tick":
                self.jobs[record.job_id] = record.state
                if record.progress is not None:
                    self.training[record.job_id] = record.progress
        elif key == "leaderboard":
            self.snapshot = decode(value, LeaderboardSnapshot)

    def is_done(self, pid: str) -> bool:
        state = self.prompts[pid]
        if state.rejected:
            return True
        if not state.formed:
            return False
        return all(b in self.rated or b in self.failed_battles for b in state.battles)

    def counts(self) -> dict[str, Any]:
        done = sum(self.is_done(p) for p in self.prompts)
        answered = sum(s.formed or bool(s.rejected) for s in self.prompts.values())
        battles = sum(len(s.battles) for s in self.prompts.values())
        judged = sum(
            len([b for b in s.battles if b in self.rated or b in self.failed_battles])
            for s in self.prompts.values()
        )
        return {"prompts": len(self.prompts), "answered": answered, "done": done,
                "battles": battles, "judged": judged}

    def all_done(self) -> bool:
        return all(self.is_done(p) for p in self.prompts)

    def job_line(self, job_id: str) -> str:
        """``job-3:progress step 12/40 loss 0.71 812 tok/s ETA 1m05s``: a job as one phrase."""
        state = self.jobs.get(job_id, "unknown")
        p = self.training.get(job_id)
        if state != "progress" or p is None:
            return f"{job_id}:{state}"
        parts = [f"{job_id}:{state} step {p.step}" + (f"/{p.max_steps}" if p.max_steps else "")]
        if p.loss is not None:
            parts.append(f"loss {p.loss:.3g}")
        if p.tokens_per_second is not None:
            parts.append(f"{p.tokens_per_second:.0f} tok/s")
        if p.eta_s is not None:
            minutes, seconds = divmod(round(p.eta_s), 60)
            parts.append(f"ETA {minutes}m{seconds:02d}s" if minutes else f"ETA {seconds}s")
        return " ".join(parts)

    def jobs_busy(self) -> bool:
        return any(s not in ("finished", "failed") for s in self.jobs.values())

    def standings(self) -> list[Standing]:
        return latest_ratings(self.updates.values())

    def verdict(self) -> str | None:
        """Why the run failed, in one sentence, or None when it did its work.

        A run fails when it judged nothing, or when dead letters outnumber the
        battles it rated (most of its work was rejected).
        """
        rated = len(self.rated)
        if rated and self.dead_letters <= rated:
            return None
        reasons = ", ".join(f"{n} x {r}" for r, n in self.dead_reasons.most_common(3))
        why = f" (dead letters: {reasons}; see `arena-stream deadletter`)" if reasons else ""
        if not rated:
            return f"no battle was judged{why}"
        return f"most of the work was dead-lettered: {self.dead_letters} dead letters " \
            f"against {rated} rated battles{why}"
