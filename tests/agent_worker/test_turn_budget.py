"""A turn with a budget (RunTurnRequest.budget, from the edge's limits) cannot spend past it:
its answer is capped to what is left after the prompt, in tokens or in USD at the catalog's
prices, and a turn whose prompt alone does not fit is refused before it starts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import cast

import pytest

from agent_worker.agent_tools import AgentTools
from agent_worker.agents import Agent, AgentRegistry
from agent_worker.context_window import MESSAGE_OVERHEAD_TOKENS, ContextWindows, TokenCounter
from agent_worker.domain import ChatMessage, FinishReason, Tool, ToolCall, TurnBudget, TurnRequest
from agent_worker.errors import OverBudgetError
from agent_worker.events import TextDelta, ToolRunFinished, ToolRunStarted, TurnEvent, TurnFinished
from agent_worker.providers.echo import EchoProvider
from agent_worker.sessions.sqlite_store import SqliteSessionStore
from agent_worker.turn_runner import TurnRunner
from services.config import parse_config
from services.provider_config import EchoProviderConfig

ANSWER_WORDS = 50
# One USD per prompt token, two per answer token: the sums below are easy to follow.
CONFIG = parse_config(
    "{ models: { providers: { p: { api: 'echo', reply: '" + "w " * ANSWER_WORDS + "',"
    " models: [ { id: 'm', cost: { input: 1000000, output: 2000000 } } ] } } },"
    " agents: { defaults: { model: 'p/m', systemPrompt: 'be brief' }, list: [ { id: 'main' } ] } }"
)
# What the worker counts of the prompt with a tokenizer of words: 'be brief' and 'go', each
# with a message's overhead. The echo provider reports the words alone (3).
PROMPT = 3 + 2 * MESSAGE_OVERHEAD_TOKENS
REPORTED_PROMPT = 3


class OneClock:
    """The agent's own tools, reduced to one that answers at once (AgentTools' two methods)."""

    TOOL = Tool("clock__now", "The time now.", '{"type": "object", "properties": {}}')

    async def offer(self, agent: Agent) -> tuple[Tool, ...]:
        return (self.TOOL,)

    async def run_step(
        self, calls: list[ToolCall], steps: list[ChatMessage]
    ) -> AsyncIterator[ToolRunStarted | ToolRunFinished]:
        for call in calls:
            yield ToolRunStarted(call.id, call.name, call.arguments)
            steps.append(ChatMessage("tool", "noon", tool_call_id=call.id, name=call.name))
            yield ToolRunFinished(call.id, call.name, "noon", 0, is_error=False)


def runner(store: SqliteSessionStore, tools: OneClock | None = None) -> TurnRunner:
    providers = CONFIG.models.providers
    echo = providers["p"]
    assert isinstance(echo, EchoProviderConfig)
    return TurnRunner(
        AgentRegistry.from_config(CONFIG),
        {"p": EchoProvider(echo)},
        store,
        max_concurrent_turns=2,
        session_wait_timeout=5,
        windows=ContextWindows(providers, {"p": words}),
        tools=cast(AgentTools, tools),
    )


def words(text: str) -> int:
    return len(text.split())


async def run(store: SqliteSessionStore, budget: TurnBudget | None) -> list[TurnEvent]:
    request = TurnRequest("main", "k", ChatMessage("user", "go"), budget=budget)
    return [event async for event in runner(store).run(request)]


def answer_of(events: list[TurnEvent]) -> tuple[int, TurnFinished]:
    finished = events[-1]
    assert isinstance(finished, TurnFinished)
    words = "".join(e.text for e in events if isinstance(e, TextDelta)).split()
    return len(words), finished


async def test_without_a_budget_the_answer_is_whole_and_its_spend_reported(
    store: SqliteSessionStore,
) -> None:
    words, finished = answer_of(await run(store, None))
    assert words == ANSWER_WORDS and finished.finish_reason == FinishReason.STOP
    assert finished.spent.tokens == REPORTED_PROMPT + ANSWER_WORDS
    assert finished.spent.cost_usd == pytest.approx(REPORTED_PROMPT + 2 * ANSWER_WORDS)


async def test_a_token_budget_caps_the_answer_to_what_the_prompt_leaves(
    store: SqliteSessionStore,
) -> None:
    words, finished = answer_of(await run(store, TurnBudget(tokens=PROMPT + 9)))
    assert words == 9 and finished.finish_reason == FinishReason.LENGTH
    assert finished.usage.completion_tokens == 9
    assert finished.spent.tokens == REPORTED_PROMPT + 9 <= PROMPT + 9
    assert len(await store.load("k")) == 2  # stored like any turn


async def test_a_usd_budget_caps_the_answer_at_the_catalogs_prices(
    store: SqliteSessionStore,
) -> None:
    # The prompt costs PROMPT USD; 11.5 more pays for five answer tokens at 2 USD each.
    words, finished = answer_of(await run(store, TurnBudget(usd=PROMPT + 11.5)))
    assert words == 5 and finished.finish_reason == FinishReason.LENGTH
    assert finished.spent.cost_usd == pytest.approx(REPORTED_PROMPT + 2 * 5)


async def test_no_room_for_the_prompt_is_refused_before_the_turn_starts(
    store: SqliteSessionStore,
) -> None:
    request = TurnRequest(
        "main", "k", ChatMessage("user", "go"), budget=TurnBudget(tokens=PROMPT, usd=1000)
    )
    events = []
    with pytest.raises(OverBudgetError, match="quota"):
        async for event in runner(store).run(request):
            events.append(event)
    assert events == []  # not even TurnStarted: the edge answers 429 insufficient_quota
    assert await store.load("k") == []


async def test_a_budget_spent_between_tool_steps_ends_the_turn_at_length(
    store: SqliteSessionStore,
) -> None:
    request = TurnRequest("main", "k", ChatMessage("user", "checking call clock__now"))
    counter = TokenCounter(words)
    first_prompt = counter.messages(
        [ChatMessage("system", "be brief"), request.input]
    ) + counter.tools((OneClock.TOOL,))
    # Room for the first step's call, not for the second step's longer prompt.
    budget = TurnBudget(tokens=first_prompt + 5)
    events = [e async for e in runner(store, OneClock()).run(replace(request, budget=budget))]
    finished = events[-1]
    assert isinstance(finished, TurnFinished) and finished.finish_reason == FinishReason.LENGTH
    assert [type(e) for e in events if isinstance(e, ToolRunStarted | ToolRunFinished)] == [
        ToolRunStarted,
        ToolRunFinished,
    ]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "checking"
    assert finished.tool_calls == ()  # the agent's own call is not the client's
    assert finished.spent.tokens == finished.usage.total_tokens  # one model call, counted
    # Stored as far as it went: the call and its result, to be continued by the next turn.
    assert [m.role for m in await store.load("k")] == ["user", "assistant", "tool"]
