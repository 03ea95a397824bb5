"""A small OpenAI-compatible upstream stand-in (raw ASGI on uvicorn, in a thread).

The requested `model` steers it: `status-<code>` answers that HTTP error, `break-after-<n>`
streams n chunks then drops the connection, `slow-<ms>` waits between chunks; anything else
streams "one two three" with usage. Every request body is recorded, and `disconnects` counts
clients that went away mid-answer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson
import uvicorn

from tests.support.processes import free_port

WORDS = ["one ", "two ", "three"]


class UpstreamStandIn:
    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self.disconnects = 0
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=self.port,
                log_level="error",
                lifespan="off",
                interface="asgi3",
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> UpstreamStandIn:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("upstream stand-in did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = orjson.loads(body)
        self.requests.append(request)
        model = str(request.get("model", ""))
        if model.startswith("status-"):
            status = int(model.removeprefix("status-"))
            error = {"error": {"message": f"upstream says {status}", "type": "test", "code": None}}
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": orjson.dumps(error)})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        delay = int(model.removeprefix("slow-")) / 1000 if model.startswith("slow-") else 0
        limit = (
            int(model.removeprefix("break-after-")) if model.startswith("break-after-") else None
        )
        words = WORDS * 100 if delay else WORDS
        try:
            for index, word in enumerate(words):
                if limit is not None and index == limit:
                    raise ConnectionAbortedError("the stand-in drops the connection on purpose")
                if delay:
                    await asyncio.sleep(delay)
                chunk = {
                    "id": "x",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                }
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"data: " + orjson.dumps(chunk) + b"\n\n",
                        "more_body": True,
                    }
                )
            final = {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
            }
            usage = {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [],
                "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
            }
            tail = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in (final, usage))
            await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n"})
        except (OSError, asyncio.CancelledError):
            self.disconnects += 1
            raise
