"""A real OpenAI-compatible HTTP server on loopback, for tests at the network boundary.

It is a test double for the *server*, never for our client: requests go
through httpx, sockets and HTTP parsing exactly as they would against vLLM.
Behaviour is a plain function ``handler(body) -> Reply``, so a test can answer
per model, fail on purpose (429 with Retry-After, 5xx, hang after headers,
malformed JSON) or record what it was sent.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON; str -> sent verbatim
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before the headers
    hang_after_headers_s: float = 0.0  # headers sent, then silence


def completion(text: str, *, model: str = "stub", prompt_tokens: int = 7) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(text.split()),
            "total_tokens": prompt_tokens + len(text.split()),
        },
    }


Handler = Callable[[str, dict[str, Any]], Reply]


def echo_handler(path: str, body: dict[str, Any]) -> Reply:
    last = body["messages"][-1]["content"]
    return Reply(body=completion(f"{body['model']} answers: {last}", model=body["model"]))


class OpenAIStub:
    """``with OpenAIStub(handler) as stub: stub.base_url`` -> ``http://127.0.0.1:PORT/v1``."""

    def __init__(self, handler: Handler = echo_handler, *, models: list[str] | None = None) -> None:
        """``models``: what ``GET /v1/models`` lists, as vLLM does; None answers 404 there,
        as servers without a model list do."""
        self.handler = handler
        self.models = models
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self._lock = threading.Lock()
        stub = self

        class _RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                with stub._lock:
                    stub.requests.append((self.path, {}, dict(self.headers)))
                if self.path.rstrip("/").endswith("/models") and stub.models is not None:
                    payload = json.dumps({"object": "list", "data": [
                        {"id": m, "object": "model", "owned_by": "stub"} for m in stub.models
                    ]}).encode()
                    self.send_response(200)
                else:
                    payload = b'{"error": "not found"}'
                    self.send_response(404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                # A start-up check leaves no pooled connection behind: a test that stops
                # the server later sees it gone on the next request, as with a real crash.
                self.send_header("connection", "close")
                self.close_connection = True
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                with stub._lock:
                    stub.requests.append((self.path, body, dict(self.headers)))
                reply = stub.handler(self.path, body)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                payload = (
                    reply.body.encode()
                    if isinstance(reply.body, str)
                    else json.dumps(reply.body if reply.body is not None else {}).encode()
                )
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                if reply.hang_after_headers_s:
                    self.wfile.flush()
                    time.sleep(reply.hang_after_headers_s)
                with contextlib.suppress(OSError):
                    self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _RequestHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def paths(self) -> list[str]:
        with self._lock:
            return [p for p, _, _ in self.requests]

    def __enter__(self) -> OpenAIStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
