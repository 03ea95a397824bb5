"""`echo`: a deterministic, instant provider for tests and load tests (never a real agent's).

Offered tools, it follows a script: an input `call NAME {json arguments}` (several separated by
` ; `) answers with those calls, text before the first `call` as commentary; after a tool
result it answers `tool NAME said: RESULT` for each result since the last assistant message.
A script that starts with `loop ` makes the same calls again after every result (a model that
never stops calling tools).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncGenerator, Sequence

from agent_worker.domain import FinishReason, Usage
from agent_worker.events import TextDelta, ToolCallDelta, TurnFinished
from agent_worker.providers.base import (
    Embeddings,
    ProviderEvent,
    ProviderRequest,
    unit_length,
)
from services.provider_config import EchoProviderConfig

ECHO_DIMENSIONS = 16
_WORD_WITH_SPACE = re.compile(r"\S+\s*|\s+")


def render_reply(template: str, request: ProviderRequest) -> str:
    """Fills `{input}`, `{turns}` (earlier messages the model sees) and `{system}`."""
    messages = request.messages
    system = messages[0].text if messages and messages[0].role == "system" else ""
    earlier = [message for message in messages[:-1] if message.role != "system"]
    values = {
        "{input}": messages[-1].text if messages else "",
        "{turns}": str(len(earlier)),
        "{system}": system,
    }
    return re.sub(r"\{input\}|\{turns\}|\{system\}", lambda match: values[match.group(0)], template)


class EchoProvider:
    supports_images = False
    supports_tools = True
    gives_logprobs = False

    def __init__(self, config: EchoProviderConfig) -> None:
        self._template = config.reply
        self._delay_seconds = config.delay_ms / 1000

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def embed(self, model: str, inputs: Sequence[str], dimensions: int | None) -> Embeddings:
        """Deterministic vectors from each text's hash: the same text, the same vector."""
        size = dimensions or ECHO_DIMENSIONS
        vectors = []
        for text in inputs:
            seed = hashlib.sha256(text.encode()).digest()
            vector = [seed[index % len(seed)] / 255 - 0.5 for index in range(size)]
            vectors.append(unit_length(vector))
        return Embeddings(vectors, sum(len(text.split()) for text in inputs))

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        if request.tools and request.tool_choice.mode != "none":
            async for event in scripted_tool_turn(request):
                yield event
            return
        words = _WORD_WITH_SPACE.findall(render_reply(self._template, request))
        max_tokens = request.sampling.max_tokens
        finish_reason = FinishReason.STOP
        if max_tokens is not None and len(words) > max_tokens:
            words, finish_reason = words[:max_tokens], FinishReason.LENGTH
        for index, word in enumerate(words):
            if self._delay_seconds and index:
                await asyncio.sleep(self._delay_seconds)
            yield TextDelta(word)
        prompt_words = sum(len(message.text.split()) for message in request.messages)
        yield TurnFinished(finish_reason, Usage(prompt_words, len(words)))


_CALL = re.compile(r"call (\S+)\s*(\{.*?\})?\s*(?:;|$)", re.DOTALL)


async def scripted_tool_turn(request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
    messages = request.messages
    results = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.append(message)
    script = next((m.text for m in reversed(messages) if m.role == "user"), "")
    looping = script.startswith("loop ")
    if results and not looping:
        text = "; ".join(
            f"tool {m.name or m.tool_call_id} said: {m.text}" for m in reversed(results)
        )
        yield TextDelta(text)
        yield TurnFinished(FinishReason.STOP, Usage(len(messages), len(text.split())))
        return
    commentary, _, calls_text = script.removeprefix("loop ").partition("call ")
    if commentary.strip():
        yield TextDelta(commentary.strip())
    calls = _CALL.findall("call " + calls_text) if calls_text else []
    for index, (name, arguments) in enumerate(calls):
        arguments = arguments or "{}"
        half = len(arguments) // 2  # in two pieces, as a streaming model sends them
        yield ToolCallDelta(index, f"call_{index}", name, arguments[:half])
        yield ToolCallDelta(index, "", "", arguments[half:])
    reason = FinishReason.TOOL_CALLS if calls else FinishReason.STOP
    yield TurnFinished(reason, Usage(len(messages), len(calls)))
