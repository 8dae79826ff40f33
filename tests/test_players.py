"""The OpenAI-compatible client against a real local HTTP server that misbehaves on purpose."""

from __future__ import annotations

import asyncio
import io
import time

import pytest

from arena_stream.config import ModelConfig
from arena_stream.logging import configure, redact
from arena_stream.models.clients import OpenAIClient
from arena_stream.models.retry import CallFailed, backoff_delay
from tests.openai_stub import OpenAIStub, Reply, completion


def spec(url: str, **kw: object) -> ModelConfig:
    base = dict(backend="openai", base_url=url, model="m", backoff_s=0.01, backoff_max_s=0.05,
                max_retries=2, timeout_s=2.0)
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


class Script:
    """Replies in order, then the last one forever."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)

    def __call__(self, path: str, body: dict) -> Reply:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


async def ask(url: str, **kw: object) -> tuple:
    client = OpenAIClient(spec(url, **kw), "p")
    try:
        return await client.complete([{"role": "user", "content": "hi"}]), client
    finally:
        await client.aclose()


async def test_answer_tokens_and_system_prompt() -> None:
    with OpenAIStub() as stub:
        done, _ = await ask(stub.base_url, system_prompt="be brief", temperature=0.3, seed=5)
    assert done.text == "m answers: hi" and done.completion_tokens == 3 and done.prompt_tokens == 7
    body = stub.requests[0][1]
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert body["temperature"] == 0.3 and body["seed"] == 5


@pytest.mark.parametrize("failure", [
    Reply(status=500, body="boom"),
    Reply(status=503, body="busy"),
    Reply(body="{not json"),
    Reply(body={"choices": []}),
    Reply(body=completion("   ")),
])
async def test_transient_failures_are_retried(failure: Reply) -> None:
    with OpenAIStub(Script(failure, Reply(body=completion("fine")))) as stub:
        done, _ = await ask(stub.base_url)
    assert done.text == "fine" and done.attempts == 2 and len(stub.requests) == 2


async def test_429_honours_retry_after() -> None:
    script = Script(Reply(status=429, headers={"Retry-After": "0.4"}), Reply(body=completion("ok")))
    with OpenAIStub(script) as stub:
        started = time.monotonic()
        done, _ = await ask(stub.base_url, backoff_max_s=5.0)
    assert done.text == "ok" and time.monotonic() - started >= 0.4


async def test_gives_up_after_max_retries_with_reason() -> None:
    with OpenAIStub(lambda p, b: Reply(status=502, body="bad gateway")) as stub:
        with pytest.raises(CallFailed) as err:
            await ask(stub.base_url, max_retries=2)
    assert err.value.reason == "http_502" and err.value.attempts == 3 and len(stub.requests) == 3


async def test_client_errors_are_not_retried() -> None:
    with OpenAIStub(lambda p, b: Reply(status=400, body="bad request")) as stub:
        with pytest.raises(CallFailed) as err:
            await ask(stub.base_url)
    assert err.value.reason == "http_400" and len(stub.requests) == 1


async def test_server_that_hangs_after_headers_times_out() -> None:
    hang = Reply(body=completion("late"), hang_after_headers_s=3.0)
    with OpenAIStub(lambda p, b: hang) as stub:
        started = time.monotonic()
        with pytest.raises(CallFailed) as err:
            await ask(stub.base_url, timeout_s=0.5, max_retries=0)
    assert err.value.reason == "timeout" and time.monotonic() - started < 2.5


async def test_connection_refused() -> None:
    from arena_stream.kafka.broker import free_port

    with pytest.raises(CallFailed) as err:
        await ask(f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
    assert err.value.reason == "connect" and err.value.attempts == 2


async def test_concurrency_is_bounded_per_client() -> None:
    with OpenAIStub(lambda p, b: Reply(body=completion("ok"), delay_s=0.2)) as stub:
        client = OpenAIClient(spec(stub.base_url, concurrency=2), "p")
        started = time.monotonic()
        await asyncio.gather(*[client.complete([{"role": "user", "content": "x"}])
                               for _ in range(4)])
        await client.aclose()
    assert time.monotonic() - started >= 0.38  # 4 calls, 2 at a time, 0.2 s each


async def test_api_key_sent_from_environment_and_never_logged(monkeypatch) -> None:
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("ARENA_TEST_KEY", secret)
    out = io.StringIO()
    configure("debug", stream=out)
    redact(secret)
    with OpenAIStub(Script(Reply(status=500, body=f"echo {secret}"),
                           Reply(body=completion("ok")))) as stub:
        await ask(stub.base_url, api_key_env="ARENA_TEST_KEY")
    assert stub.requests[0][2]["Authorization"] == f"Bearer {secret}"
    assert "model.retry" in out.getvalue() and secret not in out.getvalue()
    configure("info")


def test_backoff_is_capped_and_jittered() -> None:
    import random

    rng = random.Random(1)
    delays = [backoff_delay(n, 0.5, 4.0, rng) for n in range(1, 10)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) == len(delays)
