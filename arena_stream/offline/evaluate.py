"""Offline evaluation on a fixed test set: every model answers, all pairs are judged.

This is WizardArena's simulated arena: the same two-game judge as the stream,
round-robin battles on a test set that does not move, and a Bradley-Terry
leaderboard with intervals. Answers and verdicts are cached
(:mod:`arena_stream.offline.cache`, one SQLite file) under keys holding
everything that changes them, so adding one model (a new target version) costs
only that model's answers and battles, and changing a model's settings asks it
again.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import structlog

from arena_stream.arena.battles import battle_id
from arena_stream.arena.validation import digest
from arena_stream.config import Config, PlayerConfig
from arena_stream.judges import Judge, JudgeFailed, build_judge
from arena_stream.models.clients import ChatClient, build_client
from arena_stream.models.retry import CallFailed
from arena_stream.offline.cache import OfflineCache, answer_key, model_fingerprint
from arena_stream.progress_bars import progress_bar
from arena_stream.schemas import Battle, Prompt

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Contestant:
    name: str  # rated name, e.g. "target@v2"
    spec: PlayerConfig
    version: int = 0
    path: str | None = None  # adapter of a trained version


def versions_manifest(config: Config) -> Path:
    return Path(config.training.model_dir) / config.target.name / "versions.json"


def trained_versions(config: Config) -> list[Contestant]:
    """The target's trained versions recorded by the trainer in its model directory."""
    manifest = versions_manifest(config)
    if not manifest.is_file():
        return []
    entries = json.loads(manifest.read_text())
    target = config.target
    return [
        Contestant(f"{target.name}@v{e['version']}", target, int(e["version"]), e["path"])
        for e in sorted(entries, key=lambda e: e["version"])
    ]


def contestants(config: Config, *, include_versions: bool = True) -> list[Contestant]:
    out = []
    for p in config.players:
        name = f"{p.name}@v0" if p.role == "target" else p.name
        out.append(Contestant(name, p))
    if include_versions:
        out.extend(trained_versions(config))
    return out


async def _client_for(c: Contestant) -> ChatClient:
    client = build_client(c.spec, c.spec.name)
    if c.path is not None:
        await client.use_version(c.version, c.path, f"{c.spec.name}-v{c.version}")
    return client


async def answer_all(
    prompts: list[Prompt], players: list[Contestant], cache: OfflineCache,
) -> dict[tuple[str, str], str]:
    """Every contestant's answer to every prompt (from the cache when it has them).

    An answer is cached under the model's whole fingerprint (model, backend,
    server, decoding settings, system prompt, chat template, trained version)
    and the prompt's id and content: a change to any of them asks again.
    """
    answers: dict[tuple[str, str], str] = {}
    todo: list[tuple[Contestant, Prompt, dict[str, Any]]] = []
    for c in players:
        fingerprint = model_fingerprint(c.spec, version=c.version, path=c.path)
        for p in prompts:
            key = answer_key(fingerprint, p.id, p.digest)
            hit = cache.get("answer", key)
            if hit is not None:
                answers[(c.name, p.id)] = hit
            else:
                todo.append((c, p, key))
    clients = {c.name: await _client_for(c) for c in players if any(t[0] is c for t in todo)}

    async def one(c: Contestant, p: Prompt, key: dict[str, Any]) -> None:
        messages = [{"role": m.role, "content": m.content} for m in p.messages]
        try:
            done = await clients[c.name].complete(messages)
        except CallFailed as exc:
            log.warning("eval.no_answer", model=c.name, prompt_id=p.id, error=str(exc))
            return
        finally:
            bar.advance()
        answers[(c.name, p.id)] = done.text
        cache.put("answer", key, done.text)

    with progress_bar(len(todo), "answers", unit="answer") as bar:
        await asyncio.gather(*(one(*t) for t in todo))
    for client in clients.values():
        await client.aclose()
    return answers


async def judge_all(
    prompts: list[Prompt], players: list[Contestant], answers: dict[tuple[str, str], str],
    judge: Judge, cache: OfflineCache, judge_settings: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """All pairs on every prompt, judged with both games; LMArena-format battle rows.

    A verdict is cached under the battle (prompt, both names, both answers, the
    prompt's metadata) and ``judge_settings``, the judge's fingerprint: another
    judge model, template or decoding setting judges again.
    """
    rows: list[dict[str, Any]] = []
    todo: list[tuple[Battle, dict[str, Any]]] = []
    for p in prompts:
        for a, b in itertools.combinations(players, 2):
            if (a.name, p.id) not in answers or (b.name, p.id) not in answers:
                continue
            ans_a, ans_b = answers[(a.name, p.id)], answers[(b.name, p.id)]
            bid = battle_id(p.id, a.name, b.name)
            # A prompt's metadata (a verifier's checks) is part of what was judged.
            key = {"battle_id": bid, "answer_a": ans_a, "answer_b": ans_b,
                   "metadata": p.metadata or {}, "judge": judge.name,
                   "template_version": judge.template_version,
                   "judge_settings": judge_settings or {}}
            hit = cache.get("judgment", key)
            if hit is not None:
                rows.append(hit)
                continue
            todo.append((Battle(id=bid, prompt_id=p.id, mode="round-robin",
                                messages=p.messages, category=p.category, model_a=a.name,
                                model_b=b.name, player_a=a.spec.name, player_b=b.spec.name,
                                answer_a=ans_a, answer_b=ans_b, metadata=p.metadata), key))

    async def one(battle: Battle, key: dict[str, Any]) -> None:
        try:
            verdict = await judge.judge(battle)
        except JudgeFailed as exc:
            log.warning("eval.unjudged", battle_id=battle.id, error=str(exc))
            return
        finally:
            bar.advance()
        row = {"model_a": battle.model_a, "model_b": battle.model_b, "winner": verdict.winner,
               "prompt_id": battle.prompt_id, "battle_id": battle.id,
               "score_a": verdict.score_a, "score_b": verdict.score_b,
               "rule": verdict.rule, "judge_model": verdict.judge_model,
               "template_version": verdict.template_version}
        rows.append(row)
        cache.put("judgment", key, row)

    with progress_bar(len(todo), "battles", unit="battle") as bar:
        await asyncio.gather(*(one(*t) for t in todo))
    return rows


def read_testset(path: str | Path, config: Config, mapping: Any = None,
                 options: Any = None) -> list[Prompt]:
    """The test set's prompts, from any source and format ``publish`` reads."""
    from arena_stream.datasets.prompts import read_prompt_file

    good, bad = read_prompt_file(path, config.limits, mapping, options)
    for line, reason in bad:
        log.warning("eval.bad_line", line=line, reason=reason)
    return [g.prompt for g in good]


CACHE_FILE = "cache.sqlite"


async def evaluate(
    config: Config, prompts: list[Prompt], *, cache_dir: Path | None,
    include_versions: bool = True,
) -> list[dict[str, Any]]:
    """Answers of every contestant, then every pair judged; ``cache_dir`` keeps both.

    The cache is ``<cache_dir>/cache.sqlite``; ``None`` keeps it in memory for
    this run only. JSONL caches an earlier release wrote there are not read.
    """
    players = contestants(config, include_versions=include_versions)
    for p in prompts:
        p.digest = p.digest or digest(p.messages)
    if cache_dir is not None and any((cache_dir / old).is_file()
                                     for old in ("answers.jsonl", "judgments.jsonl")):
        log.info("eval.old_cache_ignored", directory=str(cache_dir),
                 reason="JSONL caches are keyed without the model settings; answers are "
                 f"asked again and kept in {CACHE_FILE}")
    with OfflineCache(cache_dir / CACHE_FILE if cache_dir else None) as cache:
        answers = await answer_all(prompts, players, cache)
        judge = build_judge(config.judge, config.battles)
        settings = {"judge": model_fingerprint(config.judge),
                    "tie_margin": config.battles.tie_margin}
        return await judge_all(prompts, players, answers, judge, cache, settings)


def write_battles(rows: list[dict[str, Any]], path: str | Path) -> None:
    with open(path, "wb") as f:
        for row in sorted(rows, key=lambda r: (r["prompt_id"], r["model_a"], r["model_b"])):
            f.write(msgspec.json.encode(row) + b"\n")
