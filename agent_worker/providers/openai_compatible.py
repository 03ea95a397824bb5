"""`openai-compatible`: any OpenAI-compatible HTTP API (OpenAI, vLLM, Ollama, llama.cpp server…).

One long-lived HTTP client per provider (`http_client`: keep-alive, a C parser); the request is
encoded with orjson and the SSE answer parsed a network read at a time, all the pieces of one
read in one JSON parse.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

import orjson
import yarl

from agent_worker.domain import FinishReason, Usage
from agent_worker.errors import (
    ProviderFailedError,
)
from agent_worker.events import TextDelta, TokenLogprob, ToolCallDelta, TurnFinished
from agent_worker.providers.base import (
    Embeddings,
    ProviderEvent,
    ProviderRequest,
    message_payload,
    sampling_arguments,
    token_logprob,
    tool_arguments,
    unit_length,
)
from agent_worker.providers.http_provider import NO_PROFILES, HttpProvider, sse_data
from services.provider_config import OpenAICompatibleProviderConfig

_FINISH_REASONS = {reason.value: reason for reason in FinishReason}
MAX_DELTA_CHARS = 1024  # so that a turn's event credit bounds its bytes as before
OPENAI_HOST = "api.openai.com"  # takes prompt_cache_key and 24-hour retention unless told


def _tool_call_piece(call: dict[str, Any]) -> ToolCallDelta:
    function = call.get("function") or {}
    return ToolCallDelta(
        int(call.get("index", 0)),
        call.get("id") or "",
        function.get("name") or "",
        function.get("arguments") or "",
    )


def _mark_cached_prefix(body: dict[str, Any], marker: dict[str, str], in_messages: bool) -> None:
    """`compat.cacheControlFormat: "anthropic"`: breakpoints after the last tool, the system
    prompt and the latest user message or tool result (not in messages when the route wants
    string content, `compat.requiresStringContent`)."""
    tools = body.get("tools")
    if tools:
        tools[-1] = {**tools[-1], "cache_control": marker}
    if not in_messages:
        return
    messages = body["messages"]
    system = next((m for m in messages if m["role"] == "system"), None)
    latest = next((m for m in reversed(messages) if m["role"] in ("user", "tool")), None)
    for message in (system, latest):
        if message is None:
            continue
        content = message["content"]
        if isinstance(content, str) and content:
            message["content"] = [{"type": "text", "text": content, "cache_control": marker}]
        elif isinstance(content, list) and content:
            content[-1] = {**content[-1], "cache_control": marker}


def cache_arguments(
    request: ProviderRequest, compat: dict[str, Any], official: bool
) -> dict[str, str]:
    """OpenAI caches prefixes on its own; a `prompt_cache_key` routes a session's requests to
    the same cache (where the model's `compat.supportsPromptCacheKey` says the upstream takes
    one: by default OpenAI's own host only, `official`), and `long` keeps it 24 hours where
    `compat.supportsLongCacheRetention` says so. The same for Chat Completions and Responses."""
    retention = request.cache_retention
    if retention == "none" or not request.cache_key:
        return {}
    if not compat.get("supportsPromptCacheKey", official):
        return {}
    caching = {"prompt_cache_key": request.cache_key}
    if retention == "long" and compat.get("supportsLongCacheRetention", official):
        caching["prompt_cache_retention"] = "24h"
    return caching


def _pooled(embedding: list[Any]) -> list[float]:
    """An answer's vector. llama-cpp-python's server answers one vector per token for a model
    without a pooling type (SmolLM2): those are mean-pooled to unit length, as the embedded
    provider pools."""
    if embedding and isinstance(embedding[0], list):
        width = len(embedding[0])
        sums = [sum(float(token[i]) for token in embedding) for i in range(width)]
        return unit_length([value / len(embedding) for value in sums])
    return [float(value) for value in embedding]


def usage_of(counts: dict[str, Any]) -> Usage:
    """OpenAI's usage object; cached tokens in `prompt_tokens_details` (`cache_write_tokens`
    where a route reports writes, as OpenRouter does)."""
    details = counts.get("prompt_tokens_details") or {}
    return Usage(
        counts.get("prompt_tokens") or 0,
        counts.get("completion_tokens") or 0,
        details.get("cached_tokens") or 0,
        details.get("cache_write_tokens") or 0,
    )


class SseBody:
    """An OpenAI-style SSE answer, parsed a network read at a time.

    Lines are split here rather than by a readline per line (a few Python calls each), and
    the text of chunks that arrived in one read goes on as one delta (up to MAX_DELTA_CHARS):
    they were all there at the same instant, so joining them costs no latency and saves the
    worker and the edge an event each.
    """

    def __init__(self) -> None:
        self.finish_reason = FinishReason.STOP
        self.usage: Usage | None = None
        self.deltas = 0  # content chunks seen: the usage when the provider reports none
        self.done = False  # [DONE] arrived
        self.events = 0  # data events read (an answer without any is not SSE at all)
        self.failure: ProviderFailedError | None = None  # an error event arrived
        self._pending = b""

    def feed(self, block: bytes) -> list[TextDelta | ToolCallDelta]:
        """The text of this read's complete lines; sets done, failure, finish_reason, usage."""
        data = self._pending + block if self._pending else block
        if data.startswith(b"data: ") and data.endswith(b"\n\n"):
            # The usual read: nothing but whole `data: {...}` events. The events' JSON joined by
            # commas is then the text between them (JSON holds no raw line break): one replace.
            inner = data[6:-2]
            done = inner == b"[DONE]"
            if done:
                inner = b""
            elif inner.endswith(b"\n\ndata: [DONE]"):
                inner, done = inner[:-14], True
            joined = inner.replace(b"\n\ndata: ", b",")
            if b"\n" not in joined and b"[DONE]" not in joined:
                self._pending = b""
                self.done = done
                return self._texts(orjson.loads(b"[%s]" % joined)) if joined else []
        payloads, self._pending = sse_data(data)
        if not payloads:
            return []
        joined = b",".join(payloads)
        if b"[DONE]" in joined:  # the last read, or that text inside a chunk: look closely
            for index, payload in enumerate(payloads):
                if payload.strip() == b"[DONE]":
                    self.done = True
                    joined = b",".join(payloads[:index])
                    break
        # One parse for the whole read: each chunk's own parse call cost more than its JSON.
        return self._texts(orjson.loads(b"[%s]" % joined)) if joined else []

    def _texts(self, chunks: list[Any]) -> list[TextDelta | ToolCallDelta]:
        self.events += len(chunks)
        texts: list[TextDelta | ToolCallDelta] = []
        parts: list[str] = []
        logprobs: list[TokenLogprob] = []
        size = 0
        try:
            for chunk in chunks:
                if "error" in chunk:
                    message = (chunk["error"] or {}).get("message", "an error event")
                    self.failure = ProviderFailedError(f"provider failed mid-answer: {message}")
                    break
                if counts := chunk.get("usage"):
                    self.usage = usage_of(counts)
                if choices := chunk.get("choices"):
                    choice = choices[0]
                    if (delta := choice.get("delta")) and (content := delta.get("content")):
                        self.deltas += 1
                        parts.append(content)
                        size += len(content)
                        if scores := choice.get("logprobs"):
                            logprobs += map(token_logprob, scores.get("content") or ())
                        if size >= MAX_DELTA_CHARS:
                            texts.append(TextDelta("".join(parts), tuple(logprobs)))
                            parts, logprobs, size = [], [], 0
                    if delta and (calls := delta.get("tool_calls")):
                        if parts:  # the commentary before the call goes first
                            texts.append(TextDelta("".join(parts), tuple(logprobs)))
                            parts, logprobs, size = [], [], 0
                        texts += map(_tool_call_piece, calls)
                    if reason := choice.get("finish_reason"):
                        self.finish_reason = _FINISH_REASONS.get(reason, FinishReason.STOP)
        except (AttributeError, LookupError, TypeError) as error:
            raise ProviderFailedError(f"provider sent a malformed chunk: {error!r}") from None
        if parts:
            texts.append(TextDelta("".join(parts), tuple(logprobs)))
        return texts


class OpenAICompatibleProvider(HttpProvider):
    gives_logprobs = True

    def __init__(
        self, config: OpenAICompatibleProviderConfig, profile_keys: Mapping[str, str] = NO_PROFILES
    ) -> None:
        url = embeddings_url = None
        if config.base_url:
            url = yarl.URL(config.base_url.rstrip("/") + "/chat/completions")
            embeddings_url = yarl.URL(config.base_url.rstrip("/") + "/embeddings")
        super().__init__(config, url, {}, profile_keys)
        self._official = url is not None and url.host == OPENAI_HOST  # OpenAI's own API
        self._embeddings = self.client(embeddings_url, "application/json")

    async def embed(self, model: str, inputs: Sequence[str], dimensions: int | None) -> Embeddings:
        """The upstream's `POST /embeddings`, all inputs in one request."""
        request: dict[str, Any] = {
            "model": model,
            "input": list(inputs),
            "encoding_format": "float",
        }
        if dimensions:
            request["dimensions"] = dimensions
        answer = await self.whole(orjson.dumps(request), self._embeddings)
        try:
            document = orjson.loads(answer)
            rows = sorted(document["data"], key=lambda row: row.get("index", 0))
            vectors = [_pooled(row["embedding"]) for row in rows]
            tokens = int((document.get("usage") or {}).get("prompt_tokens", 0))
        except (orjson.JSONDecodeError, LookupError, TypeError, ValueError) as error:
            raise ProviderFailedError(
                f"provider sent a malformed embeddings answer: {error!r}"
            ) from None
        if len(vectors) != len(inputs):
            raise ProviderFailedError(
                f"provider sent {len(vectors)} vectors for {len(inputs)} inputs"
            )
        return Embeddings(vectors, tokens)

    def _body(self, request: ProviderRequest) -> bytes:
        entry = self._config.model_entry(request.model)
        compat = entry.compat if entry is not None else {}
        body = {
            "model": request.model,
            "messages": [message_payload(message) for message in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            **sampling_arguments(request.sampling),
            **tool_arguments(request),
            **cache_arguments(request, compat, self._official),
        }
        if compat.get("cacheControlFormat") == "anthropic" and request.cache_key:
            marker = self._anthropic_marker(request.cache_retention, compat)
            if marker is not None:
                _mark_cached_prefix(body, marker, not compat.get("requiresStringContent"))
        return orjson.dumps(body)

    @staticmethod
    def _anthropic_marker(retention: str | None, compat: dict[str, Any]) -> dict[str, str] | None:
        """Anthropic's marker for routes that take it in chat messages (OpenRouter-style):
        an hour only where `compat.supportsLongCacheRetention` says the route keeps one."""
        if retention == "none":
            return None
        if retention == "long" and compat.get("supportsLongCacheRetention"):
            return {"type": "ephemeral", "ttl": "1h"}
        return {"type": "ephemeral"}

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        body = SseBody()
        encoded = await self.encoded(request, self._body)
        async with aclosing(self.exchange(encoded, profile=request.auth_profile)) as blocks:
            async for block in blocks:
                try:
                    deltas = body.feed(block)
                except ValueError as error:  # JSON that does not parse
                    raise ProviderFailedError(f"provider broke off its answer: {error}") from None
                for delta in deltas:
                    yield delta
                if body.failure is not None:
                    raise body.failure
                if body.done:
                    break
        if not body.done and not body.events:
            raise ProviderFailedError(
                "provider's answer held no SSE events: is baseUrl an OpenAI-compatible API?"
            )
        yield TurnFinished(body.finish_reason, body.usage or Usage(0, body.deltas, estimated=True))
