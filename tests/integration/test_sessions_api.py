"""The sessions API (issue 22, first part) over a real edge and worker: listing newest first
with a cursor and an agent filter, reading a session with tool calls, deleting, auth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from devkit.processes import TOKEN, Stack, echo_config, start_stack

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("sessions-api")
    running = start_stack(tmp_path, echo_config(tmp_path))
    yield running
    running.stop()


def chat(stack: Stack, key: str, agent: str, messages: list[dict[str, Any]], **extra: Any) -> Any:
    response = httpx.post(
        f"{stack.base_url}/v1/chat/completions",
        json={"model": f"openclaw:{agent}", "messages": messages, **extra},
        headers={**AUTH, "x-openclaw-session-key": key},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def get(stack: Stack, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{stack.base_url}{path}", params=params, headers=AUTH, timeout=10)


def test_sessions_are_listed_newest_first_a_page_at_a_time(stack: Stack) -> None:
    for n in range(5):
        agent = "beta" if n == 3 else "main"
        chat(stack, f"list-{n}", agent, [{"role": "user", "content": f"question {n}"}])
    first = get(stack, "/v1/sessions", limit=2).json()
    assert first["object"] == "list" and first["has_more"] is True
    assert [s["key"] for s in first["data"]] == ["list-4", "list-3"]
    assert first["data"][0] == {
        "key": "list-4",
        "agent": "main",
        "title": "question 4",
        "turns": 1,
        "updated_at": first["data"][0]["updated_at"],
        "owner": None,  # the gateway's owner: a token caller made it
        "user": None,  # a header named it, not a `user`
    }
    second = get(stack, "/v1/sessions", limit=2, after=first["next_cursor"]).json()
    assert [s["key"] for s in second["data"]] == ["list-2", "list-1"]
    mains = get(stack, "/v1/sessions", agent="main", limit=100).json()
    assert "list-3" not in [s["key"] for s in mains["data"]]
    assert {s["agent"] for s in mains["data"]} == {"main"}
    chat(stack, "list-0", "main", [{"role": "user", "content": "again"}])
    top = get(stack, "/v1/sessions", limit=1).json()["data"][0]
    assert (top["key"], top["turns"], top["title"]) == ("list-0", 2, "question 0")


def test_a_session_reads_back_with_its_tool_calls(stack: Stack) -> None:
    key = "sessions-tools-1"
    asked = [{"role": "user", "content": 'call get_time {"zone": "UTC"}'}]
    answer = chat(stack, key, "main", asked, tools=[TIME])
    (call,) = answer["choices"][0]["message"]["tool_calls"]
    result = [{"role": "tool", "tool_call_id": call["id"], "content": "noon"}]
    chat(stack, key, "main", result, tools=[TIME])
    session = get(stack, f"/v1/sessions/{quote(key)}").json()
    assert session["key"] == key
    assert [m["role"] for m in session["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert session["messages"][1]["tool_calls"][0]["function"] == {
        "name": "get_time",
        "arguments": '{"zone": "UTC"}',
    }
    assert session["messages"][2]["tool_call_id"] == call["id"]
    assert session["messages"][3]["content"] == f"tool {call['id']} said: noon"


def test_deleting_a_session_removes_it_everywhere(stack: Stack) -> None:
    key = "agent:main:openai-user:to-delete"  # a key with colons, as the edge makes them
    chat(stack, key, "main", [{"role": "user", "content": "forget me"}])
    assert get(stack, f"/v1/sessions/{quote(key)}").status_code == 200
    deleted = httpx.delete(f"{stack.base_url}/v1/sessions/{quote(key)}", headers=AUTH)
    assert deleted.json() == {"key": key, "deleted": True}
    assert get(stack, f"/v1/sessions/{quote(key)}").status_code == 404
    again = httpx.delete(f"{stack.base_url}/v1/sessions/{quote(key)}", headers=AUTH)
    assert again.status_code == 404
    listed = get(stack, "/v1/sessions", limit=100).json()["data"]
    assert key not in [s["key"] for s in listed]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/sessions"), ("GET", "/v1/sessions/x"), ("DELETE", "/v1/sessions/x")],
)
def test_the_sessions_api_needs_the_token(stack: Stack, method: str, path: str) -> None:
    response = httpx.request(method, f"{stack.base_url}{path}", headers={"Authorization": "x"})
    assert response.status_code == 401


def test_bad_paging_is_a_400(stack: Stack) -> None:
    assert get(stack, "/v1/sessions", after="not a cursor!").status_code == 400
    assert get(stack, "/v1/sessions", limit=0).status_code == 400
    assert get(stack, "/v1/sessions", limit=101).status_code == 400
