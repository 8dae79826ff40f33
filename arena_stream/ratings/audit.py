"""Recompute every rating from the judgments log and compare with the live state.

The recomputation applies the stream's own rules in the stream's own order:
judgments in offset order, the first judgment of each battle counts and
later ones are duplicates, Elo by :class:`arena_stream.elo.EloBook`. The live
state is the ratings table as its changelog last recorded it, and the last
update per model on the ratings topic. Any difference is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from arena_stream.config import Config
from arena_stream.kafka.io import consumer, partitions, read_all
from arena_stream.kafka.replay import judgments_in_window
from arena_stream.kafka.topics import changelog_topic
from arena_stream.ratings.elo import EloBook
from arena_stream.ratings.standings import latest_ratings
from arena_stream.schemas import RatingUpdate, decode


@dataclass
class AuditReport:
    judgments: int = 0
    duplicates: int = 0
    recomputed: dict[str, tuple[float, int]] = field(default_factory=dict)
    table: dict[str, tuple[float, int]] = field(default_factory=dict)
    topic: dict[str, tuple[float, int]] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def render(self) -> str:
        lines = [f"judgments in the log: {self.judgments} ({self.duplicates} duplicates ignored)"]
        lines.append(f"{'model':<28}{'recomputed':>12}{'table':>12}{'topic':>12}{'battles':>9}")
        for model in sorted(self.recomputed, key=lambda m: -self.recomputed[m][0]):
            r, n = self.recomputed[model]
            t = self.table.get(model, (float("nan"), 0))[0]
            u = self.topic.get(model, (float("nan"), 0))[0]
            lines.append(f"{model:<28}{r:>12.4f}{t:>12.4f}{u:>12.4f}{n:>9}")
        if self.differences:
            lines.append(f"\nFAILED: {len(self.differences)} difference(s):")
            lines.extend(f"  - {d}" for d in self.differences)
        else:
            lines.append("\nOK: every rating matches its recomputation from the log.")
        return "\n".join(lines)


async def live_table(config: Config) -> dict[str, tuple[float, int]] | None:
    """The ratings table's last state, from its changelog (None if it has none yet)."""
    from arena_stream.kafka.broker import Quirks, true_end_offsets

    name = changelog_topic(config.app_id, "ratings")
    async with consumer(config) as c:
        try:
            tps = await partitions(c, name)
        except KeyError:
            return None
        c.assign(tps)
        ends = await true_end_offsets(c, tps, Quirks.for_broker(config.broker))
        book = None
        for tp in tps:
            if ends[tp] == 0:
                continue
            await c.seek_to_beginning(tp)
            while (await c.position(tp)) < ends[tp]:
                batch = await c.getmany(tp, timeout_ms=2000)
                for r in batch.get(tp, []):
                    if r.offset < ends[tp] and r.key is not None and r.value is not None and (
                        msgspec.json.decode(r.key) == "book"
                    ):
                        book = msgspec.json.decode(r.value)
                        if isinstance(book, str):  # the worker keeps table values as JSON text
                            book = msgspec.json.decode(book)
    if book is None:
        return None
    return {m: (float(d["rating"]), int(d["battles"])) for m, d in book["players"].items()}


async def audit(config: Config, *, tolerance: float = 1e-6) -> AuditReport:
    report = AuditReport()
    book = EloBook(config.ratings)
    counted: set[str] = set()
    for _, j in await judgments_in_window(config):
        report.judgments += 1
        if j.battle_id in counted:
            report.duplicates += 1
            continue
        counted.add(j.battle_id)
        book.apply(j.model_a, j.model_b, j.winner)
    report.recomputed = {m: (p.rating, p.battles) for m, p in book.players.items()}
    updates = [decode(r.value, RatingUpdate) for r in await read_all(config, "ratings")]
    report.topic = {s.model: (s.rating, s.battles) for s in latest_ratings(updates)}
    table = await live_table(config)
    if table is None and report.recomputed:
        report.differences.append("the ratings table has no state (is a worker running?)")
    report.table = table or {}
    for where, live, tol in (("table", report.table, tolerance), ("topic", report.topic, 1e-3)):
        if table is None and where == "table":
            continue
        for model in sorted(set(report.recomputed) | set(live)):
            want = report.recomputed.get(model)
            have = live.get(model)
            if want is None or have is None:
                missing = "the recomputation" if want is None else f"the {where}"
                report.differences.append(f"{model}: missing from {missing}")
                continue
            if abs(want[0] - have[0]) > tol or want[1] != have[1]:
                report.differences.append(
                    f"{model}: {where} has {have[0]:.4f} after {have[1]} battles, "
                    f"the log gives {want[0]:.4f} after {want[1]}"
                )
    return report
