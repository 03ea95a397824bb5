"""A small OpenAI-compatible upstream stand-in (raw ASGI on uvicorn, in a thread).

The requested `model` steers it: `status-<code>` answers that HTTP error, `redirect` answers
308 to another address, `not-sse` answers a plain JSON completion, `break-after-<n>`
streams n chunks then drops the connection, `slow-<ms>` waits between its 300 chunks,
`big-<n>` streams n chunks of about 1 KB as fast as the client takes them; `tools-<n>` says
"Let me check." and calls the first offered tool n times (ids `call_up_<i>`, arguments in two
fragments each), or, when the last message is a tool result, answers with the results; anything
else
streams "one two three" with usage. It records every request body, how many chunks it sent,
and when each client went away before the end of its answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import Any, Self

import orjson
import uvicorn

from devkit.processes import free_port

# Of the 11 prompt tokens it reports, those it says came from its prompt cache.
CACHED_TOKENS = 4
WORDS = ["one ", "two ", "three"]
BIG_CHUNK_TEXT = "x" * 1000


def _chunk(
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    top_logprobs: int | None = None,
) -> bytes:
    """A chunk; with `top_logprobs` (when the request asked for logprobs) each token gets a
    logprob of -0.5 and that many alternatives."""
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    if top_logprobs is not None and delta.get("content"):
        token = delta["content"]
        score = {"token": token, "logprob": -0.5, "bytes": list(token.encode())}
        choice["logprobs"] = {"content": [{**score, "top_logprobs": [score] * top_logprobs}]}
    chunk = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [choice],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _usage_chunk(model: str, usage: dict[str, Any]) -> bytes:
    """The last chunk of a stream that asked for usage: no choices, the usage."""
    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": model}
    return b"data: " + orjson.dumps({**chunk, "choices": [], "usage": usage}) + b"\n\n"


async def read_json(receive: Any) -> Any:
    """An ASGI request's JSON body."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return orjson.loads(body)


class ThreadedServer:
    """An ASGI app (`app`) served by uvicorn in a thread, on a free port of 127.0.0.1."""

    path_prefix = "/v1"

    def __init__(self, tls: tuple[str, str] | None = None) -> None:
        """`tls`: (certificate file, key file) to serve https instead of http."""
        self.port = free_port()
        self.scheme = "https" if tls else "http"
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="error",
            lifespan="off",
            interface="asgi3",
            ssl_certfile=tls[0] if tls else None,
            ssl_keyfile=tls[1] if tls else None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{self.path_prefix}"

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise NotImplementedError


class UpstreamStandIn(ThreadedServer):
    def __init__(self, tls: tuple[str, str] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[bytes, bytes]] = []  # in the order of `requests`
        self.disconnect_times: list[float] = []
        self.chunks_sent = 0
        self.usages: list[dict[str, Any]] = []  # the usage it reported, answer by answer
        super().__init__(tls)

    @property
    def disconnects(self) -> int:
        return len(self.disconnect_times)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = await read_json(receive)
        self.request_headers.append(dict(scope["headers"]))
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
        if model in ("redirect", "not-sse"):
            redirect = model == "redirect"
            headers = [(b"location", b"https://elsewhere.example/v1/chat/completions")]
            completion = {"choices": [{"index": 0, "message": {"content": "json, not SSE"}}]}
            await send(
                {
                    "type": "http.response.start",
                    "status": 308 if redirect else 200,
                    "headers": headers if redirect else [(b"content-type", b"application/json")],
                }
            )
            await send(
                {
                    "type": "http.response.body",
                    "body": b"" if redirect else orjson.dumps(completion),
                }
            )
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        top_logprobs = (request.get("top_logprobs") or 0) if request.get("logprobs") else None
        if model.startswith("tools-"):
            answer = asyncio.ensure_future(self._tool_answer(request, model, send))
        else:
            answer = asyncio.ensure_future(self._answer(request, model, send, top_logprobs))
        gone = asyncio.ensure_future(receive())  # http.disconnect, when the client leaves early
        await asyncio.wait((answer, gone), return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            self.disconnect_times.append(time.monotonic())
            answer.cancel()
        gone.cancel()
        await asyncio.gather(answer, return_exceptions=True)
        if not answer.cancelled() and isinstance(answer.exception(), ConnectionAbortedError):
            raise answer.exception()  # type: ignore[misc]

    def prompt_usage(self, request: dict[str, Any]) -> dict[str, Any]:
        """The prompt's side of an answer's usage: fixed counts (11 tokens, CACHED_TOKENS of
        them cached) that the tests were written against; a caching stand-in counts them."""
        return {"prompt_tokens": 11, "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS}}

    async def _answer(
        self, request: dict[str, Any], model: str, send: Any, top_logprobs: int | None = None
    ) -> None:
        async def body(data: bytes, more: bool = True) -> None:
            if model == "split":  # SSE lines cut across separate network writes
                while len(data) > 7:
                    await send({"type": "http.response.body", "body": data[:7], "more_body": True})
                    await asyncio.sleep(0.001)
                    data = data[7:]
            await send({"type": "http.response.body", "body": data, "more_body": more})

        delay = int(model.removeprefix("slow-")) / 1000 if model.startswith("slow-") else 0
        limit = (
            int(model.removeprefix("break-after-")) if model.startswith("break-after-") else None
        )
        if model.startswith("big-"):
            words = [BIG_CHUNK_TEXT] * int(model.removeprefix("big-"))
        else:
            words = WORDS * 100 if delay else WORDS
        for index, word in enumerate(words):
            if limit is not None and index == limit:
                raise ConnectionAbortedError("the stand-in drops the connection on purpose")
            if delay:
                await asyncio.sleep(delay)
            await body(_chunk(model, {"content": word}, None, top_logprobs))
            self.chunks_sent += 1
        usage = self.prompt_usage(request)
        usage["completion_tokens"] = len(words)
        usage["total_tokens"] = usage["prompt_tokens"] + len(words)
        self.usages.append(usage)
        tail = _chunk(model, {}, "length") + _usage_chunk(model, usage)
        await body(tail + b"data: [DONE]\n\n", more=False)

    async def _tool_answer(self, request: dict[str, Any], model: str, send: Any) -> None:
        messages = request["messages"]
        chunks: list[bytes] = []
        if messages[-1]["role"] == "tool":
            results = [m["content"] for m in messages if m["role"] == "tool"]
            chunks.append(_chunk(model, {"role": "assistant", "content": "results: "}))
            chunks.append(_chunk(model, {"content": ", ".join(map(str, results))}))
            chunks.append(_chunk(model, {}, "stop"))
        else:
            name = request["tools"][0]["function"]["name"]
            chunks.append(_chunk(model, {"role": "assistant", "content": "Let me check."}))
            for index in range(int(model.removeprefix("tools-"))):
                first = {
                    "index": index,
                    "id": f"call_up_{index}",
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
                chunks.append(_chunk(model, {"tool_calls": [first]}))
                for piece in ('{"city": ', f'"Paris {index}"}}'):
                    fragment = {"index": index, "function": {"arguments": piece}}
                    chunks.append(_chunk(model, {"tool_calls": [fragment]}))
            chunks.append(_chunk(model, {}, "tool_calls"))
        if (request.get("stream_options") or {}).get("include_usage"):
            usage = self.prompt_usage(request)
            usage["completion_tokens"] = len(chunks) - 1  # a token per chunk
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            self.usages.append(usage)
            chunks.append(_usage_chunk(model, usage))
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(0.001)  # in separate reads, as a model writes them
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


# OpenAI's prompt caching, as its guide describes it: prompts of 1,024 tokens or more, the
# longest prefix seen before read back in steps of 128 tokens, per `prompt_cache_key`.
MIN_CACHED_PROMPT = 1024
CACHE_STEP = 128


class CachingUpstreamStandIn(UpstreamStandIn):
    """The stand-in with OpenAI's prompt cache: a prompt is its tools and messages as JSON, a
    token about four bytes of it; `cached_tokens` is the longest 128-token step of it (from
    1,024 tokens) that an earlier request with the same `prompt_cache_key` began with."""

    def __init__(self) -> None:
        self.cached_prefixes: dict[str, set[bytes]] = {}  # prompt_cache_key: prefix digests
        super().__init__()

    def prompt_usage(self, request: dict[str, Any]) -> dict[str, Any]:
        prompt = orjson.dumps([request.get("tools") or [], request["messages"]])
        tokens = len(prompt) // 4
        seen = self.cached_prefixes.setdefault(str(request.get("prompt_cache_key", "")), set())
        steps = range(MIN_CACHED_PROMPT, tokens + 1, CACHE_STEP)
        digests = [hashlib.blake2b(prompt[: n * 4], digest_size=16).digest() for n in steps]
        cached = max((n for n, d in zip(steps, digests, strict=True) if d in seen), default=0)
        seen.update(digests)
        return {"prompt_tokens": tokens, "prompt_tokens_details": {"cached_tokens": cached}}
