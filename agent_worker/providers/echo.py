"""`echo`: a deterministic, instant provider for tests and load tests (never a real agent's)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from agent_worker.domain import FinishReason, TextDelta, TurnFinished, Usage
from agent_worker.providers.base import ProviderEvent, ProviderRequest
from services.config import EchoProviderConfig

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
    gives_logprobs = False

    def __init__(self, config: EchoProviderConfig) -> None:
        self._template = config.reply
        self._delay_seconds = config.delay_ms / 1000

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
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
