"""Summaries that stand for a session's older messages, made so that they always fit.

A summary re-distils the previous summary with the newly cut messages, in chunks that each fit
the summarising model's window; a message too large for any chunk is clipped (head and tail
kept) in what the summariser sees. When the summarising model fails, a plain digest (the previous
summary and the start of each user message) stands in: a session never dies of its length.

One compaction asks the model at most `MAX_SUMMARY_CALLS` times, within one
`compaction.timeoutSeconds`: messages older than those calls can read go into a plain digest
first, so that no request, however many messages it carries, holds the model for long.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from typing import assert_never

from agent_worker.agents import Agent
from agent_worker.context_window import MESSAGE_OVERHEAD_TOKENS, ContextWindows, Counts
from agent_worker.domain import ChatMessage, Sampling, Usage
from agent_worker.errors import ContextOverflowError, ProviderFailedError, TurnError
from agent_worker.events import ReasoningDelta, TextDelta, ToolCallDelta, TurnFinished
from agent_worker.light_prompts import is_light
from agent_worker.model_call import model_stream
from agent_worker.providers.base import Provider, ProviderRequest
from services.off_loop import OffLoop

log = logging.getLogger("clawgate.worker.compaction")

SUMMARY_INSTRUCTIONS = (
    "You keep the memory of a conversation between a user and an assistant. Write a concise"
    " summary of the conversation below for the assistant to continue it: keep every fact the"
    " user stated (names, numbers, dates, preferences), decisions, open questions and the tool"
    " results that matter. Write only the summary."
)
CLIPPED_MARK = "\n[… {count} characters cut …]\n"
# The smallest piece of a message kept at each end when it is clipped.
_MIN_CLIP_CHARACTERS = 64
_OVERFLOW_RETRIES = 3
# What a summary assumes of a model whose window is not known yet.
UNKNOWN_WINDOW = 8192
_DIGEST_LINE_CHARACTERS = 160
MAX_SUMMARY_CALLS = 3


def reserve_tokens(window: int, answer_tokens: int | None, floor: int) -> int:
    """Tokens kept free for the answer: the larger of the answer asked for and
    reserveTokensFloor, never more than a quarter of the window (a larger answer is capped to
    what the window holds beside the prompt, see TurnContext.answer_room)."""
    return min(max(floor, answer_tokens or 0), window // 4)


def summary_tokens(budget: int) -> int:
    """The most a summary may take of a prompt budget."""
    return max(64, min(budget // 8, 4096))


def clip_text(text: str, max_tokens: int, counter: Counts) -> str:
    """`text` within `max_tokens`, its head and tail kept and the cut marked."""
    tokens = counter.text(text)
    if tokens <= max_tokens:
        return text
    keep = max(int(len(text) * max_tokens / tokens) - len(CLIPPED_MARK), 2 * _MIN_CLIP_CHARACTERS)
    while True:
        head, tail = keep // 2, keep - keep // 2
        clipped = text[:head] + CLIPPED_MARK.format(count=len(text) - keep) + text[-tail:]
        if counter.text(clipped) <= max_tokens or keep <= 2 * _MIN_CLIP_CHARACTERS:
            return clipped
        keep = keep * 3 // 4


def clipped_message(message: ChatMessage, max_tokens: int, counter: Counts) -> ChatMessage:
    text = clip_text(message.text, max_tokens, counter)
    return message if text is message.text else dataclasses.replace(message, text=text)


def cut_point(history: Sequence[ChatMessage], counter: Counts, keep_tokens: int) -> int:
    """Where the kept tail starts: the newest messages within `keep_tokens`, never starting at a
    tool result (its call stays with it, on the summarised side)."""
    kept = 0
    cut = len(history)
    while cut > 0 and kept + (tokens := counter.message(history[cut - 1])) <= keep_tokens:
        kept += tokens
        cut -= 1
    while cut < len(history) and history[cut].role == "tool":
        cut += 1
    return cut


def rendered(message: ChatMessage) -> str:
    """A message as the summariser reads it."""
    if message.role == "tool":
        return f"tool {message.name or message.tool_call_id} result: {message.text}"
    calls = "".join(f"\n(called {call.name} {call.arguments})" for call in message.tool_calls)
    return f"{message.role}: {message.text}{calls}"


def plain_digest(
    previous: str, messages: Sequence[ChatMessage], max_tokens: int, counter: Counts
) -> str:
    """A summary made without a model: the previous one and the start of each user message."""
    lines = [previous] if previous else []
    lines += [
        "user said: " + " ".join(message.text.split())[:_DIGEST_LINE_CHARACTERS]
        for message in messages
        if message.role == "user" and message.text.strip()
    ]
    digest = "\n".join(lines)
    # The newest lines matter most when it must be cut: clip keeps both ends.
    return clip_text(digest, max_tokens, counter)


# Told each model call's usage: provider, model, usage.
UsageRecorder = Callable[[str, str, Usage], None]


class Summarizer:
    """Makes summaries with the agent's model or its `compaction.model`."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        windows: ContextWindows,
        off_loop: OffLoop | None = None,
    ) -> None:
        self._providers = providers
        self._windows = windows
        self._off_loop = off_loop or OffLoop(threads=1, name="summary")

    async def summarize(
        self,
        agent: Agent,
        previous: str,
        messages: Sequence[ChatMessage],
        max_tokens: int,
        instructions: str = "",
        on_usage: UsageRecorder | None = None,
    ) -> str:
        """The summary; `on_usage` is told each summary call's usage."""
        provider_name, model = agent.provider, agent.model
        if agent.compaction.model:
            provider_name, _, model = agent.compaction.model.partition("/")
        counter = self._windows.counter(provider_name, model)
        window = self._windows.window(provider_name, model) or self._windows.window(
            agent.provider, agent.model, agent.context_tokens
        )
        budget = (window or UNKNOWN_WINDOW) - max_tokens
        budget -= counter.text(SUMMARY_INSTRUCTIONS + instructions) + 3 * MESSAGE_OVERHEAD_TOKENS
        light = is_light(messages, counter.tokenized)
        summary, pending = await self._off_loop.run(
            light, _first_reading, previous, messages, budget, max_tokens, counter
        )
        chunk_budget = budget
        calls = 0
        try:
            async with asyncio.timeout(agent.compaction.timeout_seconds):
                while pending:
                    calls += 1
                    if calls > MAX_SUMMARY_CALLS + _OVERFLOW_RETRIES:
                        raise TimeoutError  # every retry halved the chunks: give up on the model
                    room = max(chunk_budget - counter.text(summary), 64)
                    chunk, pending = await self._off_loop.run(
                        light, _take_chunk, pending, room, counter
                    )
                    try:
                        answer = await self._ask(
                            provider_name, model, summary, chunk, max_tokens, instructions, on_usage
                        )
                    except ContextOverflowError:
                        pending = chunk + pending  # again, in smaller pieces
                        chunk_budget //= 2
                        continue
                    if not answer:  # the chunk would be lost while the record claims it
                        raise ProviderFailedError("the summary came back empty")
                    summary = clip_text(answer, max_tokens, counter)  # it must fit the next
        except (TurnError, TimeoutError) as error:
            log.warning(
                "summary failed (%s); a plain digest stands in: agent=%s",
                getattr(error, "message", None) or type(error).__name__,
                agent.id,
            )
            summary = ""
        if not summary.strip():
            return await self._off_loop.run(
                light, plain_digest, previous, messages, max_tokens, counter
            )
        return summary

    async def _ask(
        self,
        provider_name: str,
        model: str,
        previous: str,
        chunk: list[str],
        max_tokens: int,
        instructions: str,
        on_usage: UsageRecorder | None,
    ) -> str:
        parts = [f"Summary so far:\n{previous}\n"] if previous else []
        parts.append("Conversation:\n" + "\n".join(chunk))
        if instructions:
            parts.append(f"\nAlso: {instructions}")
        request = ProviderRequest(
            model,
            (
                ChatMessage("system", SUMMARY_INSTRUCTIONS),
                ChatMessage("user", "\n".join(parts)),
            ),
            Sampling(temperature=0.2, max_tokens=max_tokens),
        )
        texts: list[str] = []
        provider = self._providers[provider_name]
        async with aclosing(model_stream(provider_name, provider, request)) as events:
            async for event in events:
                match event:
                    case TextDelta():
                        texts.append(event.text)
                    case TurnFinished():
                        if on_usage is not None:
                            on_usage(provider_name, model, event.usage)
                    case ToolCallDelta() | ReasoningDelta():
                        pass  # no tools were offered; the summary is the text
                    case _:
                        assert_never(event)
        return "".join(texts).strip()


def _first_reading(
    previous: str,
    messages: Sequence[ChatMessage],
    budget: int,
    max_tokens: int,
    counter: Counts,
) -> tuple[str, list[str]]:
    """The summary to start from and the messages the model reads: those older than the
    model's calls can read go into a plain digest first."""
    pending = [rendered(message) for message in messages]
    readable = _newest_within(pending, MAX_SUMMARY_CALLS * max(budget - max_tokens, 64), counter)
    if not readable:
        return previous, pending
    return plain_digest(previous, messages[:readable], max_tokens, counter), pending[readable:]


def _take_chunk(pending: list[str], room: int, counter: Counts) -> tuple[list[str], list[str]]:
    """The first messages that fit in `room` tokens (at least one, clipped when alone it does
    not fit), and the rest."""
    chunk: list[str] = []
    used = 0
    for index, text in enumerate(pending):
        tokens = counter.text(text) + 1
        if used + tokens > room:
            if not chunk:
                return [clip_text(text, room, counter)], pending[index + 1 :]
            return chunk, pending[index:]
        chunk.append(text)
        used += tokens
    return chunk, []


def _newest_within(pending: Sequence[str], tokens: int, counter: Counts) -> int:
    """Where the newest texts within `tokens` start (0 when all of them fit)."""
    used = 0
    for index in range(len(pending) - 1, -1, -1):
        used += counter.text(pending[index]) + 1
        if used > tokens:
            return min(index + 1, len(pending) - 1)  # the newest is read, clipped if need be
    return 0
