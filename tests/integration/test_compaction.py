"""Sessions that outlive the model's window (issue 30), over a real worker and edge, with the
`openai` SDK against an OpenAI-compatible stand-in that enforces a hard 4,096-token window and
answers OpenAI's `context_length_exceeded` error (devkit/windowed_upstream.py)."""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from devkit.processes import (
    REPO_ROOT,
    TOKEN,
    Process,
    Stack,
    clawgate,
    echo_config,
    free_port,
    start_edge,
    start_stack,
    wait_until,
    worker_serving,
    write_config,
)
from devkit.windowed_upstream import WindowedUpstream
from services.logging import fingerprint
from tests.support.postgres import POSTGRES_URL, requires_postgres

AUTH = {"Authorization": f"Bearer {TOKEN}"}
WINDOW = 4096
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank. "
FACT = "FACT: the cat is named Biscuit"


def turn_text(number: int) -> str:
    """About 250 tokens as the stand-in counts them."""
    return f"Turn {number}. " + SENTENCE * 17


@pytest.fixture(scope="module")
def upstream() -> Iterator[WindowedUpstream]:
    with WindowedUpstream(WINDOW) as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, upstream: WindowedUpstream) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("compaction")
    config = echo_config(tmp_path)
    config["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True}
    config["models"]["providers"]["windowed"] = {
        "api": "openai-compatible",
        "baseUrl": upstream.base_url,
        # OpenClaw's catalog entries, with keys clawgate does not use.
        "models": [
            {"id": "fitted", "name": "Fitted", "contextWindow": WINDOW, "input": ["text"]},
            {"id": "oversized", "contextWindow": 4 * WINDOW, "reasoning": False, "cost": {}},
        ],
    }
    config["agents"]["list"] += [
        {"id": "fitted", "model": "windowed/fitted"},
        {"id": "unknown", "model": "windowed/unlisted"},
        {"id": "oversized", "model": "windowed/oversized"},
    ]
    running = start_stack(tmp_path, config)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN, max_retries=0)


def session(stack: Stack, key: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.base_url}/v1/sessions/{key}", headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def converse(client: openai.OpenAI, agent: str, user: str, turns: range) -> list[str]:
    answers = []
    for number in turns:
        text = turn_text(number)
        if number == 1:
            text = f"{FACT}. {text}"
        reply = client.chat.completions.create(
            model=f"openclaw:{agent}", messages=[{"role": "user", "content": text}], user=user
        )
        answer = reply.choices[0].message.content
        assert answer, f"turn {number} answered nothing"
        answers.append(answer)
    return answers


def test_a_configured_window_keeps_120_turns_answering_and_the_first_fact_alive(
    stack: Stack, client: openai.OpenAI, upstream: WindowedUpstream
) -> None:
    requests_before, overflows_before = len(upstream.prompts), upstream.overflows
    converse(client, "fitted", "alice", range(1, 80))
    asked = client.chat.completions.create(
        model="openclaw:fitted",
        messages=[{"role": "user", "content": "Turn 80. which facts? " + SENTENCE * 10}],
        user="alice",
    )
    assert "Biscuit" in (asked.choices[0].message.content or "")
    converse(client, "fitted", "alice", range(81, 121))
    requests = len(upstream.prompts) - requests_before
    overflows = upstream.overflows - overflows_before
    assert overflows * 10 <= requests, f"{overflows} of {requests} requests overflowed"
    assert max(upstream.prompts[requests_before:]) <= WINDOW

    stored = _session_of(stack, "alice")
    users = [m["content"] for m in stored["messages"] if m["role"] == "user"]
    assert len(users) == 120
    assert users[0].startswith(FACT) and users[1] == turn_text(2) and users[-1] == turn_text(120)
    assert all(f"Turn {n}." in text for n, text in enumerate(users, start=1))
    compactions = stored["compactions"]
    assert len(compactions) >= 5
    assert all(c["object"] == "session.compaction" for c in compactions)
    covers = [c["covers"] for c in compactions]
    assert covers == sorted(covers) and covers[-1] < len(stored["messages"])
    assert FACT in compactions[-1]["summary"]  # re-distilled, summary after summary
    assert all(c["tokens_after"] < c["tokens_before"] for c in compactions)


def _session_of(stack: Stack, user: str) -> dict[str, Any]:
    listing = httpx.get(
        f"{stack.base_url}/v1/sessions", params={"limit": 100}, headers=AUTH, timeout=30
    ).json()
    keys = [s["key"] for s in listing["data"] if s["key"].endswith(f":{user}")]
    assert len(keys) == 1, listing
    return session(stack, keys[0])


def test_a_compacted_session_reads_its_summary_back_after_a_worker_restart(
    stack: Stack, client: openai.OpenAI, upstream: WindowedUpstream
) -> None:
    summary = _session_of(stack, "alice")["compactions"][-1]["summary"]
    stack.restart_worker()
    first_request = len(upstream.requests)
    converse(client, "fitted", "alice", range(121, 122))
    first = upstream.requests[first_request]["messages"]
    shown = "\n".join(str(message.get("content")) for message in first)
    assert summary in shown  # read from the store, not made again


def test_an_unknown_window_is_learned_from_the_overflow_and_every_turn_answers(
    stack: Stack, client: openai.OpenAI, upstream: WindowedUpstream
) -> None:
    overflows_before = upstream.overflows
    converse(client, "unknown", "bob", range(1, 121))
    assert 1 <= upstream.overflows - overflows_before <= 3
    status = httpx.get(f"{stack.base_url}/status", headers=AUTH, timeout=10).json()
    windows = {a["id"]: a["context_window"] for a in status["workers"][0]["agents"]}
    assert windows["unknown"] == WINDOW
    assert windows["fitted"] == WINDOW
    shown = subprocess.run(
        clawgate(stack.config_path, "status"), cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout
    assert f"agent unknown (windowed/unlisted): context window {WINDOW} tokens" in shown
    assert "agent main (echo/echo-1): context window not known yet" in shown


def test_a_window_configured_too_large_still_answers_every_turn(
    client: openai.OpenAI, upstream: WindowedUpstream
) -> None:
    overflows_before = upstream.overflows
    converse(client, "oversized", "carol", range(1, 121))
    assert upstream.overflows - overflows_before <= 3


def test_streamed_turns_compact_too(client: openai.OpenAI) -> None:
    for number in range(1, 41):
        stream = client.chat.completions.create(
            model="openclaw:fitted",
            messages=[{"role": "user", "content": turn_text(number)}],
            user="dave",
            stream=True,
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith("noted: Turn"), number
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_responses_chain_compacts_too(stack: Stack, client: openai.OpenAI) -> None:
    previous = None
    for number in range(1, 41):
        text = f"{FACT}. {turn_text(number)}" if number == 1 else turn_text(number)
        response = client.responses.create(
            model="openclaw:fitted", input=text, previous_response_id=previous
        )
        assert response.status == "completed" and response.output_text.startswith("noted:")
        previous = response.id
    asked = client.responses.create(
        model="openclaw:fitted", input="which facts?", previous_response_id=previous
    )
    assert "Biscuit" in asked.output_text


def test_a_message_larger_than_the_window_is_refused_and_the_session_goes_on(
    stack: Stack, client: openai.OpenAI
) -> None:
    converse(client, "fitted", "erin", range(1, 4))
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="openclaw:fitted",
            messages=[{"role": "user", "content": ("word " * 6000)[:30_000]}],
            user="erin",
        )
    error = refused.value.body
    assert isinstance(error, dict)
    assert refused.value.status_code == 400
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert error["type"] == "invalid_request_error"
    assert f"{WINDOW} tokens" in error["message"] and "Your message has about" in error["message"]
    with pytest.raises(openai.BadRequestError) as streamed:  # refused before the stream starts
        client.chat.completions.create(
            model="openclaw:fitted",
            messages=[{"role": "user", "content": ("word " * 6000)[:30_000]}],
            user="erin",
            stream=True,
        )
    assert isinstance(streamed.value.body, dict)
    assert streamed.value.body["code"] == "context_length_exceeded"
    converse(client, "fitted", "erin", range(4, 8))
    stored = _session_of(stack, "erin")["messages"]
    assert [m["content"] for m in stored if m["role"] == "user"] == [
        f"{FACT}. {turn_text(1)}",
        *map(turn_text, range(2, 8)),
    ]


def test_a_100_kb_tool_result_in_the_history_does_not_kill_the_session(
    stack: Stack, client: openai.OpenAI
) -> None:
    big = "lorem ipsum dolor sit amet " * 3800  # about 100 KB, some 19,000 tokens
    messages: list[Any] = [
        {"role": "user", "content": "What is in the file?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": '{"path": "a.txt"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": big},
        {"role": "user", "content": "Thanks. What does it say?"},
    ]
    reply = client.chat.completions.create(model="openclaw:fitted", messages=messages, user="frank")
    assert reply.choices[0].message.content
    converse(client, "fitted", "frank", range(1, 21))
    stored = _session_of(stack, "frank")["messages"]
    assert [m["content"] for m in stored if m["role"] == "tool"] == [big]  # stored whole


def test_manual_compaction_summarises_now_and_keeps_every_message(
    stack: Stack, client: openai.OpenAI
) -> None:
    converse(client, "fitted", "gina", range(1, 5))
    key = next(
        s["key"]
        for s in httpx.get(f"{stack.base_url}/v1/sessions", headers=AUTH, timeout=10).json()["data"]
        if s["key"].endswith(":gina")
    )
    answer = httpx.post(
        f"{stack.base_url}/v1/sessions/{key}/compact",
        json={"instructions": "Keep the turn numbers."},
        headers={**AUTH, "x-openclaw-agent-id": "fitted"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    made = answer.json()
    assert made["compacted"] is True and FACT in made["compaction"]["summary"]
    stored = session(stack, key)
    assert len(stored["messages"]) == 8 and stored["compactions"] == [made["compaction"]]
    bad = httpx.post(
        f"{stack.base_url}/v1/sessions/{key}/compact",
        content=b"{not json",
        headers=AUTH,
        timeout=10,
    )
    assert bad.status_code == 400


@requires_postgres
def test_a_session_that_moves_to_another_worker_on_postgres_uses_its_stored_summary(
    tmp_path: Path, upstream: WindowedUpstream
) -> None:
    config = echo_config(tmp_path)
    config["sessions"] = {"store": POSTGRES_URL, "poolSize": 4}
    config["models"]["providers"]["windowed"] = {
        "api": "openai-compatible",
        "baseUrl": upstream.base_url,
        "models": [{"id": "fitted", "contextWindow": WINDOW}],
    }
    config["agents"]["list"] = [{"id": "main", "default": True, "model": "windowed/fitted"}]
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    config["gateway"]["workers"] = addresses
    path = write_config(tmp_path, config)
    workers = {
        address: Process(
            clawgate(path, "worker", "--listen", address), tmp_path / f"worker{n}.log"
        ).start()
        for n, address in enumerate(addresses)
    }
    edge = None
    try:
        for address, process in workers.items():
            wait_until(lambda a=address: worker_serving(a), 60, f"worker {address}", process)
        base_url = f"http://127.0.0.1:{config['gateway']['port']}"
        edge = start_edge(path, base_url, tmp_path / "edge.log")
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=TOKEN, max_retries=0)
        user = f"mover-{uuid.uuid4().hex[:8]}"
        converse(client, "main", user, range(1, 16))
        key = f"agent:main:openai-user:{user}"
        stored = httpx.get(f"{base_url}/v1/sessions/{key}", headers=AUTH, timeout=30).json()
        summary = stored["compactions"][-1]["summary"]
        wait_until(  # log lines reach the file within a fraction of a second
            lambda: any(fingerprint(key) in p.log() for p in workers.values()), 5, "turn lines"
        )
        serving = next(a for a, p in workers.items() if fingerprint(key) in p.log())
        workers[serving].stop(signal.SIGKILL)
        first_request = len(upstream.requests)
        converse(client, "main", user, range(16, 17))
        (other,) = (p for a, p in workers.items() if a != serving)
        wait_until(lambda: fingerprint(key) in other.log(), 5, "the session moved")
        shown = str(upstream.requests[first_request]["messages"])
        assert summary in shown  # read from PostgreSQL, not made again
        stored = httpx.get(f"{base_url}/v1/sessions/{key}", headers=AUTH, timeout=30).json()
        assert [m["content"] for m in stored["messages"] if m["role"] == "user"][-1] == turn_text(
            16
        )
    finally:
        if edge is not None:
            edge.stop()
        for process in workers.values():
            process.stop()


def test_compacting_an_unknown_session_is_a_404(stack: Stack) -> None:
    answer = httpx.post(
        f"{stack.base_url}/v1/sessions/no-such-session/compact", headers=AUTH, timeout=10
    )
    assert answer.status_code == 404 and "no-such-session" in answer.json()["error"]["message"]
