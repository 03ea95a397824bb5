"""`openai-compatible`: any OpenAI-compatible HTTP API (OpenAI, vLLM, Ollama, llama.cpp server…)."""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator
from typing import Any

import openai
import orjson
from openai import AsyncStream
from openai.types.chat import ChatCompletionChunk

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


def provider_error(error: openai.APIError) -> TurnError:
    """Maps the SDK's exceptions to the worker's errors (and so to gRPC codes)."""
    if isinstance(error, openai.APITimeoutError):
        return ProviderTimeoutError(f"provider timed out: {error.message}")
    if isinstance(error, openai.APIConnectionError):
        return ProviderUnavailableError(f"provider unreachable: {error.message}")
    if isinstance(error, openai.RateLimitError):
        return ProviderRateLimitedError(f"provider rate limit: {error.message}")
    if isinstance(error, openai.APIStatusError) and error.status_code in (400, 404, 413, 422):
        return ProviderRejectedError(f"provider rejected the request: {error.message}")
    return ProviderFailedError(f"provider failed: {error.message}")


class OpenAICompatibleProvider:
    supports_images = True

    def __init__(self, config: OpenAICompatibleProviderConfig) -> None:
        self._client = openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=config.api_key or "unused",
            max_retries=0,
            timeout=openai.Timeout(config.timeout_seconds, connect=config.connect_timeout_seconds),
        )

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await self._client.close()

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        try:
            chunks: AsyncStream[ChatCompletionChunk] = await self._client.chat.completions.create(
                model=request.model,
                messages=[message_payload(message) for message in request.messages],  # type: ignore[misc]
                stream=True,
                stream_options={"include_usage": True},
                **sampling_arguments(request.sampling),
            )  # type: ignore[call-overload]
        except openai.APIError as error:
            raise provider_error(error) from error
        finish_reason = FinishReason.STOP
        usage: Usage | None = None
        deltas = 0
        try:
            async for chunk in chunks:
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices[:1]:
                    if choice.delta.content:
                        deltas += 1
                        yield TextDelta(choice.delta.content)
                    if choice.finish_reason:
                        finish_reason = _FINISH_REASONS.get(choice.finish_reason, FinishReason.STOP)
        except openai.APIError as error:
            if type(error) is openai.APIConnectionError:  # connected before: it broke off
                raise ProviderFailedError(f"provider broke off its answer: {error}") from error
            raise provider_error(error) from error
        except Exception as error:  # the HTTP client's own errors when a stream breaks off
            raise ProviderFailedError(f"provider broke off its answer: {error}") from error
        finally:
            await chunks.close()
        yield TurnFinished(finish_reason, usage or Usage(0, deltas))
