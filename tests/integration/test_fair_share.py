"""One caller cannot hurt another (issue 44): while twenty clients stream, one client's 2 MB
message, or its Responses request of 50,000 items, is answered on its own (400
context_length_exceeded, or a compacted answer) and nobody else's stream stalls, on
`clawgate up` with the embedded model and on a pair with the echo provider. The figures are
printed for the closing note; the bounds are generous ceilings."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from devkit.observe import timed_lines
from devkit.processes import TOKEN, echo_config, start_stack, start_up_with_fresh_home

pytestmark = pytest.mark.slow
BIG_MESSAGE = "x" * (2 * 1024 * 1024)
STREAMS = 20
MAX_GAP_SECONDS = 1.0


@dataclass
class Gateway:
    name: str
    base_url: str
    headers: dict[str, str]
    stream_body: dict[str, Any]  # what each of the twenty streams asks for
    agent: str  # the agent the big requests go to


@dataclass
class Streamed:
    status: int = 0
    text: str = ""
    done: bool = False
    error: dict[str, Any] | None = None
    largest_gap: float = 0.0  # between two lines, once the answer's first text came


def stream(gateway: Gateway, key: str, started: threading.Event) -> Streamed:
    result = Streamed()
    headers = {**gateway.headers, "x-openclaw-session-key": key}
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/v1/chat/completions",
        headers=headers,
        json=gateway.stream_body,
        timeout=300,
    ) as response:
        result.status = response.status_code
        last: float | None = None
        for arrived, line in timed_lines(response):
            if last is not None:
                result.largest_gap = max(result.largest_gap, arrived - last)
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                result.done = True
                continue
            chunk = json.loads(line[6:])
            result.error = chunk.get("error", result.error)
            for choice in chunk.get("choices", []):
                result.text += choice["delta"].get("content") or ""
            if result.text:
                last = arrived
                started.set()
    return result


def plain_turn(gateway: Gateway) -> httpx.Response:
    body: dict[str, Any] = {"model": f"openclaw:{gateway.agent}", "max_tokens": 8}
    body["messages"] = [{"role": "user", "content": "hi"}]
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions", headers=gateway.headers, json=body, timeout=300
    )


def big_chat(gateway: Gateway) -> httpx.Response:
    body = {
        "model": f"openclaw:{gateway.agent}",
        "messages": [{"role": "user", "content": BIG_MESSAGE}],
    }
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions", headers=gateway.headers, json=body, timeout=300
    )


def many_items(gateway: Gateway, last: str, session_key: str = "") -> httpx.Response:
    """A Responses request of 50,000 input items: earlier turns of a conversation, then `last`."""
    headers = {**gateway.headers, "x-openclaw-session-key": session_key or uuid.uuid4().hex}
    items: list[dict[str, Any]] = [
        {"role": "user" if n % 2 == 0 else "assistant", "content": f"item {n} of the story"}
        for n in range(49_999)
    ]
    items.append({"role": "user", "content": last})
    body = {"model": f"openclaw:{gateway.agent}", "input": items, "max_output_tokens": 8}
    return httpx.post(f"{gateway.base_url}/v1/responses", headers=headers, json=body, timeout=300)


def while_twenty_stream(
    gateway: Gateway, big: Callable[[Gateway], httpx.Response]
) -> tuple[list[Streamed], httpx.Response, httpx.Response, float]:
    """Starts twenty streams, sends `big` and a plain turn once one of them is under way;
    returns the streams, the big request's answer, the plain turn's and its time."""
    under_way = threading.Event()  # set by the first stream that says something
    with ThreadPoolExecutor(STREAMS + 2) as pool:
        streams = [
            pool.submit(stream, gateway, f"fair-{uuid.uuid4().hex}", under_way)
            for _ in range(STREAMS)
        ]
        assert under_way.wait(120), "no stream started"
        big_answer = pool.submit(big, gateway)
        time.sleep(0.2)  # the big request is on its way: the plain turn comes beside it
        plain_started = time.monotonic()
        plain = plain_turn(gateway)
        plain_took = time.monotonic() - plain_started
        return [s.result() for s in streams], big_answer.result(), plain, plain_took


def check(
    what: str,
    results: tuple[list[Streamed], httpx.Response, httpx.Response, float],
    big_status: int = 400,
) -> None:
    streams, big, plain, plain_took = results
    gaps = sorted(s.largest_gap for s in streams)
    error = big.json().get("error") or {}
    print(
        f"\n[44] {what}: big request {big.status_code} {error.get('code', '')};"
        f" {sum(s.done for s in streams)}/"
        f"{STREAMS} streams finished, largest gap {gaps[-1] * 1000:.0f} ms (median"
        f" {gaps[len(gaps) // 2] * 1000:.0f} ms); plain turn {plain.status_code} in"
        f" {plain_took:.2f} s"
    )
    for result in streams:
        assert result.status == 200 and result.done and result.error is None, result
        assert result.text.strip()
        assert result.largest_gap < MAX_GAP_SECONDS, result.largest_gap
    assert plain.status_code == 200, plain.text
    assert big.status_code == big_status, big.text
    if big_status == 400:
        assert big.json()["error"]["code"] == "context_length_exceeded", big.text


def echo_pair_config(tmp_path: Path) -> dict[str, Any]:
    config = echo_config(tmp_path)
    providers = config["models"]["providers"]
    providers["echo"]["models"] = [{"id": "echo-1", "contextWindow": 32_768}]
    # Twenty streams of 60 words at 20 a second: three seconds each.
    providers["ticker"] = {"api": "echo", "reply": "tick " * 60, "delayMs": 50}
    config["agents"]["list"].append({"id": "ticker", "model": "ticker/t-1"})
    endpoints = config["gateway"]["http"]["endpoints"]
    endpoints["responses"] = {"enabled": True, "maxMessages": 60_000}
    config["worker"]["maxTurnMessages"] = 60_000
    return config


@pytest.fixture(scope="module")
def echo_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp_path = tmp_path_factory.mktemp("fair-echo")
    stack = start_stack(tmp_path, echo_pair_config(tmp_path))
    try:
        body: dict[str, Any] = {"model": "openclaw:ticker", "stream": True}
        body["messages"] = [{"role": "user", "content": "go"}]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        yield Gateway("echo pair", stack.base_url, auth, body, "main")
    finally:
        stack.stop()


def store_a_2_mb_conversation(gateway: Gateway) -> str:
    """A session whose stored transcript holds 2 MB (as earlier turns, compacted in prompts)."""
    key = f"fair-big-{uuid.uuid4().hex}"
    half = BIG_MESSAGE[: len(BIG_MESSAGE) // 2]
    messages = [
        {"role": "user", "content": half},
        {"role": "assistant", "content": half},
        {"role": "user", "content": "noted?"},
    ]
    body = {"model": f"openclaw:{gateway.agent}", "messages": messages, "max_tokens": 8}
    headers = {**gateway.headers, "x-openclaw-session-key": key}
    answer = httpx.post(
        f"{gateway.base_url}/v1/chat/completions", headers=headers, json=body, timeout=300
    )
    assert answer.status_code == 200, answer.text
    return key


def test_50000_items_on_the_echo_pair_are_compacted_and_answered_alone(
    echo_pair: Gateway,
) -> None:
    key = store_a_2_mb_conversation(echo_pair)

    def answered(gateway: Gateway) -> httpx.Response:
        return many_items(gateway, "and what happened next?", key)

    check("echo pair, 50,000 items (compacted)", while_twenty_stream(echo_pair, answered), 200)


def more_items_allowed(starter: str) -> str:
    """The starter config with Responses' maxMessages raised to 60,000 (on edge and worker)."""
    starter = starter.replace(
        "responses: { enabled: true }", "responses: { enabled: true, maxMessages: 60000 }"
    )
    worker = "maxConcurrentTurns: 64"
    return starter.replace(worker, f"{worker}, maxTurnMessages: 60000")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    process, home = start_up_with_fresh_home(tmp_path_factory.mktemp("fair-up"), more_items_allowed)
    try:
        config = (home / ".clawgate" / "clawgate.json5").read_text()
        token = re.search(r'token: "([^"]+)"', config).group(1)  # type: ignore[union-attr]
        body = {"model": "openclaw", "stream": True, "max_tokens": 24, "messages": []}
        body["messages"] = [{"role": "user", "content": "Count from one to twenty."}]
        auth = {"Authorization": f"Bearer {token}"}
        yield Gateway("clawgate up", "http://127.0.0.1:18789", auth, body, "main")
    finally:
        process.stop(signal.SIGINT, timeout=60)


@pytest.fixture(params=["echo_pair", "up"])
def gateway(request: pytest.FixtureRequest) -> Gateway:
    """Each test below runs on the echo pair and on `clawgate up`."""
    found: Gateway = request.getfixturevalue(request.param)
    return found


def test_a_2_mb_message_is_refused_alone(gateway: Gateway) -> None:
    check(f"{gateway.name}, 2 MB message", while_twenty_stream(gateway, big_chat))


def test_50000_items_are_refused_alone(gateway: Gateway) -> None:
    def refused(gateway: Gateway) -> httpx.Response:
        return many_items(gateway, "word " * 200_000)  # its last message alone is too large

    check(f"{gateway.name}, 50,000 items (input too large)", while_twenty_stream(gateway, refused))


def test_a_max_tokens_beyond_the_window_is_capped_on_the_default_agent(up: Gateway) -> None:
    """A frequent client default (4,096) on a 2,048-token model: an answer, not a refusal."""
    token = up.headers["Authorization"].removeprefix("Bearer ")
    client = OpenAI(base_url=f"{up.base_url}/v1", api_key=token, max_retries=0, timeout=120)
    chat = client.chat.completions.create(
        model="openclaw",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=4096,
    )
    assert chat.choices[0].message.content and chat.choices[0].finish_reason in ("stop", "length")
    response = client.responses.create(model="openclaw", input="Say hello.", max_output_tokens=4096)
    assert response.status in ("completed", "incomplete") and response.output_text
    print(
        f"\n[44] max_tokens 4096: {chat.usage.completion_tokens if chat.usage else '?'} tokens,"
        f" {chat.choices[0].finish_reason}; max_output_tokens 4096: {response.status}"
    )
