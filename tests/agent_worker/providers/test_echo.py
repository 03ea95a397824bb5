from __future__ import annotations

import time

from agent_worker.domain import ChatMessage, FinishReason, Sampling
from agent_worker.events import TextDelta, TurnFinished
from agent_worker.providers.base import ProviderRequest
from agent_worker.providers.echo import EchoProvider
from services.provider_config import EchoProviderConfig


def request(*messages: ChatMessage, max_tokens: int | None = None) -> ProviderRequest:
    return ProviderRequest("echo", messages, Sampling(max_tokens=max_tokens))


async def collect(provider: EchoProvider, req: ProviderRequest) -> list:
    return [event async for event in provider.stream(req)]


async def test_template_fields_and_word_deltas() -> None:
    provider = EchoProvider(EchoProviderConfig(api="echo", reply="{system}|{turns}|{input}"))
    events = await collect(
        provider,
        request(
            ChatMessage("system", "sys"),
            ChatMessage("user", "q"),
            ChatMessage("assistant", "a"),
            ChatMessage("user", "two words"),
        ),
    )
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["sys|2|two ", "words"]
    finished = events[-1]
    assert isinstance(finished, TurnFinished) and finished.finish_reason is FinishReason.STOP
    assert finished.usage.completion_tokens == 2 and finished.usage.prompt_tokens == 5


async def test_max_tokens_cuts_with_length() -> None:
    provider = EchoProvider(EchoProviderConfig(api="echo", reply="a b c d"))
    events = await collect(provider, request(ChatMessage("user", "x"), max_tokens=2))
    assert [e.text for e in events[:-1]] == ["a ", "b "]
    assert events[-1].finish_reason is FinishReason.LENGTH


async def test_delay_between_deltas() -> None:
    provider = EchoProvider(EchoProviderConfig(api="echo", reply="a b c", delayMs=50))
    started = time.monotonic()
    await collect(provider, request(ChatMessage("user", "x")))
    assert time.monotonic() - started >= 0.1  # two gaps of 50 ms (a lower bound only)
