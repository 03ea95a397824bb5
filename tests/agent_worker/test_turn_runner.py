from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import pytest

from agent_worker.agents import AgentRegistry, merged_sampling
from agent_worker.deadline import ProviderDeadline
from agent_worker.domain import Caller, ChatMessage, FinishReason, Sampling, TurnRequest, Usage
from agent_worker.errors import (
    InvalidTurnError,
    ProviderFailedError,
    TurnTimeoutError,
    UnknownAgentError,
    WorkerAtCapacityError,
)
from agent_worker.events import TextDelta, TurnFinished, TurnStarted
from agent_worker.providers.base import ProviderEvent, ProviderRequest
from agent_worker.sessions.sqlite_store import SqliteSessionStore
from agent_worker.turn_runner import TurnRunner
from services.config import parse_config


class ScriptedProvider:
    """Records the prompts it gets; streams `words`, optionally failing or hanging midway."""

    supports_images = False
    supports_tools = False
    gives_logprobs = False

    def __init__(
        self, words: list[str], fail_after: int | None = None, hang_after: int | None = None
    ) -> None:
        self.words, self.fail_after, self.hang_after = words, fail_after, hang_after
        self.prompts: list[ProviderRequest] = []
        self.closed = asyncio.Event()

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        self.prompts.append(request)
        try:
            for index, word in enumerate(self.words):
                if index == self.fail_after:
                    raise ProviderFailedError("boom")
                if index == self.hang_after:
                    await asyncio.sleep(3600)
                yield TextDelta(word)
            yield TurnFinished(FinishReason.STOP, Usage(1, len(self.words)))
        finally:
            self.closed.set()


CONFIG = parse_config(
    "{ models: { providers: { p: { api: 'echo' } } }, agents: { defaults: { model: 'p/m', "
    "systemPrompt: 'SYS', sampling: { temperature: 0.3 } }, list: [ { id: 'main' } ] } }"
)


def runner(
    provider: ScriptedProvider, store: SqliteSessionStore, capacity: int = 4, queued: int = 256
) -> TurnRunner:
    return TurnRunner(
        AgentRegistry.from_config(CONFIG),
        {"p": provider},
        store,
        max_concurrent_turns=capacity,
        max_queued_turns=queued,
        session_wait_timeout=5,
    )


def request(text: str, *context: ChatMessage, key: str = "k", extra: str = "") -> TurnRequest:
    return TurnRequest(
        "main", key, ChatMessage("user", text), tuple(context), extra, Sampling(max_tokens=9)
    )


async def test_a_turn_streams_and_is_stored(store: SqliteSessionStore) -> None:
    provider = ScriptedProvider(["Hel", "lo"])
    events = [e async for e in runner(provider, store).run(request("hi", extra="EXTRA"))]
    assert isinstance(events[0], TurnStarted) and events[0].model == "p/m"
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hel", "lo"]
    assert isinstance(events[-1], TurnFinished)
    prompt = provider.prompts[0]
    assert prompt.messages[0] == ChatMessage("system", "SYS\n\nEXTRA")
    assert prompt.sampling.temperature == 0.3 and prompt.sampling.max_tokens == 9
    assert [(m.role, m.text) for m in await store.load("k")] == [
        ("user", "hi"),
        ("assistant", "Hello"),
    ]


async def test_stored_history_replaces_request_context(store: SqliteSessionStore) -> None:
    provider = ScriptedProvider(["ok"])
    turns = runner(provider, store)
    [
        e
        async for e in turns.run(
            request("q1", ChatMessage("user", "old"), ChatMessage("assistant", "older"))
        )
    ]
    resent = (
        ChatMessage("user", "old"),
        ChatMessage("assistant", "older"),
        ChatMessage("user", "q1"),
        ChatMessage("assistant", "ok"),
        ChatMessage("user", "extra"),
    )
    [e async for e in turns.run(request("q2", *resent))]
    texts = [m.text for m in provider.prompts[1].messages]
    assert texts == ["SYS", "old", "older", "q1", "ok", "extra", "q2"]
    assert [m.text for m in await store.load("k")] == [
        "old",
        "older",
        "q1",
        "ok",
        "extra",
        "q2",
        "ok",
    ]


async def test_a_failed_turn_stores_nothing(store: SqliteSessionStore) -> None:
    with pytest.raises(ProviderFailedError):
        [
            e
            async for e in runner(ScriptedProvider(["a", "b"], fail_after=1), store).run(
                request("hi")
            )
        ]
    assert await store.load("k") == []


async def test_cancelling_a_turn_closes_the_provider_and_stores_nothing(
    store: SqliteSessionStore,
) -> None:
    provider = ScriptedProvider(["a", "b"], hang_after=1)
    turns = runner(provider, store)
    task = asyncio.create_task(anext_n(turns.run(request("hi")), 10))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(provider.closed.wait(), 1)
    assert await store.load("k") == [] and turns.turns_in_flight == 0
    events = [e async for e in runner(ScriptedProvider(["x"]), store).run(request("again"))]
    assert isinstance(events[-1], TurnFinished)  # the session is free at once


async def anext_n(events: AsyncIterator[object], count: int) -> list[object]:
    return [event async for event in events][:count]


async def test_errors_before_start(store: SqliteSessionStore) -> None:
    turns = runner(ScriptedProvider(["a"]), store)
    with pytest.raises(UnknownAgentError, match="'nobody'"):
        [e async for e in turns.run(TurnRequest("nobody", "k", ChatMessage("user", "x")))]
    with pytest.raises(InvalidTurnError):
        [e async for e in turns.run(request(""))]
    with pytest.raises(InvalidTurnError):
        [e async for e in turns.run(request("x", key=" "))]


async def test_a_full_worker_queues_up_to_max_queued_turns_then_refuses(
    store: SqliteSessionStore,
) -> None:
    turns = runner(ScriptedProvider(["a"], hang_after=0), store, capacity=1, queued=1)
    first = asyncio.create_task(anext_n(turns.run(request("x", key="k1")), 1))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(anext_n(turns.run(request("y", key="k2")), 1))
    await asyncio.sleep(0.05)
    assert (turns.turns_in_flight, turns.turns_queued) == (1, 1) and not second.done()
    with pytest.raises(WorkerAtCapacityError):
        [e async for e in turns.run(request("z", key="k3"))]
    second.cancel()  # a waiting turn that goes away leaves the queue
    await asyncio.gather(second, return_exceptions=True)
    assert turns.turns_queued == 0
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert turns.turns_in_flight == 0


async def test_freed_slots_go_round_the_waiting_identities(store: SqliteSessionStore) -> None:
    """A has 20 turns waiting on a full worker; B's one turn runs after at most one of A's."""

    class Gated(ScriptedProvider):
        def __init__(self) -> None:
            super().__init__(["ok"])
            self.gate = asyncio.Event()
            self.order: list[str] = []

        async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
            self.order.append(request.messages[-1].text)
            await self.gate.wait()
            async for event in super().stream(request):
                yield event

    provider = Gated()
    turns = runner(provider, store, capacity=2)

    def of(person: str, text: str, key: str) -> TurnRequest:
        return dataclasses.replace(request(text, key=key), caller=Caller(person, False))

    async def run(turn: TurnRequest) -> None:
        [event async for event in turns.run(turn)]

    tasks = [asyncio.create_task(run(of("a", f"a{n}", f"ka{n}"))) for n in range(22)]
    await asyncio.sleep(0.05)  # two of A's run, twenty wait
    tasks.append(asyncio.create_task(run(of("b", "b0", "kb"))))
    await asyncio.sleep(0.05)
    provider.gate.set()
    await asyncio.gather(*tasks)
    assert provider.order.index("b0") <= 3, provider.order  # after the two running, one more
    assert turns.turns_in_flight == turns.turns_queued == 0


def test_request_sampling_wins_over_agent_defaults() -> None:
    merged = merged_sampling(Sampling(temperature=0.3, max_tokens=5), Sampling(temperature=1.0))
    assert merged.temperature == 1.0 and merged.max_tokens == 5


async def test_a_turn_over_its_timeout_is_aborted(tmp_path: Path) -> None:
    config = parse_config(
        "{ models: { providers: { p: { api: 'echo' } } }, "
        "agents: { list: [ { id: 'main', model: 'p/m', turnTimeoutMs: 100 } ] } }"
    )
    store = SqliteSessionStore(tmp_path / "t.db")
    await store.open()
    provider = ScriptedProvider(["a", "b"], hang_after=1)
    turns = TurnRunner(
        AgentRegistry.from_config(config),
        {"p": provider},
        store,
        max_concurrent_turns=2,
        session_wait_timeout=1,
    )
    with pytest.raises(TurnTimeoutError, match="turnTimeoutMs"):
        [event async for event in turns.run(request("x"))]
    assert provider.closed.is_set() and await store.load("k") == []
    await store.close()


async def test_the_deadline_times_the_provider_not_a_paused_consumer() -> None:
    deadline = ProviderDeadline(0.05)
    assert await deadline.wait_for(asyncio.sleep(0, "first")) == "first"
    await asyncio.sleep(0.1)  # the consumer holds the turn past its deadline: nothing fires
    with pytest.raises(TurnTimeoutError):
        await deadline.wait_for(asyncio.sleep(0))  # the next provider wait fails at once
    deadline.cancel()


async def test_the_deadline_turns_only_its_own_cancel_into_a_timeout() -> None:
    async def wait(seconds: float) -> None:
        deadline = ProviderDeadline(seconds)
        try:
            await deadline.wait_for(asyncio.sleep(3600))
        finally:
            deadline.cancel()

    with pytest.raises(TurnTimeoutError):
        await wait(0.02)
    outer = asyncio.create_task(wait(60))
    await asyncio.sleep(0.02)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer


async def test_a_new_session_does_not_read_the_store(store: SqliteSessionStore) -> None:
    await store.append_turn("k", [ChatMessage("user", "old"), ChatMessage("assistant", "reply")])
    provider = ScriptedProvider(["hi"])
    fresh = dataclasses.replace(request("now"), new_session=True)
    [event async for event in runner(provider, store).run(fresh)]
    assert [message.text for message in provider.prompts[0].messages] == ["SYS", "now"]


async def test_a_session_has_one_prompt_cache_key_that_does_not_say_its_name(
    store: SqliteSessionStore,
) -> None:
    provider = ScriptedProvider(["ok"])
    turns = runner(provider, store)
    for key in ("alice@example.com:chat", "alice@example.com:chat", "bob:chat"):
        [e async for e in turns.run(request("hi", key=key))]
    first, again, other = (prompt.cache_key for prompt in provider.prompts)
    assert first == again != other and first.startswith("clawgate-")
    assert "alice" not in first and len(first) == len("clawgate-") + 32
