"""``arena-stream run``: worker, trainer, publisher and live display in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import structlog

from arena_stream.cli.progress import TOPICS, Tracker
from arena_stream.config import Config, ConfigError
from arena_stream.datasets.prompts import PromptLine, publish_prompts
from arena_stream.kafka.io import tail
from arena_stream.streams.worker import RunningWorker, running_worker, wait_until_ready

log = structlog.get_logger(__name__)


def shards(lines: list[PromptLine], rounds: int) -> list[list[PromptLine]]:
    size = -(-len(lines) // max(1, rounds))
    return [lines[i : i + size] for i in range(0, len(lines), size)]


async def run_flywheel(
    config: Config, lines: list[PromptLine], *, rounds: int, job_timeout: float,
    as_json: bool = False,
) -> int:
    from arena_stream.models.preflight import check_base_checkpoint, require

    base = check_base_checkpoint(config)
    if base is not None:
        require([base])  # before anything starts: a wrong checkpoint is a config error
    tracker = Tracker(config)
    started = time.monotonic()
    ending = Ending()
    try:
        return await _run(config, lines, rounds, job_timeout, as_json, tracker, started, ending)
    except asyncio.CancelledError:
        if ending.reason is None:
            raise
        if ending.reason == SIGNAL:
            # Ctrl-C or SIGTERM: the run stopped in order, everything closed
            print("arena-stream run: interrupted", file=sys.stderr)
            return 130
        print("arena-stream run: FAILED: the worker stopped on its own before the run ended "
              "(its error is in the log above)", file=sys.stderr)
        return 1


SIGNAL = "signal"
WORKER_STOPPED = "worker stopped"


@dataclass
class Ending:
    """Why the run's main task was cancelled (None: it was not, or not by the run)."""

    reason: str | None = None


def _interrupt(main: asyncio.Task[Any], ending: Ending, reason: str) -> None:
    if ending.reason is None:
        ending.reason = reason
    main.cancel()


async def _interrupt_when_stopped(app: RunningWorker, main: asyncio.Task[Any],
                                  ending: Ending) -> None:
    """A worker that stopped on its own (a crashed service) ends the run instead of leaving
    it waiting for ever."""
    await app.wait_until_stopped()
    _interrupt(main, ending, WORKER_STOPPED)


async def _run(
    config: Config, lines: list[PromptLine], rounds: int, job_timeout: float, as_json: bool,
    tracker: Tracker, started: float, ending: Ending,
) -> int:
    from arena_stream.trainers.service import TrainerService

    stop = asyncio.Event()  # tells the trainer service to finish

    async with running_worker(config) as app:
        await wait_until_ready(app)
        runtime = app.runtime
        if app.web is not None:
            print(f"live page: {app.web.url}", flush=True)
        evaluations = Evaluations(tracker, app.wiring.heldout, config.target.name)
        evaluations.expect(runtime.client(config.target.name).version)
        tasks = [asyncio.create_task(_follow(config, tracker), name="follow")]
        main = asyncio.current_task()
        assert main is not None
        # mode's worker put its own SIGINT/SIGTERM handlers on the loop, which stop faust
        # under the run's feet; the run takes them back and stops in order instead (the
        # finally below, then running_worker's), as at its normal end.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, _interrupt, main, ending, SIGNAL)
        watcher = asyncio.create_task(_interrupt_when_stopped(app, main, ending))
        if config.training.enabled:
            trainer = TrainerService(config)
            tasks.append(asyncio.create_task(trainer.serve(stop), name="trainer"))
        display = Display(tracker, live=sys.stdout.isatty() and not as_json)
        try:
            with display:
                parts = shards(lines, rounds)
                for i, shard in enumerate(parts):
                    if i > 0 and config.training.enabled:
                        await _wait_for_training(tracker, runtime, config, display, job_timeout)
                        evaluations.expect_published()
                    tracker.expect([line.prompt.id for line in shard])
                    await publish_prompts(config, shard)
                    log.info("run.shard_published", shard=i + 1, prompts=len(shard))
                    await _until_done(tracker, tasks, display, f"shard {i + 1}/{len(parts)}")
                    display.refresh(f"shard {i + 1}/{len(parts)} done")
                while config.training.enabled:  # what the last shard trained is evaluated too
                    settled = await _wait_for_training(tracker, runtime, config, display,
                                                       job_timeout)
                    before = set(evaluations.expected)
                    evaluations.expect_published()
                    await _until_done(tracker, tasks, display, "held-out evaluation")
                    # a job the last one's end fired (the schedule's next kind) comes too
                    if not settled or (evaluations.expected == before
                                       and not tracker.jobs_busy()):
                        break
                lineage = None
                if app.wiring.heldout or tracker.versions:
                    from arena_stream.cli.commands.versions import read_lineage

                    lineage = await read_lineage(config)
        finally:
            watcher.cancel()
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    _final_report(tracker, time.monotonic() - started, as_json=as_json, lineage=lineage)
    failure = tracker.verdict()
    if failure is not None:
        print(f"arena-stream run: FAILED: {failure}", file=sys.stderr)
        return 1
    return 0


class Evaluations:
    """Which held-out evaluations the run waits for: one per target version it saw published.

    The worker publishes them (streams/stages/evaluate.py); the run only expects their
    prompt ids, so that it ends once every version's held-out battles are judged.
    """

    def __init__(self, tracker: Tracker, heldout: list[Any], target: str) -> None:
        self.tracker = tracker
        self.heldout = heldout
        self.target = target
        self.expected: set[int] = set()

    def expect(self, version: int) -> None:
        from arena_stream.streams.stages.evaluate import eval_id

        if not self.heldout or version in self.expected:
            return
        self.expected.add(version)
        self.tracker.expect([eval_id(version, p.id) for p in self.heldout])

    def expect_published(self) -> None:
        for v in self.tracker.versions:
            if v.name == self.target:
                self.expect(v.version)


async def _until_done(tracker: Tracker, tasks: list[asyncio.Task[Any]], display: Display,
                      phase: str) -> None:
    while not tracker.all_done():
        _check(tasks)
        display.refresh(phase)
        await asyncio.sleep(0.5)


def _check(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            error = task.exception()
            if isinstance(error, ConfigError):
                raise error
            raise RuntimeError(f"{task.get_name()} failed") from error


async def _follow(config: Config, tracker: Tracker) -> None:
    from arena_stream.kafka.io import topic_name

    keys = {topic_name(config, k): k for k in TOPICS}
    async for record in tail(config, *TOPICS):
        tracker.feed(keys[record.topic], record.value)


async def _wait_for_training(
    tracker: Tracker, runtime: Any, config: Config, display: Display, timeout: float
) -> bool:
    """Let jobs fired by the last shard finish, and the worker switch to the newest version;
    False when that did not happen within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    await asyncio.sleep(2.0)  # the trigger sees the last samples a moment after the ratings
    target = config.target.name
    while time.monotonic() < deadline:
        newest = max((v.version for v in tracker.versions if v.name == target), default=0)
        if not tracker.jobs_busy() and runtime.client(target).version >= newest:
            return True
        display.refresh("training")
        await asyncio.sleep(0.5)
    log.warning("run.training_wait_timeout", seconds=timeout)
    return False


class Display:
    """A rich live view on a terminal; a progress line every few seconds elsewhere."""

    def __init__(self, tracker: Tracker, *, live: bool) -> None:
        self.tracker = tracker
        self.live = None
        self.last_line = 0.0
        if live:
            from rich.live import Live

            self.live = Live(refresh_per_second=2, transient=False)

    def __enter__(self) -> Display:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def refresh(self, phase: str) -> None:
        c = self.tracker.counts()
        if self.live is None:
            now = time.monotonic()
            if now - self.last_line >= 5.0:
                self.last_line = now
                top = ", ".join(f"{r.model} {r.rating:.1f}" for r in self.tracker.standings()[:4])
                print(f"[{phase}] prompts answered {c['answered']}/{c['prompts']}, "
                      f"battles judged {c['judged']}/{c['battles']}, jobs {self._jobs()}"
                      + (f" | {top}" if top else ""), flush=True)
            return
        self.live.update(self._render(phase, c))

    def _jobs(self) -> str:
        return ", ".join(self.tracker.job_line(j) for j in self.tracker.jobs) or "none"

    def _render(self, phase: str, c: dict[str, Any]) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        from arena_stream.cli.display import ratings_table

        bars = Table.grid(padding=(0, 1))
        for label, done, total in (
            ("prompts answered", c["answered"], c["prompts"]),
            ("battles judged", c["judged"], c["battles"]),
        ):
            bars.add_row(f"{label:>17}", ProgressBar(total=max(total, 1), completed=done,
                                                     width=40), f"{done}/{total}")
        bars.add_row(f"{'training':>17}", self._jobs(), "")
        return Group(f"[bold]arena-stream[/bold] — {phase}", bars,
                     ratings_table(self.tracker.standings(), title="Live Elo"))


def _final_report(tracker: Tracker, seconds: float, *, as_json: bool,
                  lineage: Any = None) -> None:
    import json

    import msgspec

    from arena_stream.cli.display import print_ratings

    rows = tracker.standings()
    if as_json:
        if lineage is None:
            print_ratings(rows, as_json=True)
        else:
            # one line, as without the lineage: the last line of the output is the result
            print(json.dumps({"ratings": msgspec.to_builtins(rows),
                              "lineage": msgspec.to_builtins(lineage)}))
        return
    c = tracker.counts()
    print(f"\nDone in {seconds:.0f} s: {c['prompts']} prompts, {c['judged']} battles judged, "
          f"{tracker.dead_letters} dead letters, versions: "
          + (", ".join(f"{v.name}@v{v.version} ({v.kind})" for v in tracker.versions) or "none"))
    for player, n in sorted(tracker.skipped.items()):
        print(f"{player} skipped {n} prompt(s) without metadata.reference (no battle against "
              "it for those; see arena_stream/models/reference.py)")
    print_ratings(rows)
    if tracker.snapshot is not None:
        with contextlib.suppress(Exception):
            snap = msgspec.to_builtins(tracker.snapshot)
            print(f"Bradley-Terry snapshot after {snap['judgments']} judgments ({snap['method']}):")
            for r in snap["rows"]:
                print(f"  {r['rank']:>2}. {r['model']:<20} {r['rating']:7.1f} "
                      f"[{r['lower']:.1f}, {r['upper']:.1f}]  n={r['battles']}")
    if lineage is not None:
        from arena_stream.cli.commands.versions import lineage_lines, version_table

        print("\nTarget versions (held-out: Bradley-Terry, 95% bootstrap interval):")
        version_table(lineage)
        for line in lineage_lines(lineage):
            print(line)
