"""Turns that keep their prompt inside the window (issue 30): counted before each call,
compacted into the session, recovered after an overflow, refused only when the input alone is
too large."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from agent_worker.agents import AgentRegistry
from agent_worker.compaction import SUMMARY_INSTRUCTIONS, Summarizer
from agent_worker.context_window import ContextWindows, Tokenizer
from agent_worker.domain import (
    ChatMessage,
    FinishReason,
    Sampling,
    StoredContext,
    ToolCall,
    TurnRequest,
    Usage,
)
from agent_worker.errors import (
    ContextOverflowError,
    InputTooLargeError,
    ProviderRateLimitedError,
)
from agent_worker.events import TextDelta, TurnEvent, TurnFinished
from agent_worker.metrics import WorkerMetrics
from agent_worker.prompt_trim import largest_clipped
from agent_worker.providers.base import ProviderEvent, ProviderRequest
from agent_worker.sessions.sqlite_store import SqliteSessionStore
from agent_worker.turn_context import SUMMARY_HEADING, TurnContext
from agent_worker.turn_runner import TurnRunner
from services.config import parse_config
from services.off_loop import OffLoop

WINDOW = 400
FITTED = f"{{ id: 'm', contextWindow: {WINDOW} }}"  # the model's catalog entry
READ_CALL = ChatMessage("assistant", "", tool_calls=(ToolCall("c1", "read", "{}"),))
HUGE_RESULT = ChatMessage("tool", "data " * 5000, tool_call_id="c1", name="read")


def words(text: str) -> int:
    return len(text.split())


class WordWindowProvider:
    """Counts a word a token (and 6 a message); refuses prompts over WINDOW; answers "ok"."""

    supports_images = gives_logprobs = False
    supports_tools = True

    def __init__(self) -> None:
        self.prompts: list[ProviderRequest] = []
        self.refused = 0

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        tokens = sum(words(m.text) + 6 for m in request.messages)
        if tokens + (request.sampling.max_tokens or 0) > WINDOW:
            self.refused += 1
            raise ContextOverflowError(
                f"This model's maximum context length is {WINDOW} tokens", WINDOW
            )
        self.prompts.append(request)
        if request.messages[0].text == SUMMARY_INSTRUCTIONS:
            yield TextDelta("summary of " + str(request.messages[1].text.count("user:")))
        else:
            yield TextDelta("ok")
        yield TurnFinished(FinishReason.STOP, Usage(tokens, 1))


def config(window: str) -> str:
    return (
        "{ models: { providers: { p: { api: 'echo', models: [ " + window + " ] } } },"
        " agents: { defaults: { model: 'p/m', systemPrompt: 'SYS' }, list: [ { id: 'main' } ] } }"
    )


def runner(
    store: SqliteSessionStore,
    provider: WordWindowProvider,
    window: str = "{ id: 'm' }",
    tokenizer: Tokenizer = words,
) -> TurnRunner:
    parsed = parse_config(config(window))
    return TurnRunner(
        AgentRegistry.from_config(parsed),
        {"p": provider},
        store,
        max_concurrent_turns=4,
        session_wait_timeout=5,
        windows=ContextWindows(parsed.models.providers, {"p": tokenizer}),
    )


async def turn(runner: TurnRunner, text: str, *context: ChatMessage) -> list[TurnEvent]:
    request = TurnRequest("main", "k", ChatMessage("user", text), tuple(context))
    return [event async for event in runner.run(request)]


async def test_a_known_window_compacts_before_it_overflows_and_keeps_every_message(
    store: SqliteSessionStore,
) -> None:
    provider = WordWindowProvider()
    turns = runner(store, provider, FITTED)
    for number in range(30):
        events = await turn(turns, f"question {number} " + "word " * 30)
        assert isinstance(events[-1], TurnFinished)
    assert provider.refused == 0
    assert len(await store.load("k")) == 60
    compactions = await store.compactions("k")
    assert compactions and all(c.covers % 2 == 0 for c in compactions)  # between turns
    stored = await store.load_context("k")
    assert stored.first_position == compactions[-1].covers
    last_prompt = provider.prompts[-1].messages
    assert last_prompt[0].text.startswith("SYS\n\n" + SUMMARY_HEADING)
    assert last_prompt[1:] == tuple(stored.messages[:-1])  # all but the last answer


async def test_an_unknown_window_is_learned_from_an_overflow_and_the_turn_answers(
    store: SqliteSessionStore,
) -> None:
    provider = WordWindowProvider()
    turns = runner(store, provider)
    for number in range(30):
        events = await turn(turns, f"question {number} " + "word " * 30)
        assert isinstance(events[-1], TurnFinished), number
    assert provider.refused == 1  # once; from then on the window is known
    assert turns.windows.window("p", "m") == WINDOW
    assert turns.metrics.overflow_recoveries_by("main", "ok")._value.get() == 1


async def test_only_an_input_larger_than_the_window_is_refused(
    store: SqliteSessionStore,
) -> None:
    provider = WordWindowProvider()
    turns = runner(store, provider, FITTED)
    await turn(turns, "hello")
    with pytest.raises(InputTooLargeError, match="maximum context length is 400 tokens"):
        await turn(turns, "word " * 500)
    events = await turn(turns, "still here?")
    assert isinstance(events[-1], TurnFinished)
    assert [m.text for m in await store.load("k")] == ["hello", "ok", "still here?", "ok"]


async def test_a_huge_old_tool_result_is_clipped_in_the_prompt_and_stored_whole(
    store: SqliteSessionStore,
) -> None:
    provider = WordWindowProvider()
    turns = runner(store, provider, FITTED)
    events = await turn(turns, "and?", ChatMessage("user", "read it"), READ_CALL, HUGE_RESULT)
    assert isinstance(events[-1], TurnFinished)
    sent = provider.prompts[-1].messages
    (tool_message,) = [m for m in sent if m.role == "tool"]  # clipped, so nothing to summarise
    assert "characters cut" in tool_message.text and sent[-2] == tool_message
    assert sent[-3] == READ_CALL
    stored = await store.load("k")
    assert [m.text for m in stored if m.role == "tool"] == [HUGE_RESULT.text]


async def test_a_client_tool_result_too_large_for_the_window_is_clipped_not_refused(
    store: SqliteSessionStore,
) -> None:
    provider = WordWindowProvider()
    turns = runner(store, provider, FITTED)
    await turn(turns, "read it")
    request = TurnRequest("main", "k", HUGE_RESULT, (READ_CALL,))
    events = [event async for event in turns.run(request)]
    assert isinstance(events[-1], TurnFinished)
    assert "characters cut" in provider.prompts[-1].messages[-1].text
    assert (await store.load("k"))[-2].text == HUGE_RESULT.text  # stored whole


async def test_an_overflow_that_names_no_window_still_teaches_one(
    store: SqliteSessionStore,
) -> None:
    class Unnamed(WordWindowProvider):
        async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
            try:
                async for event in super().stream(request):
                    yield event
            except ContextOverflowError:
                raise ContextOverflowError("input length exceeds the context length") from None

    provider = Unnamed()
    turns = runner(store, provider)
    for number in range(30):
        events = await turn(turns, f"question {number} " + "word " * 30)
        assert isinstance(events[-1], TurnFinished), number
    learned = turns.windows.window("p", "m")
    assert learned is not None and learned <= WINDOW


async def test_a_fallbacks_overflow_teaches_its_own_window_not_the_primarys(
    store: SqliteSessionStore,
) -> None:
    class RateLimited(WordWindowProvider):
        async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
            raise ProviderRateLimitedError("slow down", retry_after=600)  # next model at once
            yield TextDelta("never")

    parsed = parse_config(
        "{ models: { providers: {"
        " p: { api: 'echo', models: [ { id: 'm', contextWindow: 100000 } ] },"
        " q: { api: 'echo' } } },"
        " agents: { defaults: { model: { primary: 'p/m', fallbacks: ['q/f'] },"
        " systemPrompt: 'SYS' }, list: [ { id: 'main' } ] } }"
    )
    fallback = WordWindowProvider()  # refuses prompts over 400 words, naming its window
    turns = TurnRunner(
        AgentRegistry.from_config(parsed),
        {"p": RateLimited(), "q": fallback},
        store,
        max_concurrent_turns=4,
        session_wait_timeout=5,
        windows=ContextWindows(parsed.models.providers, {"p": words, "q": words}),
    )
    history = [
        ChatMessage("user" if n % 2 == 0 else "assistant", f"turn {n} " + "word " * 60)
        for n in range(10)
    ]
    events = await turn(turns, "and now?", *history)
    assert isinstance(events[-1], TurnFinished)
    assert fallback.refused == 1 and fallback.prompts  # compacted for the fallback, answered
    assert turns.windows.window("q", "f") == WINDOW
    assert turns.windows.window("p", "m") == 100_000  # the primary keeps its own window
    assert turns.windows.counter("p", "m").correction == 1.0


async def test_a_max_tokens_larger_than_the_window_is_capped_not_refused(
    store: SqliteSessionStore,
) -> None:
    provider = WordWindowProvider()  # refuses prompt + max_tokens over its window
    turns = runner(store, provider, FITTED)
    for asked in (4096, 10**9):
        request = TurnRequest(
            "main", "k", ChatMessage("user", "hello"), sampling=Sampling(max_tokens=asked)
        )
        events = [event async for event in turns.run(request)]
        assert isinstance(events[-1], TurnFinished)
        sent = provider.prompts[-1]
        assert sent.sampling.max_tokens is not None
        prompt = sum(words(m.text) + 6 for m in sent.messages)
        assert prompt + sent.sampling.max_tokens <= WINDOW
    assert provider.refused == 0


async def test_counting_a_huge_message_leaves_the_event_loop_free(
    store: SqliteSessionStore,
) -> None:
    counted_on: set[str] = set()

    def slow_tokenizer(text: str) -> int:  # as a native tokenizer: slow, without the GIL
        if len(text) > 100_000:
            counted_on.add(threading.current_thread().name)
            time.sleep(0.6)
        return words(text)

    turns = runner(store, WordWindowProvider(), FITTED, slow_tokenizer)
    longest_gap = 0.0

    async def tick() -> None:
        nonlocal longest_gap
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            longest_gap, last = max(longest_gap, now - last), now

    ticker = asyncio.create_task(tick())
    try:
        with pytest.raises(InputTooLargeError):
            await turn(turns, "word " * 500_000)
    finally:
        ticker.cancel()
    assert counted_on and threading.main_thread().name not in counted_on
    assert longest_gap < 0.3, longest_gap


def test_clipping_counts_each_message_about_once() -> None:
    calls = 0

    def counting(text: str) -> int:
        nonlocal calls
        calls += 1
        return words(text)

    parsed = parse_config(config(FITTED))
    windows = ContextWindows(parsed.models.providers, {"p": counting})
    history = [ChatMessage("user", "word " * 50) for _ in range(1000)]
    context = TurnContext(
        AgentRegistry.from_config(parsed).get("main"),
        "",
        StoredContext(history),
        (),
        ChatMessage("user", "hi"),
        windows,
        Summarizer({}, windows),  # clipping asks for no summary
        WorkerMetrics(),
        "k",
        OffLoop(),
    )
    largest_clipped(history, [], 1000 * 40, context._counts)  # each loses most of its text
    assert calls < 10 * len(history), calls


async def test_every_model_call_is_stored_with_its_turn_summaries_included(
    store: SqliteSessionStore, tmp_path: Path
) -> None:
    provider = WordWindowProvider()
    turns = runner(store, provider, FITTED)
    for number in range(12):
        await turn(turns, f"question {number} " + "word " * 30)
    summaries = [p for p in provider.prompts if p.messages[0].text == SUMMARY_INSTRUCTIONS]
    assert summaries, "no compaction: the test would not see summary calls"
    with sqlite3.connect(tmp_path / "s.db") as reader:
        rows = reader.execute(
            "SELECT request_id, call, identity, provider, model, input_tokens, output_tokens,"
            " estimated, cost_usd FROM usage_records ORDER BY rowid"
        ).fetchall()
    reported = [sum(words(m.text) + 6 for m in p.messages) for p in provider.prompts]
    assert [row[5] for row in rows] == reported  # as the provider counted, call by call
    assert all(row[6] == 1 and row[7] == 0 for row in rows)
    assert {row[2:5] for row in rows} == {("operator", "p", "m")}
    assert all(row[8] is None for row in rows)  # the catalog names no price
    turns_stored = {row[0] for row in rows}
    assert len(turns_stored) == 12 and len(rows) == 12 + len(summaries)
