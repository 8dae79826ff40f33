"""Soak run: one ``arena-stream worker`` at a steady prompt rate, with model servers that fail.

Everything is real except the models: the embedded broker, the worker as a
child process (``python -m arena_stream.cli worker --config FILE``) and
OpenAI-compatible HTTP servers on loopback (:mod:`tests.openai_stub`) that
answer after a small delay and inject faults at the given rates: HTTP 5xx,
replies that hang after the headers (longer than the client's timeout), and
judge replies without a readable verdict. Prompts are published at a steady
rate; when the last one is in, the run waits for the pipeline to drain, stops
the worker with SIGTERM and runs the audit.

Latencies come from the records' own broker timestamps (producer create time):
publish → generation → battle → judgment → rating update. Worker RSS is
sampled from /proc. The report is a Markdown table with the exact command,
machine and date::

    python bench/soak.py --rate 2 --duration 180
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import platform
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import msgspec  # noqa: E402

from arena_stream.config import loads  # noqa: E402
from arena_stream.kafka.broker import EmbeddedBroker  # noqa: E402
from arena_stream.kafka.io import producer, read_all, topic_name  # noqa: E402
from arena_stream.ratings.audit import audit  # noqa: E402
from arena_stream.schemas import Battle, DeadLetter, Generation, Judgment, RatingUpdate, decode  # noqa: E402
from arena_stream.streams.worker import prepare  # noqa: E402
from bench.common import end_offsets  # noqa: E402
from tests.openai_stub import OpenAIStub, Reply, completion  # noqa: E402

WARMUP = "warmup"
ANSWERS = {
    "t": "A short answer.",
    "c": "A longer answer that explains the idea, gives an example and checks the result.",
    "d": "A medium answer with one example.",
}


class FaultyModels:
    """The stub's handler: players and judge with a delay and injected faults, counted."""

    def __init__(self, args: argparse.Namespace, hang_s: float) -> None:
        self.args = args
        self.hang_s = hang_s
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.injected: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def _draw(self) -> float:
        with self.lock:
            return self.rng.random()

    def _count(self, key: str, fault: str | None) -> None:
        with self.lock:
            self.calls[key] += 1
            if fault:
                self.injected[fault] += 1

    def __call__(self, path: str, body: dict[str, Any]) -> Reply:
        a = self.args
        model = body.get("model", "")
        delay = a.delay * (0.5 + self._draw())
        roll = self._draw()
        fault: str | None = None
        if roll < a.p_5xx:
            fault, reply = "5xx", Reply(status=503, body="overloaded", delay_s=delay)
        elif roll < a.p_5xx + a.p_hang:
            fault = "hang"
            reply = Reply(body=completion("late"), hang_after_headers_s=self.hang_s)
        elif model == "judge" and roll < a.p_5xx + a.p_hang + a.p_bad_judge:
            fault = "bad_judge"
            reply = Reply(body=completion("Both answers have merit."), delay_s=delay)
        elif model == "judge":
            text = body["messages"][-1]["content"]
            first = text.split(">>>\n", 1)[1].split("\n<<<", 1)[0]
            second = text.split("<<<ANSWER 2", 1)[1].split(">>>\n", 1)[1].split("\n<<<", 1)[0]
            verdict = {
                "explanation": "the more complete answer is better",
                "score_1": min(10, 1 + len(first) // 10),
                "score_2": min(10, 1 + len(second) // 10),
            }
            reply = Reply(body=completion(json.dumps(verdict)), delay_s=delay)
        else:
            reply = Reply(body=completion(ANSWERS.get(model, "x")), delay_s=delay)
        self._count("judge" if model == "judge" else "player", fault)
        return reply


def config_text(bootstrap: str, url: str, args: argparse.Namespace, data_dir: str) -> str:
    players = "".join(
        f"""
[[players]]
name = "{name}"
role = "{role}"
backend = "openai"
base_url = "{url}"
model = "{model}"
timeout_s = {args.timeout}
max_retries = 3
backoff_s = 0.05
backoff_max_s = 1.0
concurrency = {args.concurrency}
"""
        for name, role, model in (("target", "target", "t"), ("comp", "competitor", "c"),
                                  ("mid", "competitor", "d"))
    )
    return f"""
app_id = "soak-{int(time.time())}"
data_dir = "{data_dir}"

[broker]
bootstrap_servers = "{bootstrap}"
flavor = "tansu"
topic_prefix = "soak."
partitions = 4
{players}
[judge]
backend = "openai"
base_url = "{url}"
model = "judge"
timeout_s = {args.timeout}
max_retries = 2
backoff_s = 0.05
backoff_max_s = 1.0
concurrency = {args.judge_concurrency or args.concurrency}

[training]
enabled = false
"""


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def publish(config: Any, rate: float, duration: float) -> int:
    total = int(rate * duration)
    start = time.monotonic()
    name = topic_name(config, "prompts")
    async with producer(config) as p:
        for i in range(total):
            wait = start + i / rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            pid = f"s{i:05d}"
            value = json.dumps({"id": pid, "prompt": f"Soak question {i}: explain topic {i % 97}."})
            await p.send_and_wait(name, value.encode(), key=pid.encode())
    return total


async def drained(config: Any, prompts: int, battles_per_prompt: int) -> bool:
    """Every prompt has its battles, every battle a judgment or a judge dead letter, rated.

    Counted from offsets, not by reading: reading whole topics from the embedded
    broker gets slower the more it holds (a 30-minute soak at 4 prompts/s spent
    more than ten minutes in this check when it read them). Redelivered
    duplicates can make it answer early; the audit at the end is the real check.
    """
    dead = [decode(r.value, DeadLetter) for r in await read_all(config, "deadletter")]
    gen_dead = {d.ref for d in dead if d.stage == "generate"}
    judge_dead = {d.ref for d in dead if d.stage == "judge"}
    records = await end_offsets(config, ["battles", "judgments", "ratings"])
    battles, judgments = records["battles"], records["judgments"]
    if battles < (prompts - len(gen_dead)) * battles_per_prompt:
        return False
    if judgments < battles - len(judge_dead):
        return False
    return records["ratings"] >= 2 * judgments


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} logical CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu}"


async def run(args: argparse.Namespace) -> str:
    hang_s = args.timeout + 1.0
    models = FaultyModels(args, hang_s)
    tmp = Path(tempfile.mkdtemp(prefix="arena-soak-"))
    load_before = os.getloadavg()[0]
    with EmbeddedBroker() as broker, OpenAIStub(models) as stub:
        config = loads(config_text(broker.address, stub.base_url, args, str(tmp / "data")))
        cfg_file = tmp / "soak.toml"
        cfg_file.write_bytes(msgspec.toml.encode(config))
        await prepare(config)
        log_file = tmp / "worker.log"
        with log_file.open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "arena_stream.cli", "--log-level", "info", "worker",
                 "--config", str(cfg_file)],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        # One warm-up prompt through the whole pipeline, so the group join and table
        # recovery are not counted as latency; it is left out of every figure below.
        async with producer(config) as p:
            warm = json.dumps({"id": WARMUP, "prompt": "warm-up question"}).encode()
            await p.send_and_wait(topic_name(config, "prompts"), warm, key=WARMUP.encode())
        deadline = time.monotonic() + 120
        while len(await read_all(config, "ratings")) < 2:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit(f"the worker did not warm up; see {log_file}")
            await asyncio.sleep(0.5)
        rss: list[tuple[float, float]] = []
        t0 = time.monotonic()
        stop_sampling = asyncio.Event()

        rss_csv = args.out.with_suffix(".rss.csv")
        rss_csv.write_text("t_s,rss_mib\n")

        async def sample() -> None:
            # Written as taken: on a long soak the samples survive a slow or failed report.
            while not stop_sampling.is_set():
                value = rss_mb(worker.pid)
                if value is not None:
                    rss.append((time.monotonic() - t0, value))
                    with rss_csv.open("a") as f:
                        f.write(f"{rss[-1][0]:.1f},{value:.1f}\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_sampling.wait(), args.sample_every)

        sampler = asyncio.create_task(sample())
        try:
            print(f"publishing {args.rate}/s for {args.duration}s ...", file=sys.stderr)
            published = await publish(config, args.rate, args.duration)
            publish_end = time.monotonic()
            print("published; waiting for the pipeline to drain ...", file=sys.stderr)
            deadline = time.monotonic() + args.drain_timeout
            while not await drained(config, published + 1, 2):
                if time.monotonic() > deadline:
                    print("drain timed out", file=sys.stderr)
                    break
                await asyncio.sleep(1.0)
            drain_s = time.monotonic() - publish_end
        finally:
            stop_sampling.set()
            await sampler
            worker.send_signal(signal.SIGTERM)
            try:
                rc = worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                rc = worker.wait()
        report = await audit(config)
        records = {k: await read_all(config, k)
                   for k in ("prompts", "generations", "battles", "judgments", "ratings",
                             "deadletter")}
    log_text = log_file.read_text(errors="replace")
    return render(args, published, drain_s, rc, report, records, rss, models, log_text,
                  load_before)


def render(args: argparse.Namespace, published: int, drain_s: float, rc: int, report: Any,
           records: dict[str, list[Any]], rss: list[tuple[float, float]], models: FaultyModels,
           log_text: str, load_before: float) -> str:
    records = {k: [r for r in v if r.key != WARMUP.encode()] for k, v in records.items()}
    ts = {k: [r.timestamp / 1000 for r in v] for k, v in records.items()}
    prompt_ts = {r.key.decode(): r.timestamp / 1000 for r in records["prompts"]}
    gens = [(decode(r.value, Generation), r.timestamp / 1000) for r in records["generations"]]
    battles = [(decode(r.value, Battle), r.timestamp / 1000) for r in records["battles"]]
    judgments = [(decode(r.value, Judgment), r.timestamp / 1000) for r in records["judgments"]]
    updates = [(decode(r.value, RatingUpdate), r.timestamp / 1000) for r in records["ratings"]]
    dead = [decode(r.value, DeadLetter) for r in records["deadletter"]]

    first_gen: dict[str, float] = {}
    last_gen: dict[str, float] = {}
    gen_lat = []
    for g, t in gens:
        if g.id in first_gen:
            continue  # a re-generation after a redelivery
        first_gen[g.id] = t
        gen_lat.append(t - prompt_ts[g.prompt_id])
        last_gen[g.prompt_id] = max(last_gen.get(g.prompt_id, 0.0), t)
    battle_at: dict[str, float] = {}
    battle_lat = []
    for b, t in battles:
        if b.id not in battle_at:
            battle_at[b.id] = t
            battle_lat.append(t - last_gen[b.prompt_id])
    judged_at: dict[str, float] = {}
    judge_lat = []
    for j, t in judgments:
        if j.battle_id not in judged_at:
            judged_at[j.battle_id] = t
            judge_lat.append(t - battle_at[j.battle_id])
    prompt_of = {j.battle_id: j.prompt_id for j, _ in judgments}
    rated_at: dict[str, float] = {}
    rate_lat, e2e = [], []
    for u, t in updates:
        if u.battle_id in judged_at and u.battle_id not in rated_at:
            rated_at[u.battle_id] = t
            rate_lat.append(t - judged_at[u.battle_id])
            e2e.append(t - prompt_ts[prompt_of[u.battle_id]])

    span = (max(ts["ratings"]) - min(ts["prompts"])) if ts["ratings"] else float("nan")
    retries_logged = log_text.count("model.retry")
    total_calls = sum(models.calls.values())
    dead_by = collections.Counter(f"{d.stage}/{d.reason}" for d in dead)
    rss_values = [v for _, v in rss]
    rss_marks = [rss[i] for i in sorted({0, len(rss) // 4, len(rss) // 2, 3 * len(rss) // 4,
                                         len(rss) - 1})] if rss else []
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python bench/soak.py " + shlex.join(sys.argv[1:])

    def row(stage: str, values: list[float]) -> str:
        top = max(values, default=float("nan"))
        return (f"| {stage} | {len(values)} | {1000 * pct(values, 0.5):.0f} | "
                f"{1000 * pct(values, 0.99):.0f} | {1000 * top:.0f} |")

    lines = [
        "# Soak: one worker, steady prompt rate, faulty model servers",
        "",
        f"- command: `{command}`",
        f"- date: {now}",
        f"- machine: {machine()}; Python {platform.python_version()}",
        f"- 1-minute load average: {load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
        f"- setup: embedded Tansu broker, 4 partitions; 3 players (target vs 2 competitors, so "
        f"2 battles per prompt), player concurrency {args.concurrency}, judge concurrency "
        f"{args.judge_concurrency or args.concurrency}, timeout {args.timeout}s, "
        f"max_retries 3 (judge 2); stub delay {args.delay * 500:.0f}-{args.delay * 1500:.0f} ms; "
        f"faults per call: {args.p_5xx:.0%} HTTP 503, {args.p_hang:.0%} hang after headers "
        f"({args.timeout + 1:.0f} s), judge only: {args.p_bad_judge:.0%} reply without a verdict",
        "",
        "## Throughput",
        "",
        "| prompts published | rate | battles formed | judgments (distinct) | "
        "rating updates | first publish → last rating | judgments/s | drain after last publish |",
        "|---|---|---|---|---|---|---|---|",
        f"| {published} | {args.rate}/s | {len(battle_at)} | {len(judgments)} ({len(judged_at)}) "
        f"| {sum(u.battle_id in judged_at for u, _ in updates)} | {span:.1f} s "
        f"| {len(judged_at) / span:.2f} | {drain_s:.1f} s |",
        "",
        "## Latency per stage (from record timestamps)",
        "",
        "| stage | n | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
        row("publish → generation", gen_lat),
        row("last generation → battle", battle_lat),
        row("battle → judgment (2 games)", judge_lat),
        row("judgment → rating update", rate_lat),
        row("publish → rating update (end to end)", e2e),
        "",
        "## Faults, retries, dead letters",
        "",
        "| model calls (incl. warm-up) | injected 503 | injected hangs | injected bad verdicts | "
        "retries logged (players + judge HTTP) | extra calls (all retries) | dead letters |",
        "|---|---|---|---|---|---|---|",
        f"| {total_calls} | {models.injected['5xx']} | {models.injected['hang']} | "
        f"{models.injected['bad_judge']} | {retries_logged} | "
        f"{total_calls - (3 * (published + 1) + 2 * (len(battle_at) + 2))} | "
        f"{len(dead)} {dict(dead_by) if dead else ''} |",
        "",
        "## Worker memory (RSS)",
        "",
        "| t (s) | " + " | ".join(f"{t:.0f}" for t, _ in rss_marks) + " |",
        "|---|" + "---|" * len(rss_marks),
        "| RSS MiB | " + " | ".join(f"{v:.0f}" for _, v in rss_marks) + " |",
        "",
        f"{len(rss)} samples every {args.sample_every:.0f} s: min {min(rss_values):.0f} MiB, "
        f"max {max(rss_values):.0f} MiB, median {statistics.median(rss_values):.0f} MiB; "
        f"from t = {rss[len(rss) // 4][0]:.0f} s to the end: "
        f"{rss[-1][1] - rss[len(rss) // 4][1]:+.0f} MiB."
        if rss_values else "no RSS samples",
        "",
        "## Audit",
        "",
        f"- worker exit status after SIGTERM: {rc}",
        f"- audit: **{'OK' if report.ok else 'FAILED'}**, {report.judgments} judgments in the "
        f"log ({report.duplicates} duplicates ignored)",
        *(f"  - {d}" for d in report.differences),
        "",
        "```",
        report.render(),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2.0, help="prompts per second")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of publishing")
    parser.add_argument("--delay", type=float, default=0.05, help="mean stub answer delay (s)")
    parser.add_argument("--p-5xx", type=float, default=0.02)
    parser.add_argument("--p-hang", type=float, default=0.01)
    parser.add_argument("--p-bad-judge", type=float, default=0.01)
    parser.add_argument("--timeout", type=float, default=2.0, help="model client timeout (s)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--judge-concurrency", type=int, default=None,
                        help="judge calls in flight (default: --concurrency)")
    parser.add_argument("--sample-every", type=float, default=5.0, help="RSS sampling (s)")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak.md")
    args = parser.parse_args(argv)
    text = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
