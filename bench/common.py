"""Shared pieces of the stream benchmarks: a stub model server, configs, a burst harness.

* ``python bench/common.py stub --port N`` serves an OpenAI-compatible
  ``/v1/chat/completions`` (and ``/v1/load_lora_adapter``) that answers at once,
  from its own process so that it never shares a GIL with the worker. Players
  answer with a fixed text per model; the judge scores the target's answer 3 and
  the other 8 in whichever position it is shown, so every battle is a clear
  target loss and takes the longest path through the topology (ratings, an SFT
  sample and a DPO pair).
* :class:`Harness` starts the embedded broker, the stub and worker processes,
  publishes bursts or paced streams of prompts, and reads the broker's record
  timestamps back to measure throughput and latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_TEXT = "TARGET-ANSWER " + "The answer is short and a little vague. " * 5
COMP_TEXT = "COMP-ANSWER " + "A longer, well organised and accurate answer with an example. " * 6
PROMPT_TEXT = "Explain, with one concrete example, why the sky looks blue at noon. #{i}"


# -- the stub model server (its own process) -------------------------------------------------


def _completion(text: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "model": "stub",
            "choices": [
                {"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": text}}
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": len(text.split()),
                      "total_tokens": 20 + len(text.split())},
        }
    ).encode()


def serve_stub(port: int) -> None:
    """Run the stub until SIGTERM (aiohttp, one event loop, no access log)."""
    from aiohttp import web

    target_first = _completion(json.dumps(
        {"explanation": "the second answer is better", "score_1": 3, "score_2": 8}))
    target_second = _completion(json.dumps(
        {"explanation": "the first answer is better", "score_1": 8, "score_2": 3}))
    # The target is served as "t", and as "target-vN" once a trained version is swapped in.
    target_answer = _completion(TARGET_TEXT)
    other = _completion(COMP_TEXT)

    async def chat(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        model = body.get("model", "")
        if model == "judge":
            text = body["messages"][-1]["content"]
            a1 = text.find("<<<ANSWER 1")
            a2 = text.find("<<<ANSWER 2")
            payload = target_first if text.find("TARGET-ANSWER", a1, a2) >= 0 else target_second
        else:
            payload = target_answer if model == "t" or model.startswith("target") else other
        return web.Response(body=payload, content_type="application/json")

    async def lora(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"{}", content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/load_lora_adapter", lora)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


@contextlib.contextmanager
def stub_server() -> Iterator[tuple[str, int]]:
    """Start the stub in a child process; yields its ``base_url`` and pid."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "stub",
                             "--port", str(port)], start_new_session=True)
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}/v1", proc.pid
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- configs ------------------------------------------------------------------------------------


def config_toml(
    *,
    bootstrap: str,
    url: str,
    tag: str,
    data_dir: str,
    partitions: int = 1,
    flavor: str = "tansu",
    concurrency: int = 8,
    training: str = "[training]\nenabled = false\n",
) -> str:
    """A target-vs-one-competitor config on ``url``; topics and group named after ``tag``."""
    players = "".join(
        f"""
[[players]]
name = "{name}"
role = "{role}"
backend = "openai"
base_url = "{url}"
model = "{model}"
concurrency = {concurrency}
backoff_s = 0.01
"""
        for name, role, model in (("target", "target", "t"), ("comp", "competitor", "c"))
    )
    return f"""app_id = "bench-{tag}"
data_dir = "{data_dir}"

[broker]
bootstrap_servers = "{bootstrap}"
flavor = "{flavor}"
topic_prefix = "b{tag}."
partitions = {partitions}
{players}
[judge]
backend = "openai"
base_url = "{url}"
model = "judge"
concurrency = {concurrency}
backoff_s = 0.01

[routing]
sft_margin = 3.0
dpo_margin = 2.0

{training}"""


def reader_config(config: Any) -> Any:
    """The same config for reading back: the broker is always Tansu, whose end offsets
    undercount batched partitions, whatever flavor the producers were told."""
    import msgspec

    return msgspec.structs.replace(
        config, broker=msgspec.structs.replace(config.broker, flavor="tansu"))


# -- measuring ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in 0..100."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"nproc {os.cpu_count()}, {model}; Python {platform.python_version()}"


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def command_line() -> str:
    import shlex

    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


async def end_offsets(config: Any, keys: list[str]) -> dict[str, int]:
    """Total true end offset per topic (registry key or full name; all partitions)."""
    from arena_stream.kafka.broker import Quirks, true_end_offsets
    from arena_stream.kafka.io import consumer, partitions
    from arena_stream.kafka.topics import Topics

    reader = reader_config(config)
    topics = Topics(reader.broker, reader.app_id)
    names = {}
    for key in keys:
        try:
            names[key] = topics.name(key)
        except KeyError:
            names[key] = key  # a changelog or another full name
    async with consumer(reader) as c:
        tps = []
        for name in names.values():
            with contextlib.suppress(KeyError):  # not created yet: nothing in it
                tps += await partitions(c, name)
        c.assign(tps)
        ends = await true_end_offsets(c, tps, Quirks.for_broker(reader.broker))
    return {key: sum(v for tp, v in ends.items() if tp.topic == name)
            for key, name in names.items()}


@dataclass
class Burst:
    """One measured burst or paced stream: ids published and when."""

    tag: str
    ids: list[str]
    published_s: float = 0.0  # wall time the publisher needed
    extra: dict[str, Any] = field(default_factory=dict)


class Harness:
    """Broker, stub and worker processes for one configuration; bursts and their timings."""

    def __init__(self, config_path: Path, config: Any, worker_cmds: list[list[str]],
                 logdir: Path) -> None:
        self.config_path = config_path
        self.config = config
        self.worker_cmds = worker_cmds
        self.logdir = logdir
        self.procs: list[subprocess.Popen[Any]] = []
        self._logs: list[Any] = []

    # -- processes ------------------------------------------------------------------------

    def start_workers(self, timeout: float = 120.0) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for i, cmd in enumerate(self.worker_cmds):
            log = open(self.logdir / f"worker{i}.log", "wb")  # noqa: SIM115
            self._logs.append(log)
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                               env=env, cwd=str(ROOT), start_new_session=True))
        deadline = time.monotonic() + timeout
        for i, proc in enumerate(self.procs):
            path = self.logdir / f"worker{i}.log"
            while b"worker running" not in path.read_bytes():
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {i} exited: {path.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {i} did not start: {path.read_text()[-2000:]}")
                time.sleep(0.2)

    def stop_workers(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()
        self.procs, self._logs = [], []

    # -- publishing -----------------------------------------------------------------------

    async def publish(self, n: int, *, rate: float | None = None, tag: str | None = None) -> Burst:
        """Publish ``n`` prompts: all at once (``rate`` None) or paced at ``rate`` per second."""
        from arena_stream.kafka.io import producer, topic_name

        tag = tag or uuid.uuid4().hex[:6]
        ids = [f"{tag}-{i:05d}" for i in range(n)]
        name = topic_name(self.config, "prompts")
        values = [json.dumps({"id": pid, "prompt": PROMPT_TEXT.format(i=i)}).encode()
                  for i, pid in enumerate(ids)]
        started = time.perf_counter()
        async with producer(self.config) as p:
            futures = []
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for i, (pid, value) in enumerate(zip(ids, values, strict=True)):
                if rate:
                    delay = t0 + i / rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                futures.append(await p.send(name, value, key=pid.encode()))
            await asyncio.gather(*futures)
        return Burst(tag, ids, time.perf_counter() - started)

    async def wait_ratings(self, target: int, timeout: float) -> int:
        """Wait until the ratings topic holds ``target`` records; returns the count reached."""
        deadline = time.monotonic() + timeout
        have = 0
        while time.monotonic() < deadline:
            have = (await end_offsets(self.config, ["ratings"]))["ratings"]
            if have >= target:
                return have
            await asyncio.sleep(0.25)
        return have

    async def warm_up(self, n: int = 16, timeout: float = 120.0) -> None:
        """Prompts on every partition until their ratings arrive: partitions assigned,
        connections open. Then a pause so that no rebalance is still settling."""
        before = (await end_offsets(self.config, ["ratings"]))["ratings"]
        await self.publish(n, tag="warm" + uuid.uuid4().hex[:4])
        got = await self.wait_ratings(before + 2 * n, timeout)
        if got < before + 2 * n:
            raise RuntimeError(f"warm-up: {got - before} of {2 * n} rating updates")
        await asyncio.sleep(2.0)

    # -- reading back ---------------------------------------------------------------------

    async def timings(self, burst: Burst, *, floor: bool = False) -> dict[str, Any]:
        """Per prompt: publication ts, last rating-update ts (ms since epoch, record times).

        The stream's rating updates name their battle (mapped to the prompt through the
        judgments); the floor's are keyed by the prompt id.
        """
        from arena_stream.kafka.io import read_all
        from arena_stream.schemas import Judgment, RatingUpdate, decode

        reader = reader_config(self.config)
        wanted = set(burst.ids)
        published = {r.key.decode(): r.timestamp for r in await read_all(reader, "prompts")
                     if r.key and r.key.decode() in wanted}
        stages: dict[str, dict[str, int]] = {}
        for key in ("accepted", "generations", "battles", "judgments"):
            seen: dict[str, int] = {}
            for r in await read_all(reader, key):
                pid = r.key.decode() if r.key else ""
                if pid in wanted:
                    seen[pid] = max(seen.get(pid, 0), r.timestamp)
            stages[key] = seen
        if floor:
            rated_by_key: dict[str, int] = {}
            for r in await read_all(reader, "ratings"):
                pid = r.key.decode()
                if pid in wanted:
                    rated_by_key[pid] = max(rated_by_key.get(pid, 0), r.timestamp)
            return {"published": published, "rated": rated_by_key, "stages": stages}
        battle_prompt: dict[str, str] = {}
        for r in await read_all(reader, "judgments"):
            j = decode(r.value, Judgment)
            if j.prompt_id in wanted:
                battle_prompt[j.battle_id] = j.prompt_id
        rated: dict[str, int] = {}
        for r in await read_all(reader, "ratings"):
            u = decode(r.value, RatingUpdate)
            pid = battle_prompt.get(u.battle_id)
            if pid is not None:
                rated[pid] = max(rated.get(pid, 0), r.timestamp)
        return {"published": published, "rated": rated, "stages": stages}


def throughput(t: dict[str, Any], n: int) -> dict[str, float]:
    """Battles/s of a burst: overall (first publication to last rating update) and steady
    (between the 10th and the 90th percentile of completions, leaving out ramp and tail)."""
    pub = list(t["published"].values())
    done = sorted(t["rated"].values())
    if len(done) < n or not pub:
        return {"complete": len(done), "overall": float("nan"), "steady": float("nan")}
    span = (done[-1] - min(pub)) / 1000.0
    lo, hi = done[int(0.1 * n)], done[int(0.9 * n) - 1]
    steady = (int(0.9 * n) - int(0.1 * n)) / max((hi - lo) / 1000.0, 1e-3)
    return {"complete": len(done), "overall": n / span, "steady": steady, "span_s": span}


def latencies_ms(t: dict[str, Any]) -> list[float]:
    return [float(t["rated"][pid] - ts) for pid, ts in t["published"].items()
            if pid in t["rated"]]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


HOPS = [("intake", "published", "accepted"), ("generate", "accepted", "generations"),
        ("collect", "generations", "battles"), ("judge", "battles", "judgments"),
        ("rate", "judgments", "rated")]


def hop_medians(t: dict[str, Any]) -> dict[str, float]:
    """Median ms each hop took (from the record timestamps of its input and output)."""
    at = {"published": t["published"], "rated": t["rated"], **t["stages"]}
    out = {}
    for hop, a, b in HOPS:
        xs = [float(at[b][pid] - at[a][pid]) for pid in at[a] if pid in at[b]]
        out[hop] = median(xs)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    stub = sub.add_parser("stub", help="serve the instant OpenAI-compatible stub")
    stub.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.cmd == "stub":
        serve_stub(args.port)


if __name__ == "__main__":
    main()
