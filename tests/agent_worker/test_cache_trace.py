"""`diagnostics.cacheTrace` (issue 46): a line per model call saying where its prompt first
differs from the session's previous call, through a real TurnRunner and store."""

from __future__ import annotations

import logging
import re

import pytest

from agent_worker.agents import AgentRegistry
from agent_worker.cache_trace import CacheTrace
from agent_worker.domain import ChatMessage, Sampling, TurnRequest
from agent_worker.sessions.sqlite_store import SqliteSessionStore
from agent_worker.turn_runner import TurnRunner
from tests.agent_worker.test_turn_runner import CONFIG, ScriptedProvider


async def test_each_call_says_where_its_prompt_left_the_previous_one(
    store: SqliteSessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    turns = TurnRunner(
        AgentRegistry.from_config(CONFIG),
        {"p": ScriptedProvider(["ok"])},
        store,
        max_concurrent_turns=2,
        session_wait_timeout=5,
        cache_trace=CacheTrace(),
    )

    async def turn(text: str, extra: str = "") -> None:
        request = TurnRequest("main", "traced", ChatMessage("user", text), (), extra, Sampling())
        [event async for event in turns.run(request)]

    with caplog.at_level(logging.INFO, logger="clawgate.worker.cache"):
        await turn("one")
        await turn("two")  # the same prompt, grown by a turn
        await turn("three", extra="Today is Tuesday.")  # a volatile system prompt
    lines = [r.getMessage() for r in caplog.records if r.name == "clawgate.worker.cache"]
    assert len(lines) == 3, lines
    assert lines[0].endswith("first call of the session on this worker")
    assert lines[1].endswith("repeats the previous call's prompt whole")
    assert lines[2].endswith("differs from the previous call from its system prompt on")
    assert "traced" not in "".join(lines)  # the session is named by its fingerprint
    prefixes = [re.search(r"prefix=(\w+)", line).group(1) for line in lines]  # type: ignore[union-attr]
    assert len(set(prefixes)) == 3
