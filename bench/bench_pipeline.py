"""Benchmark: the battle stream's own overhead, with models that answer instantly.

Players and judge are the stub in ``bench/common.py`` (aiohttp, its own process);
the broker is the embedded Tansu; the stream runs as real ``arena-stream worker
--config FILE`` subprocesses (the full topology: intake, one generator per
player, collect, judge, rate, route, trigger, models watcher). Mode
target-vs-competitors with one competitor: one battle per prompt, two judge games.

For each worker count (``--workers``) and broker flavor (``--flavor``):

1. a warm-up (prompts on every partition until their ratings arrive);
2. ``--runs`` bursts of ``--n`` prompts published at once; a burst is done when
   every battle's two rating updates exist. Throughput comes from the brokers'
   record timestamps: overall = n / (last rating update - first publication),
   steady = the middle 80% of completions over the time they took;
3. with one worker, a paced stream at half the median steady rate for
   ``--latency-seconds``; latency = the battle's last rating update's timestamp
   minus its prompt's timestamp on the prompts topic (p50 / p99);
4. ``--floor``: the same bursts through ``bench/floor.py`` (aiokafka + httpx,
   same hops and HTTP calls, no logic), for the ratio in the same run;
5. ``--profile``: one more burst (not counted) under ``py-spy record``; the top
   functions by own and inclusive samples.

CPU seconds of each process over the bursts are read from /proc.

    python bench/bench_pipeline.py --n 2000 --runs 3 --floor --profile
    python bench/bench_pipeline.py --workers 1 2 4 --runs 1 --no-latency
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    Harness,
    command_line,
    config_toml,
    cpu_seconds,
    end_offsets,
    hop_medians,
    latencies_ms,
    load_average,
    machine,
    median,
    now_utc,
    percentile,
    stub_server,
    throughput,
)

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="prompts per burst")
    p.add_argument("--runs", type=int, default=3, help="measured bursts per configuration")
    p.add_argument("--workers", type=int, nargs="+", default=[1])
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--flavor", nargs="+", default=["tansu"], choices=["tansu", "kafka"],
                   help="producer settings: tansu = one record per batch (the embedded "
                        "broker's quirk), kafka = normal batching")
    p.add_argument("--floor", action="store_true", help="also measure bench/floor.py")
    p.add_argument("--profile", action="store_true", help="py-spy one extra burst (1 worker)")
    p.add_argument("--profile-raw", type=Path, default=None,
                   help="keep py-spy's collapsed stacks here")
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--latency-seconds", type=float, default=20.0)
    p.add_argument("--log-level", default="info", help="the workers' --log-level")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per burst at most")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown here too")
    return p.parse_args()


def collapsed_top(path: Path, k: int = 15) -> tuple[list[tuple[str, int]], list[tuple[str, int]],
                                                    list[tuple[str, int]], int]:
    """From py-spy's raw (collapsed) stacks: own and inclusive samples per function, and own
    samples per library area."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [_function(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] += count
        areas[_area(stack.split(";")[-1])] += count
        for f in set(frames):
            incl[f] += count
    return own.most_common(k), incl.most_common(k), areas.most_common(), total


def _function(frame: str) -> str:
    # "send (aiokafka/producer/producer.py:123)" -> "send (aiokafka/producer/producer.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", str(ROOT) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


AREAS = [("aiokafka", "aiokafka"), ("kafka/", "aiokafka"), ("faust", "faust"),
         ("mode/", "faust"), ("httpx", "httpx/httpcore"), ("httpcore", "httpx/httpcore"),
         ("h11", "httpx/httpcore"), ("anyio", "httpx/httpcore"), ("structlog", "logging"),
         ("logging", "logging"), ("msgspec", "msgspec"), ("json", "json"),
         ("asyncio", "asyncio"), ("selectors", "asyncio"), ("socket", "asyncio"),
         ("arena_stream", "arena-stream"), ("streams/", "arena-stream"),
         ("schemas/", "arena-stream"), ("croniter", "faust"), ("venusian", "faust")]


def _area(frame: str) -> str:
    for needle, area in AREAS:
        if needle in frame:
            return area
    return "other"


async def run_config(args: argparse.Namespace, *, bootstrap: str, url: str, pids: dict[str, int],
                     flavor: str, workers: int, floor: bool, tmp: Path) -> dict[str, Any]:
    from arena_stream.config import loads
    from arena_stream.kafka.topics import Topics
    from arena_stream.streams.worker import prepare

    tag = uuid.uuid4().hex[:8]
    text = config_toml(bootstrap=bootstrap, url=url, tag=tag, data_dir=str(tmp / tag),
                       partitions=args.partitions, flavor=flavor)
    path = tmp / f"{tag}.toml"
    path.write_text(text)
    config = loads(text)
    await prepare(config)
    if floor:
        cmds = [[sys.executable, str(ROOT / "bench" / "floor.py"), "--config", str(path)]]
    else:
        exe = str(Path(sys.executable).with_name("arena-stream"))
        cmds = [[exe, "--log-level", args.log_level, "worker", "--config", str(path)]
                for _ in range(workers)]
    label = f"{'floor' if floor else 'stream'} {flavor} x{workers}"
    print(f"== {label}", file=sys.stderr, flush=True)
    h = Harness(path, config, cmds, tmp / f"logs-{tag}")
    result: dict[str, Any] = {"label": label, "flavor": flavor, "workers": workers,
                              "floor": floor, "runs": []}
    try:
        h.start_workers()
        await h.warm_up()
        procs = {**pids, **{f"worker{i}": p.pid for i, p in enumerate(h.procs)}}
        for run in range(args.runs):
            before = (await end_offsets(config, ["ratings"]))["ratings"]
            cpu0 = {k: _cpu(pid) for k, pid in procs.items()}
            started = time.perf_counter()
            burst = await h.publish(args.n)
            got = await h.wait_ratings(before + 2 * args.n, args.timeout)
            wall = time.perf_counter() - started
            cpu = {k: _cpu(pid) - cpu0[k] for k, pid in procs.items()}
            t = await h.timings(burst, floor=floor)
            tp = throughput(t, args.n)
            tp.update(wall_s=wall, publish_s=burst.published_s, ratings=got - before,
                      cpu={k: v / wall for k, v in cpu.items()})
            result["runs"].append(tp)
            print(f"   run {run}: {tp}", file=sys.stderr, flush=True)
        if args.profile and not floor and workers == 1:
            result["profile"] = await profile_burst(args, h, tmp / f"profile-{tag}.txt")
        if not args.no_latency and workers == 1:
            rate = 0.5 * median([r["steady"] for r in result["runs"]])
            n = max(1, int(rate * args.latency_seconds))
            before = (await end_offsets(config, ["ratings"]))["ratings"]
            burst = await h.publish(n, rate=rate)
            await h.wait_ratings(before + 2 * n, args.timeout)
            t = await h.timings(burst, floor=floor)
            lat = latencies_ms(t)
            result["latency"] = {"rate": rate, "n": n, "done": len(lat),
                                 "p50": percentile(lat, 50), "p90": percentile(lat, 90),
                                 "p99": percentile(lat, 99), "max": max(lat, default=0.0),
                                 "hops": hop_medians(t)}
            print(f"   latency: {result['latency']}", file=sys.stderr, flush=True)
        if not floor:
            everything = list(Topics(config.broker, config.app_id).all())
            ends = await end_offsets(config, [e for e in everything if "assignor" not in e])
            battles = ends[next(k for k in ends if k.endswith(".judgments"))]
            result["records_per_battle"] = sum(ends.values()) / max(battles, 1)
            result["records_by_topic"] = {k: v / max(battles, 1) for k, v in ends.items() if v}
    finally:
        h.stop_workers()
    return result


def _cpu(pid: int) -> float:
    return cpu_seconds(pid) if pid > 0 else time.process_time()


async def profile_burst(args: argparse.Namespace, h: Harness, out: Path) -> dict[str, Any]:
    """One more burst with py-spy sampling the worker; stopped when the burst is done."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    before = (await end_offsets(h.config, ["ratings"]))["ratings"]
    proc = subprocess.Popen([spy, "record", "--pid", str(h.procs[0].pid), "--rate", "250",
                             "--format", "raw", "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    await asyncio.sleep(1.0)
    burst = await h.publish(args.n)
    await h.wait_ratings(before + 2 * args.n, args.timeout)
    t = await h.timings(burst)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if not out.is_file():
        return {"error": err.decode(errors="replace")[-500:]}
    own, incl, areas, total = collapsed_top(out)
    if args.profile_raw:
        shutil.copy(out, args.profile_raw)
    return {"own": own, "incl": incl, "areas": areas, "total": total,
            "throughput": throughput(t, args.n)}


def report(args: argparse.Namespace, results: list[dict[str, Any]], load: tuple[str, str]) -> str:
    lines = [
        "- command: `" + command_line() + "`",
        f"- machine: {machine()}",
        f"- date: {now_utc()}; 1/5/15-minute load average before: {load[0]}, after: {load[1]}",
        f"- burst: {args.n} prompts published at once, {args.runs} measured bursts per row "
        f"after a warm-up; {args.partitions} partitions per prompt topic; worker log level "
        f"{args.log_level}",
        "",
        "| configuration | overall battles/s (median) | steady battles/s (median) | runs "
        "(steady) | burst wall s | CPU use during bursts (cores) |",
        "|---|---:|---:|---|---:|---|",
    ]
    for r in results:
        runs = r["runs"]
        cpu_keys = runs[0]["cpu"].keys() if runs else []
        cpu = ", ".join(f"{k} {median([x['cpu'][k] for x in runs]):.2f}" for k in cpu_keys)
        steady = ", ".join(f"{x['steady']:.1f}" for x in runs)
        lines.append(
            f"| {r['label']} | {median([x['overall'] for x in runs]):.1f} | "
            f"{median([x['steady'] for x in runs]):.1f} | "
            f"{steady} | "
            f"{median([x['wall_s'] for x in runs]):.1f} | {cpu} |"
        )
    lat = [r for r in results if "latency" in r]
    if lat:
        lines += ["", "| configuration | paced rate (battles/s) | battles | p50 ms | p90 ms | "
                  "p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|---:|"]
        for r in lat:
            x = r["latency"]
            lines.append(f"| {r['label']} | {x['rate']:.1f} | {x['done']}/{x['n']} | "
                         f"{x['p50']:.0f} | {x['p90']:.0f} | {x['p99']:.0f} | {x['max']:.0f} |")
        lines += ["", "Median milliseconds per hop at that rate (record timestamps of input and "
                  "output): " + "; ".join(
                      f"{r['label']}: " + ", ".join(f"{k} {v:.0f}" for k, v in
                                                    r["latency"]["hops"].items())
                      for r in lat)]
    streams = {(r["flavor"], r["workers"]): r for r in results if not r["floor"]}
    floors = [r for r in results if r["floor"]]
    if floors:
        lines += ["", "| flavor | stream steady battles/s | floor steady battles/s | "
                  "stream / floor |", "|---|---:|---:|---:|"]
        for f in floors:
            s = streams.get((f["flavor"], 1))
            if s:
                a = median([x["steady"] for x in s["runs"]])
                b = median([x["steady"] for x in f["runs"]])
                lines.append(f"| {f['flavor']} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
    for r in results:
        if "records_per_battle" in r:
            by = ", ".join(f"{k.split('.', 1)[-1]} {v:.2f}"
                           for k, v in sorted(r["records_by_topic"].items()))
            lines += ["", f"Records written per battle ({r['label']}): "
                      f"{r['records_per_battle']:.1f} ({by}); the floor writes 8."]
            break
    for r in results:
        prof = r.get("profile")
        if not prof:
            continue
        if "error" in prof:
            lines += ["", f"py-spy failed: {prof['error']}"]
            continue
        total = max(prof["total"], 1)
        lines += ["", f"Profile of one worker over one extra burst ({r['label']}, py-spy "
                  f"--nonblocking, 250 Hz, {prof['total']} samples of active threads; that "
                  f"burst ran at {prof['throughput'].get('steady', 0):.1f} battles/s steady):",
                  "", "| area (own samples) | share |", "|---|---:|"]
        lines += [f"| {a} | {100 * c / total:.1f}% |" for a, c in prof["areas"]]
        lines += ["", "| function (own samples) | share |", "|---|---:|"]
        lines += [f"| `{f}` | {100 * c / total:.1f}% |" for f, c in prof["own"]]
        lines += ["", "| function (inclusive) | share |", "|---|---:|"]
        lines += [f"| `{f}` | {100 * c / total:.1f}% |" for f, c in prof["incl"]]
    return "\n".join(lines) + "\n"


async def amain(args: argparse.Namespace) -> str:
    from arena_stream.kafka.broker import EmbeddedBroker

    load0 = load_average()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmpdir:
        tmp = Path(tmpdir)
        with EmbeddedBroker() as broker, stub_server() as (url, stub_pid):
            assert broker.process is not None
            pids = {"broker": broker.process.pid, "stub": stub_pid, "bench": 0}
            for flavor in args.flavor:
                # The floor first: the broker keeps every record in memory, and what the
                # stream leaves there must not slow the floor down.
                if args.floor:
                    results.append(await run_config(args, bootstrap=broker.address, url=url,
                                                    pids=pids, flavor=flavor, workers=1,
                                                    floor=True, tmp=tmp))
                for workers in args.workers:
                    results.append(await run_config(args, bootstrap=broker.address, url=url,
                                                    pids=pids, flavor=flavor, workers=workers,
                                                    floor=False, tmp=tmp))
    return report(args, results, (load0, load_average()))


def main() -> None:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args()
    text = asyncio.run(amain(args))
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
