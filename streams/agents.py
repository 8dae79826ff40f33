"""The agents. Each is thin: decode, call the domain, send, remember what it did.

No agent lets an exception escape: faust would ack the event and move on
(or crash the worker), so anything unexpected becomes a dead letter instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import faust
import msgspec
import structlog

from arena_stream.arena import battles as battle_rules
from arena_stream.arena import routing
from arena_stream.arena.validation import InvalidPrompt, parse_prompt
from arena_stream.config import Config
from arena_stream.judges.pairwise import JudgeFailed
from arena_stream.kafka import commits
from arena_stream.kafka.deadletter import dead_letter, message_meta
from arena_stream.models.retry import CallFailed
from arena_stream.ratings.elo import EloBook, PlayerRating
from arena_stream.schemas import (
    Battle,
    Generation,
    Judgment,
    Message,
    Prompt,
    RatingUpdate,
    SFTSample,
    decode,
    encode,
)
from arena_stream.streams.runtime import Runtime, table_writes_for

log = structlog.get_logger("arena_stream.streams")
RATE_BATCH = 200  # judgments per Elo book write at most
RATE_WITHIN_S = 0.01  # how long a partial batch waits for more judgments


@dataclasses.dataclass
class _RateBatch:
    """One batch of the rate agent: outputs in flight and table writes held back.

    Table writes wait until every output is acknowledged; until then the
    overlays answer "already counted / routed?" for judgments repeated inside
    the batch.
    """

    acks: list[Any] = dataclasses.field(default_factory=list)
    writes: list[tuple[Any, Any, str, Any]] = dataclasses.field(default_factory=list)
    logged: dict[str, int] = dataclasses.field(default_factory=dict)
    routed: set[str] = dataclasses.field(default_factory=set)

    def log(self, event: Any, table: Any, battle_id: str, offset: int) -> None:
        self.logged[battle_id] = offset
        self.writes.append((event, table, battle_id, offset))


class _Snapshots:
    """Bradley-Terry leaderboard snapshots, fitted off the rating path.

    The rate agent offers the book every ``snapshot_every`` judgments and goes
    on; one task fits and publishes them in order. When fits fall behind, only
    the newest waiting book is kept: a snapshot is a summary, not a log.
    """

    def __init__(self, send: Any) -> None:
        self._send = send
        self._latest: tuple[dict[str, Any], int] | None = None
        self._wake = asyncio.Event()

    def offer(self, book_state: dict[str, Any]) -> None:
        pairs = {k: list(v) for k, v in book_state["pairs"].items()}
        self._latest = (pairs, int(book_state["judgments"]))
        self._wake.set()

    async def run(self) -> None:
        from arena_stream.ratings.snapshots import leaderboard_snapshot

        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._latest is None:
                continue
            pairs, judgments = self._latest
            self._latest = None
            try:
                snap = await asyncio.to_thread(leaderboard_snapshot, pairs, judgments)
                if snap is not None:
                    await self._send("leaderboard", "leaderboard", snap)
            except Exception as exc:  # a snapshot is a convenience; never stop the ratings
                log.warning("leaderboard.snapshot_failed", error=str(exc))


def register(
    app: faust.App,
    config: Config,
    rt: Runtime,
    topics: dict[str, faust.TopicT],
    tables: dict[str, faust.TableT],
) -> None:
    async def enqueue(key: str, topic: str, event: Any) -> Any:
        """Hand a record to the producer; the returned future resolves on the broker's ack."""
        return await topics[topic].send(key=key.encode(), value=encode(event))

    async def send(key: str, topic: str, event: Any) -> None:
        # Wait for the broker's ack, not just for the record to be queued: every caller
        # records the work as done in a table right after sending, and a table write can
        # reach the broker before a queued record does (another partition, one batch per
        # partition per request), so a crash in between would lose the output for good.
        await (await enqueue(key, topic, event))

    async def send_dead(letter: Any) -> None:
        rt.counters[f"deadletter.{letter.stage}"] += 1
        log.warning(
            "deadletter",
            stage=letter.stage,
            reason=letter.reason,
            ref=letter.ref,
            error=letter.error[:300],
        )
        await send(letter.ref or letter.key or "", "deadletter", letter)

    async def guard(stage: str, event: Any, ref: str | None, work: Any) -> None:
        """Run one event's work; anything unexpected is dead-lettered, never raised."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("agent.error", stage=stage, ref=ref)
            await send_dead(
                dead_letter(
                    stage=stage,
                    reason="internal_error",
                    error=f"{type(exc).__name__}: {exc}",
                    original=event.message.value,
                    ref=ref,
                    **message_meta(event),
                )
            )

    # -- intake: validate, deduplicate, forward ---------------------------------------------

    digests = tables["prompt_digests"]

    @app.agent(topics["prompts"], name="intake")
    async def intake(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await guard("intake", event, None, _intake(event))

    async def _intake(event: Any) -> None:
        raw: bytes | None = event.message.value
        try:
            prompt = parse_prompt(raw, config.limits)
        except InvalidPrompt as exc:
            await send_dead(
                dead_letter(
                    stage="intake",
                    reason=exc.reason,
                    error=exc.message,
                    original=raw,
                    **message_meta(event),
                )
            )
            return
        filter_ = rt.decontaminator
        if filter_ is not None:
            from arena_stream.models.embeddings import conversation_text

            verdict = (await asyncio.to_thread(filter_.check, [conversation_text(prompt)]))[0]
            if verdict.contaminated:
                await send_dead(dead_letter(
                    stage="intake", reason="test_set_overlap", error=verdict.reason or "",
                    original=raw, ref=prompt.id, **message_meta(event),
                ))
                return
        seen = digests.get(prompt.id)
        if seen is not None:
            if seen != prompt.digest:
                await send_dead(
                    dead_letter(
                        stage="intake",
                        reason="duplicate_id",
                        error=f"prompt id {prompt.id!r} was already used for different content",
                        original=raw,
                        ref=prompt.id,
                        **message_meta(event),
                    )
                )
            else:
                rt.counters["intake.duplicate"] += 1
                log.info("prompt.duplicate_ignored", prompt_id=prompt.id)
            return
        prompt.round = rt.round()
        prompt.ts = time.time()
        await send(prompt.id, "accepted", prompt)
        digests[prompt.id] = prompt.digest
        rt.counters["intake.accepted"] += 1
        log.debug("prompt.accepted", prompt_id=prompt.id)

    # -- generate: one agent per player, so a slow player queues only its own work --------

    expected_players = [p.name for p in config.players]

    def make_generator(player: str, concurrency: int) -> None:
        async def generate(stream: faust.StreamT) -> None:
            async for event in stream.events():
                await guard(f"generate.{player}", event, None, _generate(player, event))

        app.agent(topics["accepted"], name=f"generate-{player}", concurrency=concurrency)(generate)

    async def _generate(player: str, event: Any) -> None:
        prompt = decode(event.message.value, Prompt)
        if prompt.only_players and player not in prompt.only_players:
            return
        client = rt.client(player)
        version = client.version
        model = rt.rated_name(player)
        base = dict(
            id=f"{prompt.id}/{model}",
            prompt_id=prompt.id,
            player=player,
            model=model,
            version=version,
            round=prompt.round,
            messages=prompt.messages,
            category=prompt.category,
            expected_players=expected_players,
        )
        started = time.perf_counter()
        messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
        try:
            done = await asyncio.wait_for(client.complete(messages), config.battles.deadline_s)
        except (CallFailed, TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, CallFailed) else "deadline"
            attempts = exc.attempts if isinstance(exc, CallFailed) else 0
            error = str(exc) or f"no answer within the {config.battles.deadline_s}s deadline"
            gen = Generation(
                **base,
                ok=False,
                error=f"{reason}: {error}",
                latency_s=time.perf_counter() - started,
                attempts=attempts,
                ts=time.time(),
            )
            await send_dead(
                dead_letter(
                    stage="generate",
                    reason=reason,
                    error=f"player {player}: {error}",
                    original=event.message.value,
                    ref=prompt.id,
                    attempts=attempts,
                    **message_meta(event),
                )
            )
        else:
            gen = Generation(
                **base,
                answer=done.text,
                latency_s=done.latency_s,
                prompt_tokens=done.prompt_tokens,
                completion_tokens=done.completion_tokens,
                attempts=done.attempts,
                ts=time.time(),
            )
            rt.counters[f"generate.{player}"] += 1
            log.info(
                "generation",
                prompt_id=prompt.id,
                player=player,
                model=model,
                latency_s=round(done.latency_s, 3),
                tokens=done.completion_tokens,
            )
        await send(prompt.id, "generations", gen)

    for p in config.players:
        make_generator(p.name, p.concurrency)

    # -- collect: wait for every player, then form the battles once -----------------------

    pending = tables["pending"]

    @app.agent(topics["generations"], name="collect")
    async def collect(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await guard("battle", event, None, _collect(event))

    async def _collect(event: Any) -> None:
        gen = decode(event.message.value, Generation)
        state = pending.get(gen.prompt_id) or {"gens": {}, "done": False, "first_ts": time.time()}
        if state["done"] or gen.player in state["gens"]:
            return  # a redelivered generation, or a late one after the battles formed
        state["gens"][gen.player] = msgspec.to_builtins(gen)
        expected = set(gen.expected_players or expected_players)
        if expected <= set(state["gens"]):
            # Configured player order, not arrival order: battle ids hash the pair's order,
            # so the same prompt must always yield the same pairs (round-robin mode).
            order = {p: i for i, p in enumerate(gen.expected_players or expected_players)}
            gens = sorted(
                (msgspec.convert(g, Generation) for g in state["gens"].values()),
                key=lambda g: order.get(g.player, len(order)),
            )
            formed = battle_rules.form_battles(
                gens, mode=config.battles.mode, target_player=config.target.name, now=time.time()
            )
            for b in formed:
                await send(b.prompt_id, "battles", b)
            rt.counters["battles.formed"] += len(formed)
            log.info("battles.formed", prompt_id=gen.prompt_id, battles=[b.id for b in formed])
            state = {"gens": {}, "done": True, "battles": [b.id for b in formed]}
        pending[gen.prompt_id] = state

    # -- sweep: prompts whose answers never all arrived ----------------------------------

    sweep_after = config.battles.sweep_after_s or config.battles.deadline_s + 60.0
    swept: dict[str, int] = {}  # prompt id -> re-requests made by this worker

    @app.timer(interval=max(1.0, sweep_after / 4))
    async def sweep() -> None:
        """Re-ask missing players; after ``sweep_retries``, report them missing.

        A timer cannot write tables (they need an event's partition), so it sends
        messages and the agents act on them like on any other.
        """
        now = time.time()
        for prompt_id, state in list(pending.items()):
            if not state or state.get("done") or now - state.get("first_ts", now) < sweep_after:
                continue
            first = next(iter(state["gens"].values()))
            expected = first.get("expected_players") or expected_players
            missing = [p for p in expected if p not in state["gens"]]
            tries = swept.get(prompt_id, 0)
            if tries > config.battles.sweep_retries:
                continue  # already reported missing; the collect agent is on it
            if tries < config.battles.sweep_retries:
                swept[prompt_id] = tries + 1
                retry = Prompt(id=prompt_id, messages=msgspec.convert(first["messages"],
                               list[Message]), category=first.get("category"),
                               round=first.get("round", 0), only_players=missing, ts=now)
                log.warning("prompt.swept", prompt_id=prompt_id, missing=missing, attempt=tries + 1)
                await send(prompt_id, "accepted", retry)
                continue
            for player in missing:
                await send(prompt_id, "generations", Generation(
                    id=f"{prompt_id}/{player}", prompt_id=prompt_id, player=player, model=player,
                    messages=msgspec.convert(first["messages"], list[Message]),
                    expected_players=expected, ok=False,
                    error=f"deadline: no answer after {tries} re-requests", ts=now,
                ))
            await send_dead(dead_letter(
                stage="battle", reason="deadline", topic=config.broker.topic_prefix + "generations",
                error=f"players {missing} never answered prompt {prompt_id}", ref=prompt_id,
                attempts=tries,
            ))
            swept[prompt_id] = config.battles.sweep_retries + 1

    # -- judge: two games per battle ------------------------------------------------------

    judged = tables["judged"]

    @app.agent(topics["battles"], name="judge", concurrency=config.judge.concurrency)
    async def judge(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await guard("judge", event, None, _judge(event))

    async def _judge(event: Any) -> None:
        battle = decode(event.message.value, Battle)
        if judged.get(battle.id):
            return
        structlog.contextvars.bind_contextvars(prompt_id=battle.prompt_id, battle_id=battle.id)
        try:
            verdict = await rt.judge.judge(battle)
        except JudgeFailed as exc:
            await send_dead(
                dead_letter(
                    stage="judge",
                    reason=exc.reason,
                    error=exc.message,
                    original=event.message.value,
                    ref=battle.id,
                    attempts=exc.attempts,
                    **message_meta(event),
                )
            )
            return
        finally:
            structlog.contextvars.unbind_contextvars("prompt_id", "battle_id")
        await send(battle.prompt_id, "judgments", verdict)
        judged[battle.id] = True
        rt.counters["judgments"] += 1
        log.info(
            "judgment",
            prompt_id=battle.prompt_id,
            battle_id=battle.id,
            model_a=verdict.model_a,
            model_b=verdict.model_b,
            winner=verdict.winner,
            score_a=verdict.score_a,
            score_b=verdict.score_b,
            rule=verdict.rule,
        )

    # -- rate: incremental Elo, each judgment counted once; route: losses become data -----

    ratings = tables["ratings"]
    rating_log = tables["rating_log"]
    routed = tables["routed"]

    @app.agent(topics["judgments"], name="rate")
    async def rate(stream: faust.StreamT) -> None:
        # Routing shares this agent instead of having its own: with two agents on one
        # topic, faust's shutdown was seen to acknowledge an event one of them had not
        # processed (a judgment never rated). Both steps are idempotent on their own.
        #
        # Judgments come in batches: the Elo book (one table record) is read and written
        # once per batch, and every output of the batch is sent at once and acknowledged
        # together before any table records the work as done. A crash in between makes
        # the batch run again: outputs repeat (same ids, which readers and the trigger
        # ignore), nothing is counted twice (the book's offset watermark, rating_log).
        async for events in stream.take_events(RATE_BATCH, within=RATE_WITHIN_S):
            book_state = ratings.get("book") or {"last_offset": -1, "players": {}, "pairs": {}}
            batch = _RateBatch()
            for event in events:
                table_writes_for(event)
                await guard("route", event, None, _route(event, batch))
                await guard("ratings", event, None, _rate(event, book_state, batch))
            await asyncio.gather(*batch.acks)
            for event, table, key, value in batch.writes:
                table_writes_for(event)
                table[key] = value
            if events:
                ratings["book"] = book_state

    async def queue_send(batch: _RateBatch, key: str, topic: str, event: Any) -> None:
        batch.acks.append(await enqueue(key, topic, event))

    async def _route(event: Any, batch: _RateBatch) -> None:
        j = decode(event.message.value, Judgment)
        if j.battle_id in batch.routed or routed.get(j.battle_id):
            return
        for sample in routing.route(j, config.routing, now=time.time()):
            topic = "sft" if isinstance(sample, SFTSample) else "dpo"
            await queue_send(batch, j.prompt_id, topic, sample)
            rt.counters[f"route.{topic}"] += 1
            log.info(
                "sample.routed",
                kind=topic,
                battle_id=j.battle_id,
                prompt_id=j.prompt_id,
                margin=j.margin,
            )
        batch.routed.add(j.battle_id)
        batch.writes.append((event, routed, j.battle_id, True))

    def in_order(event: Any, last: int) -> bool:
        """Whether ``event`` is the next judgment to apply after offset ``last``."""
        offset = event.message.offset
        if offset == last + 1:
            return True
        start = last + 1 if last >= 0 else commits.first_offset(event)
        return start is None or commits.nothing_between(event, start)

    async def _rate(event: Any, book_state: dict[str, Any], batch: _RateBatch) -> None:
        # Elo depends on the order of the games, and the audit replays the log in offset
        # order, so judgments are applied strictly in offset order: the book's watermark
        # means "every offset up to here is applied or was not a rating". One that
        # arrives after a gap (an earlier judgment was skipped or dropped by the consumer)
        # is left unfinished, and comes back after the earlier one (arena_stream.commits).
        offset = event.message.offset
        last = book_state["last_offset"]
        if offset > last and not in_order(event, last):
            commits.redo(event)
            rt.counters["ratings.out_of_order"] += 1
            log.warning("judgment.out_of_order", offset=offset, applied_through=last)
            return
        if offset > last:
            book_state["last_offset"] = offset  # handled, whatever follows (even an error)
        j = decode(event.message.value, Judgment)
        first = batch.logged.get(j.battle_id, rating_log.get(j.battle_id))
        if first is not None and first != offset:
            rt.counters["ratings.duplicate"] += 1
            log.info(
                "judgment.duplicate_ignored", battle_id=j.battle_id, offset=offset, counted_at=first
            )
            return
        if offset <= last:
            if first is None:  # the book landed, the log entry did not: repair it
                batch.log(event, rating_log, j.battle_id, offset)
            return
        batch.log(event, rating_log, j.battle_id, offset)
        book = EloBook(
            config.ratings, {m: PlayerRating.from_dict(d) for m, d in book_state["players"].items()}
        )
        s_a, d_a, d_b = book.deltas(j.model_a, j.model_b, j.winner)
        book.apply(j.model_a, j.model_b, j.winner)
        pair = f"{j.model_a}\x1f{j.model_b}"
        counts = book_state["pairs"].get(pair, [0, 0, 0])
        counts[{"model_a": 0, "model_b": 1, "tie": 2}[j.winner]] += 1
        book_state["pairs"][pair] = counts
        now = time.time()
        for model, opponent, outcome, delta in (
            (j.model_a, j.model_b, s_a, d_a),
            (j.model_b, j.model_a, 1.0 - s_a, d_b),
        ):
            p = book.get(model)
            update = RatingUpdate(
                model=model,
                rating=round(p.rating, 4),
                battles=p.battles,
                battle_id=j.battle_id,
                delta=round(delta, 4),
                opponent=opponent,
                outcome=outcome,
                wins=p.wins,
                losses=p.losses,
                ties=p.ties,
                judgment_offset=offset,
                ts=now,
            )
            await queue_send(batch, model, "ratings", update)
        book_state["players"] = {m: p.to_dict() for m, p in book.players.items()}
        book_state["judgments"] = book_state.get("judgments", 0) + 1
        rt.counters["ratings.applied"] += 1
        every = config.ratings.snapshot_every
        if every and book_state["judgments"] % every == 0:
            snapshots.offer(book_state)

    snapshots = _Snapshots(send)
    app.task(snapshots.run)

    # -- training trigger and model versions (the flywheel) -------------------------------

    from arena_stream.streams import flywheel

    flywheel.register(app, config, rt, topics, tables, send)
