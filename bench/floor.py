"""The floor: the same topic hops and HTTP calls as the battle stream, with no logic.

Per prompt it moves the records the stream's main path moves, through the same
topics, and makes the same four HTTP calls::

    prompts ─► accepted ─(2 generation calls)─► generations (2) ─collect─► battles
    battles ─(2 judge calls)─► judgments ─► ratings (2)

That is 8 records and 4 calls per battle. There is no validation, no
deduplication, no tables or changelogs, no dead letters and no routing to
training buffers: what is left is the cost of aiokafka, httpx and the broker.
Each stage is a group-less aiokafka consumer feeding as many handler tasks as
the stream's agent has (one; a model's ``concurrency`` where a model is called),
each HTTP model bounded by the same ``concurrency`` as the stream's clients, each
output awaited until the broker acknowledges it (as the stream's agents do).
(A first version handled each fetched batch of up to 500 records at once: with
one record per producer batch, hundreds of sends then waited on the same
partition and aiokafka's wake-ups for them took most of its CPU.) The producer
gets the same broker quirks as the stream (one record per batch on the embedded
broker unless ``flavor = "kafka"``).

Run by ``bench/bench_pipeline.py --floor`` exactly like a worker::

    python bench/floor.py --config FILE
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from arena_stream.config import Config, load
from arena_stream.kafka.broker import Quirks, client_settings
from arena_stream.kafka.io import partitions, topic_name
from arena_stream.streams.worker import prepare

Record = Any
Handler = Callable[[Record], Awaitable[None]]


class Floor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.quirks = Quirks.for_broker(config.broker)
        self.producer = AIOKafkaProducer(
            **client_settings(config), **self.quirks.producer_settings(), acks="all"
        )
        self.http: dict[str, httpx.AsyncClient] = {}
        self.slots: dict[str, asyncio.Semaphore] = {}
        for spec in [*config.players, config.judge]:
            self.http[spec.model] = httpx.AsyncClient(
                base_url=(spec.base_url or "").rstrip("/") + "/",
                limits=httpx.Limits(max_connections=spec.concurrency * 2),
                timeout=spec.timeout_s,
            )
            self.slots[spec.model] = asyncio.Semaphore(spec.concurrency)
        self.players = [p.model for p in config.players]
        self.pending: dict[bytes, list[str]] = {}
        self.consumers: list[AIOKafkaConsumer] = []

    async def call(self, model: str, content: str) -> str:
        body = {"model": model, "messages": [{"role": "user", "content": content}],
                "max_tokens": 256, "temperature": 0.0, "top_p": 1.0}
        async with self.slots[model]:
            response = await self.http[model].post("chat/completions", json=body)
        response.raise_for_status()
        return str(response.json()["choices"][0]["message"]["content"])

    async def send(self, key: str, record_key: bytes, value: dict[str, Any]) -> None:
        delivered = await self.producer.send(
            topic_name(self.config, key), msgspec.json.encode(value), key=record_key
        )
        await delivered

    # -- the stages -------------------------------------------------------------------------

    async def intake(self, r: Record) -> None:
        await self.send("accepted", r.key, msgspec.json.decode(r.value))

    async def generate(self, r: Record) -> None:
        prompt = msgspec.json.decode(r.value)

        async def one(model: str) -> None:
            answer = await self.call(model, prompt["prompt"])
            await self.send("generations", r.key,
                            {"prompt_id": prompt["id"], "player": model, "answer": answer,
                             "prompt": prompt["prompt"]})

        await asyncio.gather(*(one(m) for m in self.players))

    async def collect(self, r: Record) -> None:
        gen = msgspec.json.decode(r.value)
        got = self.pending.setdefault(r.key, [])
        got.append(gen["answer"])
        if len(got) == len(self.players):
            del self.pending[r.key]
            await self.send("battles", r.key, {"prompt_id": gen["prompt_id"],
                                               "prompt": gen["prompt"],
                                               "answer_a": got[0], "answer_b": got[1]})

    async def judge(self, r: Record) -> None:
        b = msgspec.json.decode(r.value)
        judge = self.config.judge.model

        def text(first: str, second: str) -> str:
            return (f"{b['prompt']}\n<<<ANSWER 1>>>\n{first}\n<<<END 1>>>\n"
                    f"<<<ANSWER 2>>>\n{second}\n<<<END 2>>>")

        g1, g2 = await asyncio.gather(self.call(judge, text(b["answer_a"], b["answer_b"])),
                                      self.call(judge, text(b["answer_b"], b["answer_a"])))
        await self.send("judgments", r.key, {**b, "games": [g1, g2]})

    async def rate(self, r: Record) -> None:
        j = msgspec.json.decode(r.value)
        for player in ("a", "b"):
            await self.send("ratings", r.key, {"prompt_id": j["prompt_id"], "player": player})

    async def stage(self, key: str, handle: Handler, workers: int) -> None:
        """Consume ``key``; ``workers`` tasks handle its records (the stream's agent
        concurrency: 1 for intake, collect and rate, the model's ``concurrency`` for the
        stages that call a model)."""
        c = AIOKafkaConsumer(**client_settings(self.config),
                             **Quirks.for_broker(self.config.broker).consumer_settings(),
                             enable_auto_commit=False,
                             group_id=None, auto_offset_reset="latest")
        await c.start()
        self.consumers.append(c)
        name = topic_name(self.config, key)
        tps = await partitions(c, name)
        c.assign(tps)
        await c.seek_to_end(*tps)
        for tp in tps:
            await c.position(tp)
        queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=1024)

        async def work() -> None:
            while True:
                await handle(await queue.get())

        tasks = [asyncio.create_task(work()) for _ in range(workers)]
        try:
            while True:
                batch = await c.getmany(timeout_ms=500, max_records=500)
                for tp in sorted(batch):
                    for r in batch[tp]:
                        await queue.put(r)
        finally:
            for t in tasks:
                t.cancel()

    async def serve(self, stop: asyncio.Event) -> None:
        await prepare(self.config)
        await self.producer.start()
        players = min(p.concurrency for p in self.config.players)
        stages = [("prompts", self.intake, 1), ("accepted", self.generate, players),
                  ("generations", self.collect, 1),
                  ("battles", self.judge, self.config.judge.concurrency),
                  ("judgments", self.rate, 1)]
        tasks = [asyncio.create_task(self.stage(k, h, n)) for k, h, n in stages]
        while len(self.consumers) < len(stages):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # every consumer has its position
        print(f"worker running (floor on {self.config.broker.bootstrap_servers})", flush=True)
        await stop.wait()
        for t in tasks:
            t.cancel()
        for c in self.consumers:
            await c.stop()
        await self.producer.stop()
        for client in self.http.values():
            await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    config = load(args.config)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Floor(config).serve(stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
