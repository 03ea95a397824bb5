"""The Anthropic stand-in's prompt cache (devkit/anthropic_cache.py) against the provider's own
bodies: what Anthropic documents, so that the caching tests measure something real."""

from __future__ import annotations

from agent_worker.domain import ChatMessage, Sampling, Tool
from agent_worker.providers.base import ProviderRequest
from devkit.anthropic_cache import MIN_CACHEABLE_TOKENS, PromptCache
from tests.agent_worker.providers.test_anthropic_messages import provider

LONG = "Answer briefly. " * 400  # well over the 1,024 tokens Anthropic caches at least
TOOLS = (Tool("time__now", "The time.", '{"type": "object"}'),)


def body(messages: list[ChatMessage], retention: str | None = "short") -> dict:  # type: ignore[type-arg]
    request = ProviderRequest(
        "claude-x", tuple(messages), Sampling(), TOOLS, cache_retention=retention
    )
    return provider().body(request)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def conversation(turns: int) -> list[ChatMessage]:
    messages = [ChatMessage("system", LONG)]
    for turn in range(turns):
        messages.append(ChatMessage("user", f"question {turn}"))
        if turn < turns - 1:
            messages.append(ChatMessage("assistant", f"answer {turn}"))
    return messages


def test_written_once_then_read_as_the_conversation_grows() -> None:
    cache = PromptCache(Clock())
    uncached, read, written = cache.account(body(conversation(1)))
    assert read == 0 and written >= MIN_CACHEABLE_TOKENS and uncached == 0
    uncached, read, written = cache.account(body(conversation(2)))
    # The first turn's prefix is found by looking back from the moved breakpoint.
    assert read >= MIN_CACHEABLE_TOKENS and written > 0 and uncached == 0


def test_nothing_is_cached_without_breakpoints_or_under_the_minimum() -> None:
    cache = PromptCache(Clock())
    for _ in range(2):
        assert cache.account(body(conversation(1), retention=None))[1:] == (0, 0)
    short = [ChatMessage("system", "Be brief."), ChatMessage("user", "hi")]
    for _ in range(2):
        assert cache.account(body(short))[1:] == (0, 0)


def test_entries_live_five_minutes_or_an_hour() -> None:
    clock = Clock()
    cache = PromptCache(clock)
    cache.account(body(conversation(1)))
    clock.now = 299
    assert cache.account(body(conversation(1)))[1] > 0  # read, and renewed for five minutes
    clock.now = 299 + 301
    assert cache.account(body(conversation(1)))[1] == 0  # expired: written anew
    cache.account(body(conversation(1), "long"))
    clock.now += 3000
    assert cache.account(body(conversation(1), "long"))[1] > 0


def test_a_changed_byte_before_the_breakpoint_is_a_miss() -> None:
    cache = PromptCache(Clock())
    cache.account(body(conversation(1)))
    changed = conversation(1)
    changed[0] = ChatMessage("system", LONG + "!")
    assert cache.account(body(changed))[1] == 0
