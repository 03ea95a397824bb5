"""`openai-compatible`: any OpenAI-compatible HTTP API (OpenAI, vLLM, Ollama, llama.cpp server…).

One long-lived aiohttp session per provider (keep-alive; its HTTP parser is in C), the request
encoded with orjson and the SSE answer parsed line by line: a turn costs the worker little more
than the bytes it forwards.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import orjson
import yarl

from agent_worker.domain import ChatMessage, FinishReason, Sampling, TextDelta, TurnFinished, Usage
from agent_worker.errors import (
    ProviderFailedError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    TurnError,
)
from agent_worker.providers.base import ProviderEvent, ProviderRequest
from services.config import OpenAICompatibleProviderConfig

_FINISH_REASONS = {reason.value: reason for reason in FinishReason}
_REJECTED = frozenset({400, 404, 413, 422})
_READ_BUFFER = 1 << 20
_MAX_LINE = 8 << 20
MAX_DELTA_CHARS = 1024  # so that a turn's event credit bounds its bytes as before


def message_payload(message: ChatMessage) -> dict[str, Any]:
    if not message.images:
        return {"role": message.role, "content": message.text}
    parts: list[dict[str, Any]] = [{"type": "text", "text": message.text}] if message.text else []
    for image in message.images:
        url = f"data:{image.media_type};base64,{base64.b64encode(image.data).decode()}"
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return {"role": message.role, "content": parts}


def sampling_arguments(sampling: Sampling) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    for name in (
        "temperature",
        "top_p",
        "max_tokens",
        "seed",
        "presence_penalty",
        "frequency_penalty",
    ):
        value = getattr(sampling, name)
        if value is not None:
            arguments[name] = value
    if sampling.stop:
        arguments["stop"] = list(sampling.stop)
    if sampling.response_format == "json_schema" and sampling.json_schema:
        json_schema = orjson.loads(sampling.json_schema)
        arguments["response_format"] = {"type": "json_schema", "json_schema": json_schema}
    elif sampling.response_format:
        arguments["response_format"] = {"type": sampling.response_format}
    return arguments


def status_error(status: int, body: bytes) -> TurnError:
    """Maps an upstream HTTP error to the worker's errors (and so to gRPC codes)."""
    try:
        detail = orjson.loads(body)["error"]["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        detail = body[:200].decode(errors="replace") or f"HTTP {status}"
    if status == 429:
        return ProviderRateLimitedError(f"provider rate limit: {detail}")
    if status in _REJECTED:
        return ProviderRejectedError(f"provider rejected the request ({status}): {detail}")
    return ProviderFailedError(f"provider failed ({status}): {detail}")


class SseBody:
    """An OpenAI-style SSE answer, parsed a network read at a time.

    Lines are split here rather than by aiohttp's readline (a few Python calls per line), and
    the text of chunks that arrived in one read goes on as one delta (up to MAX_DELTA_CHARS):
    they were all there at the same instant, so joining them costs no latency and saves the
    worker and the edge an event each.
    """

    def __init__(self) -> None:
        self.finish_reason = FinishReason.STOP
        self.usage: Usage | None = None
        self.deltas = 0  # content chunks seen: the usage when the provider reports none
        self.done = False  # [DONE] arrived
        self.failure: ProviderFailedError | None = None  # an error event arrived
        self._pending = b""

    def feed(self, block: bytes) -> list[str]:
        """The text of this read's complete lines; sets done, failure, finish_reason, usage."""
        lines = (self._pending + block).split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > _MAX_LINE:
            raise ProviderFailedError("provider sent an SSE line over 8 MiB")
        texts: list[str] = []
        parts: list[str] = []
        size = 0
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                self.done = True
                break
            chunk = orjson.loads(data)
            if "error" in chunk:
                message = (chunk["error"] or {}).get("message", "an error event")
                self.failure = ProviderFailedError(f"provider failed mid-answer: {message}")
                break
            if chunk.get("usage"):
                counts = chunk["usage"]
                self.usage = Usage(
                    counts.get("prompt_tokens", 0), counts.get("completion_tokens", 0)
                )
            for choice in (chunk.get("choices") or ())[:1]:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    self.deltas += 1
                    parts.append(content)
                    size += len(content)
                    if size >= MAX_DELTA_CHARS:
                        texts.append("".join(parts))
                        parts, size = [], 0
                if choice.get("finish_reason"):
                    self.finish_reason = _FINISH_REASONS.get(
                        choice["finish_reason"], FinishReason.STOP
                    )
        if parts:
            texts.append("".join(parts))
        return texts


class OpenAICompatibleProvider:
    supports_images = True

    def __init__(self, config: OpenAICompatibleProviderConfig) -> None:
        self._url = yarl.URL(config.base_url.rstrip("/") + "/chat/completions")
        self._headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if config.api_key:
            self._headers["authorization"] = f"Bearer {config.api_key}"
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=config.connect_timeout_seconds,
            sock_read=config.timeout_seconds,
        )
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on first use: it belongs to the running event loop
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),  # an API client keeps no cookies
                connector=aiohttp.TCPConnector(limit=0),
                read_bufsize=_READ_BUFFER,
            )
        return self._session

    async def start(self) -> None:
        self._client()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _body(self, request: ProviderRequest) -> bytes:
        return orjson.dumps(
            {
                "model": request.model,
                "messages": [message_payload(message) for message in request.messages],
                "stream": True,
                "stream_options": {"include_usage": True},
                **sampling_arguments(request.sampling),
            }
        )

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        answered = False
        body = SseBody()
        try:
            async with self._client().post(self._url, data=self._body(request)) as response:
                if response.status >= 400:
                    raise status_error(response.status, await response.read())
                answered = True
                async for block in response.content.iter_any():
                    for text in body.feed(block):
                        yield TextDelta(text)
                    if body.failure is not None:
                        raise body.failure
                    if body.done:
                        break
        except TimeoutError as error:
            raise ProviderTimeoutError(f"provider timed out: {type(error).__name__}") from error
        except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as error:
            raise ProviderUnavailableError(f"provider unreachable: {error}") from error
        except (aiohttp.ClientError, ValueError) as error:
            what = "broke off its answer" if answered else "failed"
            raise ProviderFailedError(f"provider {what}: {error!r}") from error
        yield TurnFinished(body.finish_reason, body.usage or Usage(0, body.deltas))
