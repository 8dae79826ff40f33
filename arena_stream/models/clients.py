"""Model clients: one interface over OpenAI-compatible servers, in-process transformers and vLLM.

A client answers a conversation with a :class:`Completion` or raises
:class:`~arena_stream.retry.CallFailed` after its retries; it never returns an
empty answer as if it were one. Every client bounds its own in-flight calls
(``concurrency``), so a slow model queues its own work and nobody else's.

Versions: the target's trained versions are LoRA adapters, or whole checkpoints
when training with ``lora = false``. :meth:`ChatClient.use_version` switches
which version answers. An adapter: the openai backend registers it with the
server first (vLLM's runtime LoRA loading), the transformers backend loads it
into the shared in-process model. A whole checkpoint is served by loading it
(transformers, vllm) or, since an OpenAI-compatible server cannot load a
model at run time, by asking for it under its served name once the user
serves it.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import httpx
import msgspec
import structlog

from arena_stream.config import ModelConfig, api_key
from arena_stream.models.chat import served_messages
from arena_stream.models.retry import CallFailed, with_retries

log = structlog.get_logger(__name__)


class Completion(msgspec.Struct, kw_only=True):
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 1
    model: str = ""
    structured: bool = False  # the server constrained this reply to the requested JSON schema


class ChatClient(Protocol):
    spec: ModelConfig
    version: int

    async def complete(
        self, messages: list[dict[str, str]], *, max_tokens: int | None = None
    ) -> Completion: ...

    async def use_version(
        self, version: int, path: str, served_name: str | None = None,
        adapter: bool | None = None,
    ) -> None:
        """Play ``version``: a LoRA adapter (``adapter``) or a whole checkpoint at ``path``;
        None: tell from the directory."""
        ...

    async def ready(self) -> None:
        """Raise :class:`ModelUnavailable` unless the model can answer (checked at start)."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ScoresTokens(Protocol):
    """A client that can read its model's next-token probabilities (in-process models).

    Judges use it to read a verdict as an expected value instead of parsing text:
    the reply is started for the model (``reply_start``, e.g. ``{"score_1": ``)
    and the probabilities of each candidate token (e.g. the digits) are read at
    the next position. A judge checks for this capability, never for a client
    class, so any backend that can expose its probabilities can offer it.
    Failures raise :class:`~arena_stream.retry.CallFailed` like ``complete``.
    """

    async def token_probabilities(
        self, messages: list[dict[str, str]], reply_start: str, candidates: list[str]
    ) -> list[float]:
        """P(candidate's first token) after the chat prompt and ``reply_start``."""
        ...

    async def token_probabilities_twice(
        self, messages: list[dict[str, str]], reply_start: str, candidates: list[str],
        middle: str, pick: Callable[[list[float]], int],
    ) -> tuple[list[float], list[float]]:
        """Two readings: after ``reply_start``, then after ``reply_start +
        candidates[pick(first)] + middle`` (e.g. the second score after the first)."""
        ...


@runtime_checkable
class CountsTokens(Protocol):
    """A client whose model's tokenizer is at hand (in-process models).

    A judge that reads probabilities instead of asking for a reply gets no usage
    from its client; this gives it the exact prompt size of a scoring pass.
    """

    async def count_prompt_tokens(self, messages: list[dict[str, str]], reply_start: str) -> int:
        """Tokens of the chat prompt for ``messages`` followed by ``reply_start``."""
        ...


@runtime_checkable
class FollowsJsonSchema(Protocol):
    """A client that can ask its server for a reply constrained by a JSON schema.

    Where the server refuses the request (some OpenAI-compatible servers have no
    structured outputs, or not for every model), the client asks again without
    the schema and remembers the refusal, so the reply is free text
    (``Completion.structured`` False) and later calls skip the schema.
    """

    async def complete_json(
        self, messages: list[dict[str, str]], schema: dict[str, Any], *, name: str,
        max_tokens: int | None = None,
    ) -> Completion: ...


class ModelUnavailable(Exception):
    """A model that cannot be loaded or reached: a configuration error, not a bad message.

    ``reason`` says what is wrong and ``fix`` what to do about it; both are one line.
    """

    def __init__(self, label: str, reason: str, fix: str = "") -> None:
        super().__init__(f"{label}: {reason}" + (f" ({fix})" if fix else ""))
        self.label = label
        self.reason = reason
        self.fix = fix


def whole_checkpoint(path: str, adapter: bool | None) -> bool:
    """Whether a version is a whole checkpoint: as published, else told from its directory."""
    if adapter is not None:
        return not adapter
    from arena_stream.models.local import is_full_checkpoint

    return is_full_checkpoint(path)


def _with_system(spec: ModelConfig, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return served_messages(spec.system_prompt, messages)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class _Bounded:
    """Shared bookkeeping: the semaphore that bounds in-flight calls and the retry loop."""

    spec: ModelConfig
    version: int = 0

    def __init__(self, spec: ModelConfig, label: str) -> None:
        self.spec = spec
        self.label = label
        self._slots = asyncio.Semaphore(spec.concurrency)
        self.retries = 0

    async def _retrying(self, call: Any) -> tuple[Any, int]:
        def on_retry(exc: CallFailed, attempt: int, delay: float) -> None:
            self.retries += 1
            log.warning(
                "model.retry",
                model=self.label,
                reason=exc.reason,
                attempt=attempt,
                delay_s=round(delay, 3),
                error=exc.message,
            )

        async with self._slots:
            return await with_retries(
                call,
                max_retries=self.spec.max_retries,
                base=self.spec.backoff_s,
                cap=self.spec.backoff_max_s,
                on_retry=on_retry,
            )


class OpenAIClient(_Bounded):
    """Any OpenAI-compatible ``/v1/chat/completions`` server (vLLM, TGI, llama.cpp, ...)."""

    def __init__(
        self, spec: ModelConfig, label: str, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        super().__init__(spec, label)
        headers = {}
        key = api_key(spec)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._key = key
        self.served_model = spec.model
        self.schema_refused = False  # the server answered a JSON-schema request with 400
        self._http = httpx.AsyncClient(
            base_url=(spec.base_url or "").rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(spec.timeout_s, connect=min(10.0, spec.timeout_s)),
            limits=httpx.Limits(max_connections=spec.concurrency * 2),
            transport=transport,
        )

    def _clean(self, text: str) -> str:
        """Text for an error message with our API key masked (before any truncation).

        Some servers and proxies echo request headers in their error pages, and error
        messages travel on: to logs, failed generations and dead letters, which the log
        redaction does not cover.
        """
        return text.replace(self._key, "***") if self._key else text

    def _detail(self, response: httpx.Response) -> str:
        return self._clean(response.text)[:200]

    async def complete(
        self, messages: list[dict[str, str]], *, max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Completion:
        body: dict[str, Any] = {
            "model": self.served_model,
            "messages": _with_system(self.spec, messages),
            "max_tokens": max_tokens or self.spec.max_tokens,
            "temperature": self.spec.temperature,
            "top_p": self.spec.top_p,
            **self.spec.extra_body,
        }
        if self.spec.seed is not None:
            body["seed"] = self.spec.seed
        if response_format is not None:
            body["response_format"] = response_format
        started = time.perf_counter()
        data, attempts = await self._retrying(lambda: self._post_chat(body))
        return Completion(
            text=data["text"],
            prompt_tokens=data["prompt_tokens"],
            completion_tokens=data["completion_tokens"],
            latency_s=time.perf_counter() - started,
            attempts=attempts,
            model=self.served_model,
        )

    async def complete_json(
        self, messages: list[dict[str, str]], schema: dict[str, Any], *, name: str,
        max_tokens: int | None = None,
    ) -> Completion:
        """:class:`FollowsJsonSchema`: ``response_format`` with a strict JSON schema.

        A 400 or 422 to the schema request is followed by the same request
        without it; when that one succeeds the server is taken not to support
        structured outputs, remembered for this client (``schema_refused``), and
        logged once. When it fails too, the failure was not about the schema and
        nothing is remembered.
        """
        if self.schema_refused:
            return await self.complete(messages, max_tokens=max_tokens)
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": True},
        }
        try:
            completion = await self.complete(
                messages, max_tokens=max_tokens, response_format=response_format
            )
        except CallFailed as exc:
            if exc.reason not in ("http_400", "http_422"):
                raise
            try:
                plain = await self.complete(messages, max_tokens=max_tokens)
            except CallFailed as again:
                again.attempts += exc.attempts
                raise
            plain.attempts += exc.attempts
            if not self.schema_refused:
                self.schema_refused = True
                log.warning("model.schema_refused", model=self.label, error=exc.message,
                            fallback="free text")
            return plain
        completion.structured = True
        return completion

    async def _post_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            # The whole exchange, body included, is bounded: a server that sends headers
            # and then stalls must not hold the slot forever.
            response = await asyncio.wait_for(
                self._http.post("chat/completions", json=body), self.spec.timeout_s
            )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise CallFailed("timeout", f"no answer within {self.spec.timeout_s}s") from exc
        except httpx.ConnectError as exc:
            raise CallFailed(
                "connect", self._clean(f"cannot connect to {self.spec.base_url}: {exc}")
            ) from exc
        except httpx.TransportError as exc:
            raise CallFailed("transport", self._clean(f"{type(exc).__name__}: {exc}")) from exc
        status = response.status_code
        if status == 429:
            raise CallFailed("http_429", "rate limited", retry_after=_retry_after(response))
        if status >= 500:
            raise CallFailed(
                f"http_{status}", self._detail(response), retry_after=_retry_after(response)
            )
        if status >= 400:
            raise CallFailed(
                f"http_{status}", self._detail(response), retryable=status in (408, 409)
            )
        try:
            payload = response.json()
            choice = payload["choices"][0]
            text = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise CallFailed(
                "malformed", f"unexpected completion body: {self._detail(response)!r}"
            ) from exc
        if not isinstance(text, str) or not text.strip():
            raise CallFailed("empty", "the server returned an empty completion")
        usage = payload.get("usage") or {}
        return {
            "text": text.strip(),
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
        }

    async def ready(self) -> None:
        """The server answers ``GET /models`` and, when it lists models, lists ours.

        A server that is not up yet is waited for up to ``startup_timeout_s`` (a
        docker-compose start, a model still loading); a wrong key or a model the
        server does not serve fails at once.
        """
        url = f"{self.spec.base_url}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.spec.startup_timeout_s
        while True:
            try:
                response = await self._http.get("models", timeout=min(10.0, self.spec.timeout_s))
            except httpx.HTTPError as exc:
                if loop.time() >= deadline:
                    raise ModelUnavailable(
                        self.label,
                        self._clean(f"cannot reach {url}: {type(exc).__name__} {exc}".strip()),
                        "start the server, or fix base_url",
                    ) from None
                await asyncio.sleep(0.5)
                continue
            if response.status_code in (502, 503, 504) and loop.time() < deadline:
                await asyncio.sleep(0.5)  # a proxy in front of a server that is still loading
                continue
            break
        status = response.status_code
        if status in (401, 403):
            raise ModelUnavailable(
                self.label, f"{url} refused the API key (HTTP {status})",
                f"check the key in ${self.spec.api_key_env}" if self.spec.api_key_env
                else "set api_key_env to the variable that holds the key",
            )
        if status in (404, 405, 501):
            return  # a server without a model list; the first call will tell
        if status >= 400:
            raise ModelUnavailable(self.label, f"GET {url}/models: HTTP {status}: "
                                   f"{self._detail(response)}")
        try:
            served = [str(m["id"]) for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            return  # not the OpenAI shape; nothing to compare against
        if served and self.served_model not in served:
            raise ModelUnavailable(
                self.label,
                f"model {self.served_model!r} is not served at {url} "
                f"(it serves: {', '.join(served[:8])})",
                "fix the model name in the config",
            )

    async def use_version(self, version: int, path: str, served_name: str | None = None,
                          adapter: bool | None = None) -> None:
        """Register a LoRA adapter with a vLLM server, then ask for it by name.

        Needs the server started with ``--enable-lora`` and
        ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``. A server that already has the
        adapter answers 400 "already loaded", which is fine. A whole checkpoint
        cannot be loaded through the API: it is used once the server lists it
        under ``served_name``, else the call fails saying how to serve it.
        """

        name = served_name or f"{self.label}-v{version}"
        if whole_checkpoint(path, adapter):
            await self._use_served(version, path, name)
            return
        root = str(self._http.base_url).rstrip("/")
        response = await self._http.post(
            f"{root}/load_lora_adapter", json={"lora_name": name, "lora_path": path}
        )
        if response.status_code >= 400 and "already" not in response.text.lower():
            raise CallFailed(
                f"http_{response.status_code}",
                f"load_lora_adapter: {self._detail(response)}",
                retryable=False,
            )
        self.served_model = name
        self.version = version
        log.info("model.version", model=self.label, version=version, served=name)

    async def _use_served(self, version: int, path: str, name: str) -> None:
        response = await self._http.get("models", timeout=min(10.0, self.spec.timeout_s))
        try:
            served = [str(m["id"]) for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            served = []
        if name not in served:
            raise CallFailed(
                "full_version",
                f"{self.label} v{version} is a whole checkpoint ({path}); an OpenAI-compatible "
                f"server cannot load one at run time: serve it as {name!r} (vllm serve {path} "
                f"--served-model-name {name}) or train adapters (lora = true)",
                retryable=False,
            )
        self.served_model = name
        self.version = version
        log.info("model.version", model=self.label, version=version, served=name, full=True)

    async def aclose(self) -> None:
        await self._http.aclose()


class TransformersClient(_Bounded):
    """In-process model through :class:`~arena_stream.local_models.LocalEngine`, batched."""

    def __init__(self, spec: ModelConfig, label: str) -> None:
        super().__init__(spec, label)
        from arena_stream.models.local import LocalEngine

        self.base_engine = LocalEngine.shared(
            spec.model, max_batch=max(1, spec.concurrency), quantize=spec.quantize
        )
        self.engine = self.base_engine
        self.adapter: str | None = None

    async def complete(
        self, messages: list[dict[str, str]], *, max_tokens: int | None = None
    ) -> Completion:
        started = time.perf_counter()

        async def call() -> tuple[str, int, int]:
            try:
                await self.engine.wait_ready()
                prompt = self.engine.chat_prompt(_with_system(self.spec, messages))
                result = await self.engine.generate(
                    prompt,
                    max_tokens=max_tokens or self.spec.max_tokens,
                    temperature=self.spec.temperature,
                    top_p=self.spec.top_p,
                    adapter=self.adapter,
                )
            except Exception as exc:  # a failing local model is a failed call, never a crash
                raise CallFailed("local_error", f"{type(exc).__name__}: {exc}") from exc
            if not result[0].strip():
                raise CallFailed("empty", "the model produced an empty answer")
            return result

        (text, p_tok, c_tok), attempts = await self._retrying(call)
        return Completion(
            text=text,
            prompt_tokens=p_tok,
            completion_tokens=c_tok,
            latency_s=time.perf_counter() - started,
            attempts=attempts,
            model=self.spec.model,
        )

    async def token_probabilities(
        self, messages: list[dict[str, str]], reply_start: str, candidates: list[str]
    ) -> list[float]:
        """:class:`ScoresTokens`: one reading of the candidates' probabilities.

        Not bounded by ``concurrency``: the engine batches score requests itself
        (``max_batch``), and a request waiting in its queue costs nothing.
        """
        try:
            prompt = await self._scoring_prompt(messages, reply_start)
            return await self.engine.score(prompt, candidates, adapter=self.adapter)
        except Exception as exc:  # a failing local model is a failed call, never a crash
            raise CallFailed("local_error", f"{type(exc).__name__}: {exc}",
                             retryable=False) from exc

    async def token_probabilities_twice(
        self, messages: list[dict[str, str]], reply_start: str, candidates: list[str],
        middle: str, pick: Callable[[list[float]], int],
    ) -> tuple[list[float], list[float]]:
        """:class:`ScoresTokens`: two readings in one pass (the second reuses the cache)."""
        try:
            prompt = await self._scoring_prompt(messages, reply_start)
            return await self.engine.score_twice(
                prompt, candidates, middle, pick, adapter=self.adapter
            )
        except Exception as exc:
            raise CallFailed("local_error", f"{type(exc).__name__}: {exc}",
                             retryable=False) from exc

    async def _scoring_prompt(self, messages: list[dict[str, str]], reply_start: str) -> str:
        await self.engine.wait_ready()
        return self.engine.chat_prompt(_with_system(self.spec, messages)) + reply_start

    async def count_prompt_tokens(self, messages: list[dict[str, str]], reply_start: str) -> int:
        """:class:`CountsTokens`: the scoring prompt's length in the model's own tokens."""
        try:
            prompt = await self._scoring_prompt(messages, reply_start)
            return len(self.engine.tokenizer(prompt)["input_ids"])
        except Exception as exc:  # a failing local model is a failed call, never a crash
            raise CallFailed("local_error", f"{type(exc).__name__}: {exc}",
                             retryable=False) from exc

    async def ready(self) -> None:
        """Load the model now, so that a wrong name fails at start, not on every prompt."""
        try:
            await self.engine.wait_ready()
        except Exception as exc:
            cause = exc.__cause__ or exc
            raise ModelUnavailable(
                self.label, f"cannot load local model {self.spec.model!r}: {cause}",
                'use "smollm2" (bundled) or the path of a Hugging Face checkpoint',
            ) from None

    async def use_version(self, version: int, path: str, served_name: str | None = None,
                          adapter: bool | None = None) -> None:
        """An adapter goes on the shared base model; a whole checkpoint gets its own engine.

        The base engine may be shared with other players and the judge, so a
        whole checkpoint never replaces it: this client moves to an engine of
        its own, loaded before the switch (calls meanwhile still get answers).
        """
        from arena_stream.models.local import LocalEngine

        if whole_checkpoint(path, adapter):
            engine = LocalEngine.shared(path, max_batch=self.base_engine.max_batch,
                                        quantize=self.spec.quantize)
            await engine.wait_ready()
            self.engine, self.adapter, self.version = engine, None, version
            log.info("model.version", model=self.label, version=version, checkpoint=path)
            return
        name = f"{self.label}-v{version}"
        self.base_engine.load_adapter(name, path)
        self.engine, self.adapter, self.version = self.base_engine, name, version
        log.info("model.version", model=self.label, version=version, adapter=path)

    async def aclose(self) -> None:
        return None


class VLLMClient(_Bounded):
    """vLLM's in-process async engine (GPU machines; ``pip install arena-stream[vllm]``)."""

    def __init__(self, spec: ModelConfig, label: str) -> None:
        super().__init__(spec, label)
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
        except ImportError as exc:
            raise RuntimeError(
                "backend \"vllm\" needs the vllm extra: pip install 'arena-stream[vllm]'"
            ) from exc
        from arena_stream.models.local import resolve_checkpoint

        path = str(resolve_checkpoint(spec.model))
        self._engine = AsyncLLMEngine.from_engine_args(
            AsyncEngineArgs(model=path, enable_lora=True, max_loras=4)
        )
        self._lora: Any = None
        self._counter = 0

    async def complete(
        self, messages: list[dict[str, str]], *, max_tokens: int | None = None
    ) -> Completion:
        from vllm import SamplingParams

        started = time.perf_counter()
        params = SamplingParams(
            temperature=self.spec.temperature,
            top_p=self.spec.top_p,
            max_tokens=max_tokens or self.spec.max_tokens,
            seed=self.spec.seed,
        )

        async def call() -> Any:
            tokenizer = await self._engine.get_tokenizer()
            prompt = tokenizer.apply_chat_template(
                _with_system(self.spec, messages), tokenize=False, add_generation_prompt=True
            )
            self._counter += 1
            final = None
            async for out in self._engine.generate(
                prompt, params, f"{self.label}-{self._counter}", lora_request=self._lora
            ):
                final = out
            if final is None or not final.outputs[0].text.strip():
                raise CallFailed("empty", "vLLM produced an empty answer")
            return final

        final, attempts = await self._retrying(call)
        out = final.outputs[0]
        return Completion(
            text=out.text.strip(),
            prompt_tokens=len(final.prompt_token_ids or []),
            completion_tokens=len(out.token_ids),
            latency_s=time.perf_counter() - started,
            attempts=attempts,
            model=self.spec.model,
        )

    async def ready(self) -> None:
        return None  # the engine loaded in the constructor; a failure raised there

    async def use_version(self, version: int, path: str, served_name: str | None = None,
                          adapter: bool | None = None) -> None:
        """An adapter: a LoRA request on the engine. A whole checkpoint: the engine is reloaded.

        One GPU rarely holds two engines, so the old one is shut down first;
        calls made during the reload wait for the new one.
        """

        if not whole_checkpoint(path, adapter):
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest(served_name or f"{self.label}-v{version}", version, path)
            self.version = version
            return
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        shutdown = getattr(self._engine, "shutdown", None)
        if callable(shutdown):
            shutdown()
        self._engine = await asyncio.to_thread(
            AsyncLLMEngine.from_engine_args,
            AsyncEngineArgs(model=path, enable_lora=True, max_loras=4),
        )
        self._lora = None
        self.version = version
        log.info("model.version", model=self.label, version=version, checkpoint=path)

    async def aclose(self) -> None:
        return None


def build_client(spec: ModelConfig, label: str) -> ChatClient:
    """The client for a player or judge spec."""
    if spec.backend == "openai":
        return OpenAIClient(spec, label)
    if spec.backend == "transformers":
        return TransformersClient(spec, label)
    if spec.backend == "vllm":
        return VLLMClient(spec, label)
    if spec.backend == "reference":
        from arena_stream.models.reference import ReferenceClient

        return ReferenceClient(spec, label)
    raise ValueError(f"unknown backend {spec.backend!r}")
