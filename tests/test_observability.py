"""A running worker's /metrics (Prometheus text), /healthz and /readyz."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from arena_stream.streams.worker import running_worker, wait_until_ready
from tests.helpers import count, prompt, publish_raw, wait_for

WEB = "\n[web]\nenabled = true\nport = 0\npage = false\n"


async def test_metrics_health_and_readiness(make_config, stub) -> None:
    config = make_config(stub.base_url, extra=WEB)
    await publish_raw(config, [prompt(f"p{i}", f"q{i}") for i in range(3)]
                      + [(b"bad", b"{not json")])
    async with running_worker(config) as worker, aiohttp.ClientSession() as http:
        base = worker.web.url
        await wait_until_ready(worker)

        async def rated() -> bool:
            return await count(config, "ratings") >= 6

        await wait_for(rated, timeout=60)
        async with http.get(base + "healthz") as r:
            assert r.status == 200 and (await r.text()).strip() == "ok"
        async with http.get(base + "readyz") as r:
            assert r.status == 200
        async with http.get(base + "") as r:
            assert r.status == 404  # page = false: only the operators' endpoints
        async with http.get(base + "metrics") as r:
            assert r.status == 200
            text = await r.text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("arena_events_total", (("name", "judgments"),))] == 3
    assert samples[("arena_events_total", (("name", "deadletter.intake.invalid_json"),))] == 1
    assert samples[("arena_table_keys", (("table", "judged"),))] == 3
    assert ("arena_consumer_lag", (("topic", config.broker.topic_prefix + "battles"),)) in samples
    assert samples[("arena_generation_seconds_count", (("ok", "true"), ("player", "comp")))] == 3
    assert samples[("arena_judgment_seconds_count", (("outcome", "judged"),))] == 3
    assert samples[("process_resident_memory_bytes", ())] > 10_000_000
    assert any(name.startswith("arena_judge_") for name, _ in samples)
