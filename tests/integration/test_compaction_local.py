"""The embedded model's 2,048-token window over a long session (issue 30): the default agent's
conversation died at its 13th turn before compaction; the MCP time tool's prompts (tool schemas
and results) overflowed it too."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devkit.processes import TOKEN, Stack, echo_config, start_stack

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PLACES = ["Lisbon", "Kyoto", "Oslo", "Lima", "Cairo", "Hanoi", "Quebec", "Tunis"]


def message(number: int) -> str:
    """Two lines, as the issue's report had them."""
    place = PLACES[number % len(PLACES)]
    return (
        f"Day {number} of my trip: I am in {place} and the weather is mild.\n"
        f"What is one thing I should see in {place} today?"
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path: Path = tmp_path_factory.mktemp("local-compaction")
    config = echo_config(tmp_path)
    config["models"]["providers"]["local"] = {"api": "llama-cpp"}  # every default: 2,048 tokens
    config["mcp"] = {
        "servers": {"time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]}}
    }
    config["agents"]["list"] = [
        {"id": "main", "default": True, "model": "local/smollm2-135m"},
        {
            "id": "timed",
            "model": "local/smollm2-135m",
            "tools": {"allow": ["time__get_current_time"], "maxSteps": 2},
        },
    ]
    config["agents"]["defaults"]["systemPrompt"] = "You are a helpful assistant."
    running = start_stack(tmp_path, config)
    yield running
    running.stop()


def ask(stack: Stack, agent: str, text: str, user: str) -> httpx.Response:
    return httpx.post(
        f"{stack.base_url}/v1/chat/completions",
        json={
            "model": f"openclaw:{agent}",
            "messages": [{"role": "user", "content": text}],
            "user": user,
            "seed": 7,
        },
        headers=AUTH,
        timeout=300,
    )


def test_forty_turns_of_one_session_all_answer(stack: Stack) -> None:
    for number in range(1, 41):
        response = ask(stack, "main", message(number), "traveller")
        assert response.status_code == 200, f"turn {number}: {response.text}"
        assert response.json()["choices"][0]["message"]["content"].strip(), f"turn {number}"
    key = "agent:main:openai-user:traveller"
    stored = httpx.get(f"{stack.base_url}/v1/sessions/{key}", headers=AUTH, timeout=30).json()
    users = [m["content"] for m in stored["messages"] if m["role"] == "user"]
    assert users == [message(number) for number in range(1, 41)]
    assert stored["compactions"], "40 turns do not fit 2,048 tokens without a summary"
    assert "compacted:" in stack.worker.log()
    assert "exceed context window" not in stack.worker.log()


def test_the_time_tool_in_a_long_session_does_not_overflow(stack: Stack) -> None:
    """Tool schemas, calls and results fill the window faster. (llama-cpp-python writes a call's
    arguments with no token limit, and a 135M model may write until the window is full: that
    overflow is recovered too, by compacting and asking again.)"""
    for number in range(1, 10):
        text = "What time is it in UTC?" if number % 3 == 0 else message(number)
        response = ask(stack, "timed", text, "clock-watcher")
        assert response.status_code == 200, f"turn {number}: {response.text}"
        assert "tool_calls" not in response.json()["choices"][0]["message"]
    key = "agent:timed:openai-user:clock-watcher"
    stored = httpx.get(f"{stack.base_url}/v1/sessions/{key}", headers=AUTH, timeout=30).json()
    assert sum(m["role"] == "user" for m in stored["messages"]) == 9
    assert any(m["role"] == "tool" for m in stored["messages"])
