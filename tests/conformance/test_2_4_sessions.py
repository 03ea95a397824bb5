"""Session keys from the header, from `user`, or fresh; transcripts persist across restarts."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest

from clawgate.agent.v1 import agent_service_pb2 as pb
from devkit.processes import TOKEN, Stack
from tests.support.raw_http import raw_post
from tests.support.sessions import transcript


def chat(
    stack: Stack, messages: list[dict], headers: dict[str, str] | None = None, **fields: object
) -> httpx.Response:
    response = httpx.post(
        f"{stack.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {TOKEN}", **(headers or {})},
        json={"model": "openclaw", "messages": messages, **fields},
        timeout=30,
    )
    return response


def reply(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def test_stable_user_continues_the_conversation(echo_stack: Stack) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    first = chat(echo_stack, [{"role": "user", "content": "one"}], user=user)
    assert reply(first) == "echo: one [turns=0]"
    assert first.headers["x-openclaw-session-key"] == f"agent:main:openai-user:{user}"
    second = chat(echo_stack, [{"role": "user", "content": "two"}], user=user)
    assert reply(second) == "echo: two [turns=2]"
    assert transcript(echo_stack.worker_address, f"agent:main:openai-user:{user}") == [
        (pb.ROLE_USER, "one"),
        (pb.ROLE_ASSISTANT, "echo: one [turns=0]"),
        (pb.ROLE_USER, "two"),
        (pb.ROLE_ASSISTANT, "echo: two [turns=2]"),
    ]


def test_without_user_every_call_is_fresh(echo_stack: Stack) -> None:
    first = chat(echo_stack, [{"role": "user", "content": "one"}])
    second = chat(echo_stack, [{"role": "user", "content": "two"}])
    assert reply(second) == "echo: two [turns=0]"
    keys = {first.headers["x-openclaw-session-key"], second.headers["x-openclaw-session-key"]}
    assert len(keys) == 2 and all(key.startswith("agent:main:openai:") for key in keys)


def test_header_key_wins_and_continues_a_stateless_start(echo_stack: Stack) -> None:
    started = chat(echo_stack, [{"role": "user", "content": "first"}])
    key = f"my-app:{uuid.uuid4().hex}"
    with_header = chat(
        echo_stack, [{"role": "user", "content": "a"}], {"x-openclaw-session-key": key}, user="u"
    )
    assert with_header.headers["x-openclaw-session-key"] == key
    again = chat(echo_stack, [{"role": "user", "content": "b"}], {"x-openclaw-session-key": key})
    assert reply(again) == "echo: b [turns=2]"
    # A client continues a session it did not name by echoing the response header back.
    continued = chat(
        echo_stack,
        [{"role": "user", "content": "c"}],
        {"x-openclaw-session-key": started.headers["x-openclaw-session-key"]},
    )
    assert reply(continued) == "echo: c [turns=2]"


def test_stored_history_is_not_fed_twice(echo_stack: Stack) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    reply(chat(echo_stack, [{"role": "user", "content": "q1"}], user=user))
    # The client resends the whole conversation, as OpenAI clients do.
    full = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "echo: q1 [turns=0]"},
        {"role": "user", "content": "q2"},
    ]
    assert reply(chat(echo_stack, full, user=user)) == "echo: q2 [turns=2]"
    assert len(transcript(echo_stack.worker_address, f"agent:main:openai-user:{user}")) == 4


def test_context_of_a_new_session_is_structured_and_stored(echo_stack: Stack) -> None:
    key = f"ctx:{uuid.uuid4().hex}"
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "part one"},
                {"type": "input_text", "text": "part two"},
            ],
        },
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "now"},
    ]
    assert (
        reply(chat(echo_stack, messages, {"x-openclaw-session-key": key})) == "echo: now [turns=2]"
    )
    assert transcript(echo_stack.worker_address, key)[:2] == [
        (pb.ROLE_USER, "part one\npart two"),
        (pb.ROLE_ASSISTANT, "earlier answer"),
    ]


@pytest.mark.parametrize(
    "key", ["", "   ", "x" * 513, "bad\u0085key", "subagent:x", "cron:job", "acp:thing"]
)
def test_invalid_session_keys_are_rejected(echo_stack: Stack, key: str) -> None:
    status, body = raw_post(
        echo_stack.base_url,
        "/v1/chat/completions",
        [(b"Authorization", f"Bearer {TOKEN}".encode()), (b"x-openclaw-session-key", key.encode())],
        orjson.dumps({"messages": [{"role": "user", "content": "x"}]}),
    )
    assert status == 400
    error = orjson.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "x-openclaw-session-key"


def test_transcript_survives_a_worker_restart(echo_stack: Stack) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    reply(chat(echo_stack, [{"role": "user", "content": "before restart"}], user=user))
    old_pid = echo_stack.worker.pid
    echo_stack.restart_worker()
    assert echo_stack.worker.pid != old_pid
    assert (
        reply(chat(echo_stack, [{"role": "user", "content": "after"}], user=user))
        == "echo: after [turns=2]"
    )
    assert transcript(echo_stack.worker_address, f"agent:main:openai-user:{user}")[0] == (
        pb.ROLE_USER,
        "before restart",
    )


def test_non_ascii_user_round_trips_through_the_session_header(echo_stack: Stack) -> None:
    user = f"jose-日本-{uuid.uuid4().hex[:6]}"
    first = chat(echo_stack, [{"role": "user", "content": "one"}], user=user)
    assert reply(first) == "echo: one [turns=0]"
    raw_key = first.headers.raw[
        [n.lower() for n, _ in first.headers.raw].index(b"x-openclaw-session-key")
    ][1]
    assert raw_key.decode() == f"agent:main:openai-user:{user}"
    status, body = raw_post(
        echo_stack.base_url,
        "/v1/chat/completions",
        [(b"Authorization", f"Bearer {TOKEN}".encode()), (b"x-openclaw-session-key", raw_key)],
        orjson.dumps({"messages": [{"role": "user", "content": "two"}]}),
    )
    assert (
        status == 200
        and orjson.loads(body)["choices"][0]["message"]["content"] == "echo: two [turns=2]"
    )


@pytest.mark.parametrize("user", ["line\nbreak", "x\r\nSet-Cookie: a=b", "nul\x00", "u" * 600])
def test_users_that_cannot_make_a_session_key_are_400(echo_stack: Stack, user: str) -> None:
    response = chat(echo_stack, [{"role": "user", "content": "x"}], user=user)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "user"
    assert "set-cookie" not in response.headers
