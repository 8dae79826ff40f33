"""Re-judge past battles with a second judge, into a topic of their own.

Replays the battles topic (all of it, or --from/--to) through the judge that
--judge-config describes (a TOML file with a [judge] table, as in any config,
and optionally [battles] for its tie margin; other tables are ignored, so a
whole second config works too) and writes its verdicts to
<prefix>judgments.rejudge.<name>. The judgments and ratings topics are never
written: the live ratings stay untouched. Battles already re-judged under the
same name are skipped, so running it again finishes what failed or was
stopped. At the end it prints how far the two judges agree, battle by battle
and on the leaderboards they give (`consistency --config F --rejudged NAME`
prints it again later).
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING, Any

from arena_stream.cli.arguments import time_arg

if TYPE_CHECKING:
    from arena_stream.config import BattlesConfig, JudgeConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the arena's TOML configuration")
    parser.add_argument("--judge-config", required=True, metavar="FILE",
                        help="TOML with the second judge's [judge] table")
    parser.add_argument("--name", help="names the output topic (default: from the judge's model)")
    parser.add_argument("--from", dest="from_time", type=time_arg, metavar="T",
                        help="first battle time (ISO-8601 or unix seconds)")
    parser.add_argument("--to", dest="to_time", type=time_arg, metavar="T",
                        help="last battle time (ISO-8601 or unix seconds)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="battles judged at once (default: the judge's concurrency)")
    parser.add_argument("--json", action="store_true",
                        help="print the run and the comparison as JSON")


def default_name(model: str) -> str:
    """A topic-safe name from the judge's model (``org/Model 7B`` -> ``org-Model-7B``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-") or "judge"


def load_judge_file(path: str) -> tuple[JudgeConfig, BattlesConfig | None]:
    """The ``[judge]`` (and optional ``[battles]``) table of a TOML file, checked as in a config.

    Errors name the file and the key, as :func:`arena_stream.config.load` does.
    """
    from pathlib import Path

    import msgspec

    from arena_stream.config import BattlesConfig, ConfigError, JudgeConfig

    # other tables are ignored (a whole second config is a valid judge file)
    judge_file = msgspec.defstruct("JudgeFile", [("judge", JudgeConfig | None, None),
                                                 ("battles", BattlesConfig | None, None)],
                                   kw_only=True)

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"judge config not found: {p}")
    try:
        parsed: Any = msgspec.toml.decode(p.read_bytes(), type=judge_file)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ConfigError(f"{p}: {exc}") from None
    if parsed.judge is None:
        raise ConfigError(f"{p}: no [judge] table")
    spec = parsed.judge
    if spec.backend == "openai" and not spec.base_url:
        raise ConfigError(f'{p}: judge: backend "openai" needs base_url')
    if spec.concurrency < 1 or spec.max_retries < 0 or spec.max_tokens < 1:
        raise ConfigError(f"{p}: judge: concurrency and max_tokens must be >= 1, "
                          "max_retries >= 0")
    if spec.agreement_min_judgments > spec.agreement_window:
        raise ConfigError(f"{p}: judge: agreement_min_judgments cannot exceed agreement_window")
    return spec, parsed.battles


def main(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from arena_stream.config import ConfigError, load
    from arena_stream.kafka.topics import Topics

    try:
        config = load(args.config)
        spec, battles_spec = load_judge_file(args.judge_config)
        name = args.name or default_name(spec.model)
        topic = Topics(config.broker, config.app_id).rejudged(name)
    except (ConfigError, ValueError) as exc:
        print(f"arena-stream rejudge: error: {exc}", file=sys.stderr)
        return 2
    from arena_stream.judges import build_judge
    from arena_stream.kafka.replay import RejudgeReport, read_judgments, rejudge
    from arena_stream.ratings.judge_agreement import compare_judges, render_comparison

    judge = build_judge(spec, battles_spec or config.battles)

    async def run() -> RejudgeReport:
        try:
            return await rejudge(config, judge, topic, from_time=args.from_time,
                                 to_time=args.to_time,
                                 concurrency=args.concurrency or spec.concurrency)
        finally:
            for client in judge.clients().values():
                await client.aclose()

    report = asyncio.run(run())
    live = read_judgments(config, from_time=args.from_time, to_time=args.to_time)
    comparison = compare_judges(live, read_judgments(config, key=topic))
    failed = sum(report.failed.values())
    if args.json:
        out: dict[str, Any] = {"topic": topic, "run": vars(report),
                               "comparison": comparison.to_json()}
        print(json.dumps(out, indent=2))
    else:
        print(f"re-judged {report.judged} of {report.battles} battles into {topic} "
              f"({report.already} done before, {failed} failed)")
        print(render_comparison(comparison, live=config.judge.model, other=spec.model))
    if failed:
        reasons = ", ".join(f"{k} x{v}" for k, v in sorted(report.failed.items()))
        print(f"arena-stream rejudge: {failed} battle(s) failed ({reasons}); run again to "
              "retry them", file=sys.stderr)
        return 1
    return 0
