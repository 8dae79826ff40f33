"""Bounded state: many prompts through one worker, its memory and its tables sampled throughout.

Everything is real but the models: the embedded broker, ``arena-stream worker``
as a child process, and OpenAI-compatible stub servers on loopback that answer
at once (one target, one competitor: one battle per prompt, the cheapest
pipeline there is, so the run measures the stream's own state). Prompts are
published as fast as the worker takes them (at most ``--ahead`` prompts not
yet judged). The worker's ``/metrics`` is scraped every ``--sample-every``
seconds: resident memory (``process_resident_memory_bytes``), keys per table
(``arena_table_keys``), keys expired (``arena_table_expired_keys``) and
judgments done.

"Flat" is measured, not eyeballed: a least-squares line through the RSS samples
taken after ``--warmup`` prompts, in MiB per 10,000 prompts; the tables must stay
within rate x retention window. Retention windows are short here
(``[state] dedup_window_s``, ``done_retention_s``) so that a run of minutes goes
through many windows; in production they are a week and an hour, and memory
then levels off at (prompt rate x window) keys::

    python bench/bench_state.py --prompts 30000

``--minutes`` stops publishing after a time budget (the prompts already
published are still waited for); ``--report-from LOG`` rebuilds the report
from the sample lines a run printed (its standard output), for a run that was
stopped before its end: the report then says how far that run got.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from arena_stream.config import loads  # noqa: E402
from arena_stream.kafka.broker import EmbeddedBroker, free_port  # noqa: E402
from arena_stream.kafka.io import producer, topic_name  # noqa: E402
from arena_stream.streams.worker import prepare  # noqa: E402
from tests.openai_stub import OpenAIStub, Reply, completion  # noqa: E402


def instant(path: str, body: dict[str, Any]) -> Reply:
    if body["model"] == "judge":
        return Reply(body=completion(json.dumps(
            {"explanation": "ok", "score_1": 7, "score_2": 4})))
    return Reply(body=completion("an answer" if body["model"] == "t" else "another answer"))


def config_text(
    bootstrap: str, url: str, port: int, data_dir: str, args: argparse.Namespace
) -> str:
    players = "".join(
        f'[[players]]\nname = "{n}"\n{role}backend = "openai"\nbase_url = "{url}"\n'
        f'model = "{m}"\nconcurrency = 16\nmax_retries = 1\n\n'
        for n, m, role in (("target", "t", 'role = "target"\n'), ("comp", "c", "")))
    return f"""
app_id = "state-bench"
data_dir = "{data_dir}"

[broker]
bootstrap_servers = "{bootstrap}"
flavor = "{args.broker}"
partitions = 2

{players}
[judge]
backend = "openai"
base_url = "{url}"
model = "judge"
concurrency = 16
max_retries = 1

[ratings]
snapshot_every = 0

[battles]
sweep_after_s = {args.done_retention / 2}  # finished prompts are kept twice this long

[training]
enabled = false

[state]
dedup_window_s = {args.dedup_window}
done_retention_s = {args.done_retention}

[web]
enabled = true
port = {port}
page = false
"""


def scrape(port: int) -> dict[str, Any]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, Any] = {"tables": {}, "expired": {}}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "process_resident_memory_bytes":
                out["rss_mib"] = s.value / 2**20
            elif s.name == "arena_table_keys":
                out["tables"][s.labels["table"]] = int(s.value)
            elif s.name == "arena_table_expired_keys_total":
                out["expired"][s.labels["table"]] = int(s.value)
            elif s.name == "arena_events_total" and s.labels.get("name") == "judgments":
                out["judged"] = int(s.value)
    return out


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y on x."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


async def run(args: argparse.Namespace) -> str:
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    given = args.started_broker
    with (contextlib.nullcontext(given) if given else EmbeddedBroker()) as broker, \
            OpenAIStub(instant) as stub, \
            tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        text = config_text(broker.address, stub.base_url, port, tmp, args)
        config = loads(text)
        path = Path(tmp) / "worker.toml"
        path.write_text(text)
        await prepare(config)
        log = (Path(tmp) / "worker.log").open("w")
        worker = subprocess.Popen(
            [sys.executable, "-m", "arena_stream.cli", "--log-level", "warning", "worker",
             "--config", str(path)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            while True:
                with contextlib.suppress(OSError):
                    scrape(port)
                    break
                await asyncio.sleep(0.5)
            published = 0
            topic = topic_name(config, "prompts")
            async with producer(config) as p:
                next_sample = 0.0
                while True:
                    now = time.monotonic()
                    if now >= next_sample:
                        sample = scrape(port)
                        sample.update(published=published, t=now - started)
                        samples.append(sample)
                        next_sample = now + args.sample_every
                        print(json.dumps(sample), flush=True)
                    judged = samples[-1].get("judged", 0)
                    if args.minutes and now - started > args.minutes * 60 \
                            and published < args.prompts:
                        args.prompts = published  # out of time: wait for what is published
                    if published >= args.prompts and judged >= args.prompts:
                        break
                    room = min(args.prompts - published, args.ahead - (published - judged))
                    if room <= 0:
                        await asyncio.sleep(0.2)
                        continue
                    futures = []
                    for i in range(published, published + min(room, 500)):
                        value = json.dumps({"id": f"p{i}", "prompt": f"question {i}"}).encode()
                        futures.append(await p.send(topic, value, key=f"p{i}".encode()))
                    await asyncio.gather(*futures)
                    published += len(futures)
            samples.append({**scrape(port), "published": published,
                            "t": time.monotonic() - started})
        finally:
            worker.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(60)
            if worker.poll() is None:
                worker.kill()
            log.close()
    return render(args, samples)


def samples_from_log(path: Path) -> list[dict[str, Any]]:
    """The sample lines (JSON objects with ``published``) a run printed, in order."""
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                sample = json.loads(line)
                if "published" in sample and "tables" in sample:
                    out.append(sample)
    return out


def render(args: argparse.Namespace, samples: list[dict[str, Any]], note: str = "") -> str:
    after = [s for s in samples if s.get("judged", 0) >= args.warmup and "rss_mib" in s]
    per_10k = slope([(s["judged"] / 10_000, s["rss_mib"]) for s in after])
    per_min = slope([(s["t"] / 60, s["rss_mib"]) for s in after])
    last = samples[-1]
    seconds = last["t"]
    rate = last.get("judged", 0) / seconds if seconds else 0.0
    tables = sorted(last["tables"])
    peak = {t: max(s["tables"].get(t, 0) for s in samples) for t in tables}
    lines = [
        "## Bounded state: one worker, many prompts",
        "",
        f"`{shlex.join(['python', 'bench/bench_state.py', *sys.argv[1:]])}` on "
        f"{platform.node() or 'this machine'} ({os.cpu_count()} cores), "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, broker: "
        f"{'Apache Kafka' if args.broker == 'kafka' else 'the embedded Tansu'}"
        + "".join(f", {k}={os.environ[k]}" for k in ("MALLOC_ARENA_MAX", "PYTHONMALLOC")
                  if k in os.environ) + ".",
        "",
        *([note, ""] if note else []),
        f"- {last.get('judged', 0)} prompts judged in {seconds / 60:.1f} min "
        f"({rate:.1f} prompts/s, one battle each); retention windows: dedup "
        f"{args.dedup_window:g} s, done {args.done_retention:g} s.",
        f"- RSS after {args.warmup} prompts: {after[0]['rss_mib']:.0f} MiB -> "
        f"{after[-1]['rss_mib']:.0f} MiB; least-squares slope **{per_10k:+.2f} MiB per 10,000 "
        f"prompts** ({per_min:+.2f} MiB/min). Flat means under 1 MiB per 10,000 prompts."
        if after else "- not enough samples after warm-up",
        "",
        "| table | keys at the end | most keys seen | keys expired |",
        "|---|---:|---:|---:|",
        *[f"| {t} | {last['tables'][t]} | {peak[t]} | {last['expired'].get(t, 0)} |"
          for t in tables],
        "",
        "| prompts judged | RSS MiB | " + " | ".join(tables) + " |",
        "|---:|---:|" + "---:|" * len(tables),
    ]
    step = max(1, len(samples) // 12)
    for s in samples[::step] + ([samples[-1]] if len(samples) % step != 1 else []):
        lines.append(f"| {s.get('judged', 0)} | {s.get('rss_mib', 0):.0f} | "
                     + " | ".join(str(s['tables'].get(t, 0)) for t in tables) + " |")
    return "\n".join(lines) + "\n"


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt  # so that the worker, the stubs and the broker are stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=30_000)
    parser.add_argument("--warmup", type=int, default=5_000, help="prompts before the slope")
    parser.add_argument("--ahead", type=int, default=2_000,
                        help="prompts published but not yet judged, at most")
    parser.add_argument("--dedup-window", type=float, default=60.0)
    parser.add_argument("--done-retention", type=float, default=30.0)
    parser.add_argument("--sample-every", type=float, default=15.0)
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="stop publishing after this long (0: no limit)")
    parser.add_argument("--report-from", type=Path, metavar="LOG",
                        help="rebuild the report from a run's printed samples, run nothing")
    parser.add_argument("--broker", choices=("tansu", "kafka"), default="tansu",
                        help="the embedded Tansu, or an Apache Kafka node started for the run "
                             "(its jars from Maven, as the tests fetch them)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "state.md")
    args = parser.parse_args(argv)
    if args.report_from:
        samples = samples_from_log(args.report_from)
        if not samples:
            parser.error(f"no samples in {args.report_from}")
        last = samples[-1]
        note = (f"Rebuilt from the samples of a run stopped after {last['published']} of "
                f"{args.prompts} prompts were published ({last.get('judged', 0)} judged, "
                f"{last['t'] / 60:.1f} min).")
        report = render(args, samples, note)
    else:
        signal.signal(signal.SIGTERM, _interrupt)
        args.started_broker = None
        if args.broker == "kafka":  # started outside the event loop: its start-up waits block
            from tests.apache_kafka import ApacheKafka

            args.started_broker = ApacheKafka().start()
        try:
            report = asyncio.run(run(args))
        finally:
            if args.started_broker is not None:
                args.started_broker.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
