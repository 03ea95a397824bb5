"""Windows, token counts, cut points, clipping and budgeted summaries (issue 30)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from agent_worker.agents import Agent, CompactionSettings
from agent_worker.compaction import (
    MAX_SUMMARY_CALLS,
    SUMMARY_INSTRUCTIONS,
    Summarizer,
    clip_text,
    cut_point,
    plain_digest,
    reserve_tokens,
)
from agent_worker.context_window import ContextWindows, TokenCounter
from agent_worker.domain import ChatMessage, FinishReason, Sampling, ToolCall, Usage
from agent_worker.errors import ContextOverflowError, ProviderFailedError
from agent_worker.events import TextDelta, TurnFinished
from agent_worker.providers.base import ProviderEvent, ProviderRequest
from agent_worker.providers.overflow import overflow_error
from agent_worker.providers.upstream_errors import status_error
from services.config import parse_config

OVERFLOWS = [
    ("This model's maximum context length is 4096 tokens. However, you requested 5000", 4096),
    ('{"error": {"code": "context_length_exceeded", "message": "too long"}}', None),
    ("request (2100 tokens) exceeds the available context size (2048 tokens), try again", 2048),
    (
        '{"error": {"type": "exceed_context_size_error", "n_ctx": 8192, "n_prompt_tokens": 9000}}',
        8192,
    ),
    ("prompt is too long: 210000 tokens > 200000 maximum", 200000),
    ("Requested tokens (2100) exceed context window of 2048", 2048),
    ("input length exceeds the context length", None),
]


@pytest.mark.parametrize(("text", "window"), OVERFLOWS)
def test_each_dialects_overflow_error_is_recognised_with_its_window(
    text: str, window: int | None
) -> None:
    error = overflow_error(text, "m")
    assert isinstance(error, ContextOverflowError) and error.window == window


@pytest.mark.parametrize("text", ["rate limit reached", "invalid model 'x'", "bad tool schema"])
def test_other_errors_are_not_overflows(text: str) -> None:
    assert overflow_error(text, "m") is None


def test_an_upstream_400_context_length_exceeded_maps_to_an_overflow() -> None:
    body = (
        b'{"error": {"message": "This model\'s maximum context length is 4096 tokens.",'
        b' "type": "invalid_request_error", "param": "messages",'
        b' "code": "context_length_exceeded"}}'
    )
    error = status_error(400, body)
    assert isinstance(error, ContextOverflowError) and error.window == 4096
    assert "maximum context length" in error.message
    assert not isinstance(status_error(400, b'{"error": {"message": "bad"}}'), ContextOverflowError)


def windows_for(config_text: str) -> ContextWindows:
    return ContextWindows(parse_config(config_text).models.providers)


def test_windows_come_from_the_catalog_the_embedded_context_and_what_was_learned() -> None:
    windows = windows_for(
        "{ models: { providers: {"
        " up: { api: 'openai-compatible', baseUrl: 'http://h/v1',"
        "       models: [ { id: 'big', contextWindow: 200000, maxTokens: 8192, cost: {} } ] },"
        " local: { api: 'llama-cpp', contextSize: 2048, maxTokens: 100,"
        "          models: [ { id: 'smol', contextWindow: 9999 } ] } } },"
        " agents: { defaults: { model: 'up/big' } } }"
    )
    assert windows.limits("up", "big").window == 200000
    assert windows.limits("up", "big").max_tokens == 8192
    assert windows.window("up", "other") is None  # not listed: unknown until an error names it
    assert windows.window("local", "smol") == 2048  # the loaded context is the hard limit
    assert windows.limits("local", "smol").max_tokens == 100
    windows.learn("up", "other", 32000)
    windows.learn("up", "other", 64000)  # the smallest learned stands
    assert windows.window("up", "other") == 32000
    assert windows.window("up", "big", cap=50000) == 50000  # contextTokens caps it
    assert windows.window("up", "unknown", cap=50000) == 50000


def test_estimates_follow_what_the_provider_reports() -> None:
    counter = TokenCounter()
    text = "word " * 300
    first = counter.text(text)
    for _ in range(8):
        counter.observe(counter.text(text), 300)
    assert first > 400 and 290 <= counter.text(text) <= 330
    counter.grow()
    assert counter.text(text) > 330
    exact = TokenCounter(lambda text: len(text.split()))
    exact.observe(1, 1000)  # a tokenizer's count is not corrected
    assert exact.text(text) == 300


def test_the_reserve_is_a_quarter_of_a_small_window_and_the_floor_of_a_large_one() -> None:
    assert reserve_tokens(2048, None, 20_000) == 512
    assert reserve_tokens(200_000, None, 20_000) == 20_000
    assert reserve_tokens(200_000, 32_000, 20_000) == 32_000  # the answer asked for wins
    # ... up to a quarter of the window: a larger answer is capped, never a negative budget
    assert reserve_tokens(4096, 2000, 1000) == 1024
    assert reserve_tokens(2048, 4096, 20_000) == 512
    assert reserve_tokens(2048, 10**9, 20_000) == 512


def test_a_cut_never_separates_a_tool_call_from_its_result() -> None:
    counter = TokenCounter(lambda text: len(text.split()))
    call = ChatMessage("assistant", "", tool_calls=(ToolCall("c1", "f", "{}"),))
    history = [
        ChatMessage("user", "one " * 50),
        call,
        ChatMessage("tool", "result " * 30, tool_call_id="c1"),
        ChatMessage("tool", "more " * 2, tool_call_id="c1"),
        ChatMessage("assistant", "answer " * 5),
    ]
    cut = cut_point(history, counter, keep_tokens=60)
    assert history[cut].role != "tool" and cut == 4  # the results go with their call
    assert cut_point(history, counter, keep_tokens=10_000) == 0


def test_clipping_keeps_head_and_tail_and_marks_the_cut() -> None:
    counter = TokenCounter()
    text = "HEAD " + "middle " * 5000 + " TAIL"
    clipped = clip_text(text, 200, counter)
    assert clipped.startswith("HEAD") and clipped.endswith("TAIL")
    assert "characters cut" in clipped and counter.text(clipped) <= 200
    assert clip_text("short", 200, counter) == "short"


class WindowedProvider:
    """Summarises by keeping lines with FACT; refuses any prompt over its window, as a real
    upstream does; counts one token per word."""

    supports_images = supports_tools = gives_logprobs = False

    def __init__(self, window: int, fail: bool = False) -> None:
        self.window, self.fail = window, fail
        self.prompts: list[int] = []

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        words = sum(len(m.text.split()) for m in request.messages)
        self.prompts.append(words)
        if self.fail:
            raise ProviderFailedError("summariser down")
        if words + (request.sampling.max_tokens or 0) > self.window:
            raise ContextOverflowError("too long", self.window)
        assert request.messages[0].text == SUMMARY_INSTRUCTIONS
        facts = [line for line in request.messages[1].text.split("\n") if "FACT" in line]
        kept = [word for line in facts for word in line.split() if "FACT" in word]
        yield TextDelta(" ".join(dict.fromkeys(kept)))
        yield TurnFinished(FinishReason.STOP, Usage(words, 1))


def agent(window_cap: int | None = None) -> Agent:
    return Agent(
        "a",
        "a",
        "p",
        "m",
        "",
        100,
        60,
        Sampling(),
        True,
        context_tokens=window_cap,
        compaction=CompactionSettings(timeout_seconds=5),
    )


async def test_history_far_larger_than_the_window_is_summarised_in_chunks_that_fit() -> None:
    provider = WindowedProvider(window=1000)
    windows = ContextWindows({}, {"p": lambda text: len(text.split())})
    windows.learn("p", "m", 1000)
    history = [ChatMessage("user", f"FACT{n} " + "filler " * 100) for n in range(50)]
    history.append(ChatMessage("tool", "x " * 1200, tool_call_id="c"))  # alone over the window
    summary = await Summarizer({"p": provider}, windows).summarize(agent(), "", history, 100)
    assert len(provider.prompts) > 1 and max(provider.prompts) + 100 <= 1000
    assert "FACT0" in summary and "FACT49" in summary  # the first chunk's facts reached the end


async def test_a_history_of_any_length_costs_at_most_a_few_model_calls() -> None:
    provider = WindowedProvider(window=1000)
    windows = ContextWindows({}, {"p": lambda text: len(text.split())})
    windows.learn("p", "m", 1000)
    history = [ChatMessage("user", f"FACT{n} hello there") for n in range(10_000)]
    summary = await Summarizer({"p": provider}, windows).summarize(agent(), "", history, 100)
    assert 1 <= len(provider.prompts) <= MAX_SUMMARY_CALLS
    # The oldest reach the summariser through the digest, the newest as they were said.
    assert "FACT0" in summary and "FACT9999" in summary


async def test_a_failing_summariser_leaves_a_plain_digest_not_a_dead_session() -> None:
    windows = ContextWindows({})
    windows.learn("p", "m", 1000)
    history = [ChatMessage("user", "remember the blue door"), ChatMessage("assistant", "ok")]
    summary = await Summarizer({"p": WindowedProvider(1000, fail=True)}, windows).summarize(
        agent(), "earlier: a red car", history, 100
    )
    assert "earlier: a red car" in summary and "remember the blue door" in summary


async def test_a_summariser_that_hangs_is_given_up_after_its_timeout() -> None:
    class Hanging(WindowedProvider):
        async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
            await asyncio.sleep(3600)
            yield TextDelta("never")

    windows = ContextWindows({})
    slow_agent = agent()
    slow_agent = Agent(
        **{
            **{f: getattr(slow_agent, f) for f in slow_agent.__slots__},
            "compaction": CompactionSettings(timeout_seconds=0.2),
        }
    )
    history = [ChatMessage("user", "keep this")]
    summary = await asyncio.wait_for(
        Summarizer({"p": Hanging(1000)}, windows).summarize(slow_agent, "", history, 50), 5
    )
    assert "keep this" in summary


def test_a_plain_digest_stays_within_its_tokens() -> None:
    counter = TokenCounter()
    history = [ChatMessage("user", f"message {n} " * 20) for n in range(200)]
    digest = plain_digest("before", history, 100, counter)
    assert counter.text(digest) <= 100 and digest.startswith("before")


async def test_an_empty_summary_is_a_failed_one_and_the_plain_digest_stands_in() -> None:
    windows = ContextWindows({})
    windows.learn("p", "m", 1000)
    # No FACT in what it reads: this summariser answers nothing at all.
    history = [ChatMessage("user", "remember the blue door"), ChatMessage("assistant", "ok")]
    summary = await Summarizer({"p": WindowedProvider(1000)}, windows).summarize(
        agent(), "earlier: a red car", history, 100
    )
    assert "earlier: a red car" in summary and "remember the blue door" in summary
