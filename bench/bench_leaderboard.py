"""Benchmark: our Bradley-Terry leaderboard against LMArena's arena-rank and FastChat.

Generates seeded synthetic battles with known ratings, then times, in one
process so that ratios are comparable:

* ours: point fit, sandwich intervals, 100-round bootstrap;
* arena-rank (``pip install arena-rank``): point fit, sandwich, bootstrap;
* FastChat's current ``compute_bt`` / ``compute_bootstrap_bt``
  (``fastchat/serve/monitor/rating_systems.py`` under ``--fastchat-path``);
* FastChat's older ``compute_elo_mle_with_tie`` + ``get_bootstrap_result``
  (sklearn, the successor of the notebook's ``compute_mle_elo``) from an
  ``elo_analysis.py`` given with ``--fastchat-legacy``; it resamples a pandas
  frame per round, so only ``--legacy-rounds`` rounds are timed and the
  100-round figure is extrapolated (and marked so).

No FastChat code lives in this repository: point the options at a checkout
(only ``fastchat/serve/monitor/rating_systems.py`` is needed under
``--fastchat-path``; it imports numpy, scipy, pandas and tqdm).
Ties are drawn so that a tie is worth exactly the Bradley-Terry expected
score, which keeps the truth recoverable when ties count as half.

    python bench/bench_leaderboard.py --fastchat-path /tmp/fastchat \\
        --fastchat-legacy /tmp/fastchat/elo_analysis_e208d567_parent.py
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import importlib
import math
import multiprocessing as mp
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arena_stream.ratings import bradley_terry as bt  # noqa: E402


def synthetic(n: int, models: int, seed: int) -> tuple[pl.DataFrame, dict[str, float]]:
    """Battles among ``models`` models with ratings ~ N(1000, 150), ties up to 10%."""
    rng = np.random.default_rng(seed)
    true = rng.normal(1000.0, 150.0, models)
    names = np.array([f"model-{i:02d}" for i in range(models)])
    a = rng.integers(0, models, n)
    b = (a + rng.integers(1, models, n)) % models
    p = 1.0 / (1.0 + 10.0 ** ((true[b] - true[a]) / 400.0))
    tie_p = 0.2 * np.minimum(p, 1.0 - p)  # E[score] stays p: t/2 + (1-t) p' = p
    p_win = (p - tie_p / 2.0) / (1.0 - tie_p)
    u = rng.random(n)
    winner = np.where(u < tie_p, "tie", np.where(rng.random(n) < p_win, "model_a", "model_b"))
    df = pl.DataFrame({"model_a": names[a], "model_b": names[b], "winner": winner})
    centred = true - true.mean() + bt.INIT_RATING
    return df, dict(zip(names.tolist(), centred.tolist(), strict=True))


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, list[float], Any]:
    """Median wall time of ``runs`` calls, all times, and the last result."""
    times: list[float] = []
    result: Any = None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def as_map(models: list[str], values: Any) -> dict[str, float]:
    return {m: float(v) for m, v in zip(models, np.asarray(values), strict=True)}


def max_diff(x: dict[str, float], y: dict[str, float]) -> float:
    return max(abs(x[m] - y[m]) for m in x)


def load_legacy(path: Path) -> dict[str, Any]:
    """Only the two functions we time, compiled from FastChat's old elo_analysis.py.

    The whole module imports plotly, transformers and FastChat itself; the
    two functions need only numpy, pandas, math and tqdm.
    """
    import pandas as pd
    from tqdm import tqdm

    tree = ast.parse(path.read_text())
    wanted = {"compute_elo_mle_with_tie", "get_bootstrap_result"}
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    missing = wanted - {n.name for n in body}
    if missing:
        raise SystemExit(f"{path}: no {', '.join(sorted(missing))}")
    namespace: dict[str, Any] = {"np": np, "pd": pd, "math": math, "tqdm": tqdm}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--battles", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5, help="runs of each fast measurement")
    parser.add_argument("--slow-runs", type=int, default=1,
                        help="runs of arena-rank's and FastChat's bootstraps")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="worker processes for the other implementations' bootstraps")
    parser.add_argument("--skip-arena", action="store_true")
    parser.add_argument("--fastchat-path", type=Path, help="root of a FastChat checkout")
    parser.add_argument("--fastchat-legacy", type=Path,
                        help="an elo_analysis.py that has compute_elo_mle_with_tie")
    parser.add_argument("--legacy-rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "leaderboard.md")
    args = parser.parse_args()

    # arena-rank runs jax, and forking a process that has run jax deadlocks its
    # worker pool (seen here); spawn is slower to start but works.
    mp.set_start_method("spawn", force=True)

    print(f"generating {args.battles:,} battles among {args.models} models ...", flush=True)
    battles, truth = synthetic(args.battles, args.models, args.seed)
    pandas_battles = battles.to_pandas()
    rows: list[tuple[str, str, float, int, str]] = []  # impl, task, median s, runs, note
    ratings: dict[str, dict[str, float]] = {}
    widths: dict[str, float] = {}

    def record(impl: str, task: str, median: float, times: list[float], note: str = "") -> None:
        rows.append((impl, task, median, len(times), note))
        spread = ", ".join(f"{t:.2f}" for t in times)
        print(f"{impl:>22} {task:<22} median {median:8.3f} s  [{spread}] {note}", flush=True)

    # --- ours. The other implementations fit plain maximum likelihood, so the
    # comparisons use ours with prior_ties=0 (the same estimator); the default weak
    # prior (one virtual tie per model) is timed and compared as well.
    def ours_point(ties: float) -> dict[str, float]:
        c = bt.collapse(battles)
        theta = bt._fit(c, c.count, ties=ties)
        return as_map(c.models, bt.ALPHA * (theta - theta.mean()) + bt.INIT_RATING)

    med, ts, point = timed(lambda: ours_point(0.0), args.runs)
    record("ours", "point fit", med, ts, "prior_ties=0, as the others")
    ratings["ours"] = point
    med, ts, point = timed(lambda: ours_point(bt.PRIOR_TIES), args.runs)
    record("ours (default)", "point fit", med, ts, "weak prior")
    ratings["ours, default weak prior"] = point
    med, ts, res = timed(lambda: bt.fit(battles, method="sandwich", prior_ties=0.0), args.runs)
    record("ours", "sandwich CI", med, ts, "prior_ties=0")
    widths["ours sandwich"] = float(np.mean(res.upper - res.lower))
    med, ts, res = timed(
        lambda: bt.fit(battles, method="bootstrap", rounds=args.rounds, seed=args.seed,
                       prior_ties=0.0),
        args.runs,
    )
    record("ours", f"bootstrap {args.rounds}", med, ts, "prior_ties=0")
    widths["ours bootstrap"] = float(np.mean(res.upper - res.lower))
    med, ts, res = timed(
        lambda: bt.fit(battles, method="bootstrap", rounds=args.rounds, seed=args.seed), args.runs
    )
    record("ours (default)", f"bootstrap {args.rounds}", med, ts, "weak prior")
    widths["ours bootstrap, default weak prior"] = float(np.mean(res.upper - res.lower))

    # --- arena-rank
    if not args.skip_arena:
        from arena_rank.models.bradley_terry import BradleyTerry
        from arena_rank.utils.data_utils import PairDataset

        def arena_point() -> tuple[Any, Any]:
            ds = PairDataset.from_pandas(pandas_battles)
            model = BradleyTerry(n_competitors=len(ds.competitors))
            model.fit(ds)
            return ds, model

        med, ts, (ds, model) = timed(arena_point, args.runs)
        record("arena-rank", "point fit", med, ts, "incl. its PairDataset prep")
        ratings["arena-rank"] = as_map(
            ds.competitors, np.asarray(model.params["ratings"]) * model.alpha + model.init_rating
        )

        def arena_ci(method: str) -> dict[str, Any]:
            ds = PairDataset.from_pandas(pandas_battles)
            m = BradleyTerry(n_competitors=len(ds.competitors))
            return m.compute_ratings_and_cis(
                ds, ci_method=method, num_bootstrap=args.rounds, seed=args.seed, n_jobs=args.jobs
            )

        med, ts, res = timed(lambda: arena_ci("sandwich"), args.runs)
        record("arena-rank", "sandwich CI", med, ts)
        widths["arena-rank sandwich"] = float(
            np.mean(np.asarray(res["rating_upper"]) - np.asarray(res["rating_lower"]))
        )
        med, ts, res = timed(lambda: arena_ci("bootstrap"), args.slow_runs)
        record("arena-rank", f"bootstrap {args.rounds}", med, ts, f"{args.jobs} processes")
        widths["arena-rank bootstrap"] = float(
            np.mean(np.asarray(res["rating_upper"]) - np.asarray(res["rating_lower"]))
        )

    # --- FastChat, current
    if args.fastchat_path:
        sys.path.insert(0, str(args.fastchat_path / "fastchat" / "serve" / "monitor"))
        rs = importlib.import_module("rating_systems")  # importable by name: spawn needs that
        med, ts, series = timed(lambda: rs.compute_bt(pandas_battles), args.runs)
        record("FastChat", "compute_bt", med, ts)
        ratings["FastChat compute_bt"] = {k: float(v) for k, v in series.items()}
        med, ts, boot = timed(
            lambda: rs.compute_bootstrap_bt(pandas_battles, args.rounds, num_cpu=args.jobs),
            args.slow_runs,
        )
        record("FastChat", f"compute_bootstrap_bt {args.rounds}", med, ts,
               f"{args.jobs} processes")
        widths["FastChat bootstrap"] = float(
            (boot.quantile(0.975) - boot.quantile(0.025)).mean()
        )

    # --- FastChat, legacy sklearn version
    if args.fastchat_legacy:
        legacy = load_legacy(args.fastchat_legacy)
        med, ts, series = timed(lambda: legacy["compute_elo_mle_with_tie"](pandas_battles),
                                args.slow_runs)
        record("FastChat (legacy)", "compute_elo_mle_with_tie", med, ts)
        ratings["FastChat legacy"] = {k: float(v) for k, v in series.items()}
        n = args.legacy_rounds
        med, ts, _ = timed(
            lambda: legacy["get_bootstrap_result"](
                pandas_battles, legacy["compute_elo_mle_with_tie"], num_round=n
            ),
            args.slow_runs,
        )
        record("FastChat (legacy)", f"bootstrap {args.rounds}", med * args.rounds / n,
               [t * args.rounds / n for t in ts], f"extrapolated from {n} rounds")

    report = render(args, rows, ratings, widths, truth)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print()
    print(report)
    return 0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def render(
    args: argparse.Namespace,
    rows: list[tuple[str, str, float, int, str]],
    ratings: dict[str, dict[str, float]],
    widths: dict[str, float],
    truth: dict[str, float],
) -> str:
    """The Markdown report: timings with same-run ratios, then rating agreement."""
    ours = {task: med for impl, task, med, _, _ in rows if impl == "ours"}
    ours_for = {"point fit": "point fit", "compute_bt": "point fit",
                "compute_elo_mle_with_tie": "point fit", "sandwich CI": "sandwich CI"}
    lines = [
        "# Leaderboard benchmark",
        "",
        f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`",
        f"- machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}; "
        f"Python {platform.python_version()}, numpy {np.__version__}",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- data: {args.battles:,} synthetic battles, {args.models} models, seed {args.seed}, "
        f"ties up to 10%; {args.rounds} bootstrap rounds",
        "- times: median wall seconds over the runs shown, all in one process; "
        "'times ours' divides by our median for the same task measured in this run",
        "",
        "| implementation | task | median s | runs | times ours | note |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for impl, task, med, runs, note in rows:
        key = ours_for.get(task, f"bootstrap {args.rounds}" if "bootstrap" in task else task)
        ratio = f"{med / ours[key]:.1f}" if not impl.startswith("ours") and key in ours else ""
        lines.append(f"| {impl} | {task} | {med:.3f} | {runs} | {ratio} | {note} |")
    boot = f"bootstrap {args.rounds}"
    fastchat = {task: med for impl, task, med, _, _ in rows if impl == "FastChat"}
    if f"compute_bootstrap_bt {args.rounds}" in fastchat and boot in ours:
        speedup = fastchat[f"compute_bootstrap_bt {args.rounds}"] / ours[boot]
        lines += ["", f"Bootstrap speed-up over FastChat's `compute_bootstrap_bt`, same run: "
                      f"**{speedup:.1f}x** (target: at least 10x)."]
    lines += [
        "",
        "| ratings compared with ours (point fit) | largest difference, rating points |",
        "| --- | ---: |",
    ]
    mine = ratings["ours"]
    for name, other in ratings.items():
        if name != "ours":
            lines.append(f"| {name} | {max_diff(mine, other):.4f} |")
    lines.append(f"| true ratings (centred) | {max_diff(mine, truth):.2f} |")
    lines += ["", "| mean 95% interval width | rating points |", "| --- | ---: |"]
    lines += [f"| {name} | {w:.2f} |" for name, w in widths.items()]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
