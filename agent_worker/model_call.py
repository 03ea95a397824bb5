"""One call of a model, as traces show it: a `chat <model>` client span (OpenTelemetry's GenAI
conventions) around the provider's stream, current while the request goes out so that an HTTP
upstream receives its `traceparent`. While tracing is off the provider's own stream is used as
it is: no extra step per event.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import orjson

from agent_worker.events import TextDelta, TurnFinished
from agent_worker.providers.base import Provider, ProviderEvent, ProviderRequest
from services import tracing
from services.spans import Attributes, AttributeValue, Span


def model_stream(
    provider_name: str, provider: Provider, request: ProviderRequest
) -> AsyncGenerator[ProviderEvent, None]:
    """The provider's answer to `request` (the caller closes it)."""
    if not tracing.active():
        return provider.stream(request)
    return _traced(provider_name, provider, request)


def _request_attributes(provider_name: str, request: ProviderRequest) -> Attributes:
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider_name,
        "gen_ai.request.model": request.model,
    }
    sampling = request.sampling
    if sampling.max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = sampling.max_tokens
    if sampling.temperature is not None:
        attributes["gen_ai.request.temperature"] = sampling.temperature
    if request.tools:
        attributes["clawgate.tools"] = len(request.tools)
    if tracing.capture_content():
        attributes["gen_ai.input.messages"] = orjson.dumps(
            [{"role": message.role, "content": message.text} for message in request.messages]
        ).decode()
    return attributes


async def _traced(
    provider_name: str, provider: Provider, request: ProviderRequest
) -> AsyncGenerator[ProviderEvent, None]:
    span = tracing.span(
        f"chat {request.model}", "client", _request_attributes(provider_name, request)
    )
    texts: list[str] | None = [] if tracing.capture_content() else None
    events = provider.stream(request)
    try:
        with span.current():  # the request goes out during the first step
            event = await anext(events, None)
        while event is not None:
            if isinstance(event, TurnFinished):
                _finished(span, request, event)
            elif texts is not None and isinstance(event, TextDelta):
                texts.append(event.text)
            yield event
            event = await anext(events, None)
        if texts is not None:
            output = [{"role": "assistant", "content": "".join(texts)}]
            span.set("gen_ai.output.messages", orjson.dumps(output).decode())
    except GeneratorExit:
        raise
    except BaseException as error:
        span.fail(str(error) or type(error).__name__, type(error).__name__)
        raise
    finally:
        await events.aclose()
        span.end()


def _finished(span: Span, request: ProviderRequest, finished: TurnFinished) -> None:
    span.set("gen_ai.response.model", request.model)
    span.set("gen_ai.response.finish_reasons", [finished.finish_reason.value])
    span.set("gen_ai.usage.input_tokens", finished.usage.prompt_tokens)
    span.set("gen_ai.usage.output_tokens", finished.usage.completion_tokens)
