"""Show the current Elo ratings, or follow every rating update live.

Without ``--follow``: the latest rating of each model, read from the ratings
topic, with each model's judge record (judgments and dead-letter topics): how
many of its battles the judge dead-lettered, and whether that share is far
above the others' (a sign that its answers suppress their own verdicts, see
:mod:`arena_stream.ratings.judge_health`). A model whose battles were all
dead-lettered has no rating and is listed all the same. Then each judge's own
health: how often its two position-swapped games agree, how often it prefers
the answer shown first, its failure and retry rates and its margins, with a
warning when the agreement is under ``[judge] min_agreement`` (see
:mod:`arena_stream.ratings.judge_quality`).
With ``--follow``: one line per update as judgments arrive.
``--json`` prints machine-readable output: an object with ``models`` (a list,
each with a ``judge`` object), ``judges`` and ``warnings``; or one rating
update per line when following.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from typing import Any, TypeVar

import msgspec

from arena_stream.ratings.judge_health import JudgeHealth, health_report
from arena_stream.ratings.judge_quality import (
    AgreementFloor,
    JudgeQuality,
    JudgmentView,
    configured_judge,
)
from arena_stream.ratings.standings import Standing
from arena_stream.schemas import DeadLetter

T = TypeVar("T")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="TOML configuration file")
    parser.add_argument("--follow", action="store_true", help="print updates as they come")
    parser.add_argument("--json", action="store_true", help="JSON output")


def main(args: argparse.Namespace) -> int:
    import asyncio

    from arena_stream.cli.display import print_ratings
    from arena_stream.config import load
    from arena_stream.kafka.io import ensure_ready, read_all, tail
    from arena_stream.ratings.standings import latest_ratings
    from arena_stream.schemas import RatingUpdate, decode, encode

    config = load(args.config)

    async def follow() -> None:
        await ensure_ready(config, timeout=None)  # a follower may start before anything else
        async for record in tail(config, "ratings"):
            try:
                update = decode(record.value, RatingUpdate)
            except (ValueError, TypeError):
                continue  # not a rating update; the stream never writes one

            if args.json:
                print(encode(update).decode(), flush=True)
            else:
                print(f"{update.model:<24} {update.rating:9.2f} ({update.delta:+.2f})"
                      f"  battles={update.battles}  vs {update.opponent}", flush=True)

    if args.follow:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(follow())
        return 0
    async def read() -> tuple[list[Any], list[Any], list[Any]]:
        return (await read_all(config, "ratings"), await read_all(config, "judgments"),
                await read_all(config, "deadletter"))

    ratings, judgments, dead = asyncio.run(read())
    rows = latest_ratings(decode(r.value, RatingUpdate) for r in ratings)
    report = health_report(_decoded(judgments, JudgmentView), _decoded(dead, DeadLetter),
                           floor=AgreementFloor.from_config(config.judge),
                           fallback=configured_judge(config))
    if args.json:
        print(json.dumps({"models": with_judge_health(rows, report.players),
                          "judges": msgspec.to_builtins(report.judges),
                          "warnings": report.warnings}))
        return 0
    print_ratings(rows)
    for q in report.judges:
        print(judge_line(q))
    for line in report.warnings:
        print(f"warning: {line}")
    return 0


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def judge_line(q: JudgeQuality) -> str:
    """One judge's health in a line, for people."""
    interval = ("" if q.agreement_low is None
                else f" [{_pct(q.agreement_low)}-{_pct(q.agreement_high)}]")
    p50 = q.margin.quantiles.get("p50")
    return (f"judge {q.judge} ({q.template_version}): {q.judgments} judgments, games agree "
            f"{_pct(q.agreement)}{interval} (last {q.recent_n}: {_pct(q.recent_agreement)}), "
            f"first shown wins {_pct(q.first_position_rate)}, verdict failures "
            f"{_pct(q.verdict_failure_rate)}, all failures {_pct(q.failure_rate)}, retried "
            f"games {_pct(q.retry_rate)}, median margin {'-' if p50 is None else p50}")


def with_judge_health(rows: list[Standing], health: list[JudgeHealth]) -> list[dict[str, Any]]:
    """Rating rows with a ``judge`` object each; unrated models with a judge record last."""
    by_model = {h.model: msgspec.to_builtins(h) for h in health}
    for record in by_model.values():
        del record["model"]
    out = [{**msgspec.to_builtins(row), "judge": by_model.pop(row.model, None)} for row in rows]
    for model, record in by_model.items():
        out.append({"model": model, "rating": None, "battles": 0, "wins": 0, "losses": 0,
                    "ties": 0, "rank": None, "judge": record})
    return out


def _decoded(records: list[Any], kind: type[T]) -> Iterator[T]:
    """Records that decode as ``kind``; anything else on the topic is not ours to judge."""
    decoder = msgspec.json.Decoder(kind)
    for record in records:
        try:
            yield decoder.decode(record.value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
