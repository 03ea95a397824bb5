"""Errors: every row of the table, with its status, `type` and a readable message."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from devkit.processes import TOKEN, Stack, echo_config, extra_edge, free_port, start_stack
from tests.conformance.helpers import AUTH, CHAT, assert_error, chat, post_chat, user


def test_400_bad_request(echo_stack: Stack) -> None:
    response = httpx.post(f"{echo_stack.base_url}{CHAT}", headers=AUTH, content=b"{oops")
    assert "not valid JSON" in assert_error(response, 400, "invalid_request_error")["message"]


def test_401_unauthorized(echo_stack: Stack) -> None:
    assert_error(httpx.post(f"{echo_stack.base_url}{CHAT}", json={}), 401, "unauthorized")


def test_404_unknown_path(echo_stack: Stack) -> None:
    assert_error(httpx.post(f"{echo_stack.base_url}/v2/chat", headers=AUTH, json={}), 404, None)


def test_405_wrong_method(echo_stack: Stack) -> None:
    response = httpx.delete(f"{echo_stack.base_url}{CHAT}")
    assert_error(response, 405, None)
    assert response.headers["allow"] == "POST"


def test_413_body_too_large(tmp_path: Path, echo_stack: Stack) -> None:
    def tiny(config: dict) -> None:
        config["gateway"]["http"]["endpoints"]["chatCompletions"]["maxBodyBytes"] = 64

    with extra_edge(tmp_path, echo_stack.config, tiny) as base_url:
        response = post_chat(base_url, {"messages": user("x" * 100)})
    assert "larger than 64 bytes" in assert_error(response, 413, "invalid_request_error")["message"]


def test_429_worker_at_capacity(tmp_path: Path) -> None:
    config = echo_config(tmp_path)
    config["worker"]["maxConcurrentTurns"] = 1
    config["worker"]["maxQueuedTurns"] = 0  # a full worker refuses at once: no turn waits
    stack = start_stack(tmp_path, config)
    try:
        first_started = threading.Event()

        def occupy() -> None:
            body = {"model": "openclaw:slow", "stream": True, "messages": user("a b c")}
            with httpx.stream(
                "POST", f"{stack.base_url}{CHAT}", headers=AUTH, json=body, timeout=30
            ) as r:
                for _ in r.iter_lines():
                    first_started.set()

        occupant = threading.Thread(target=occupy)
        occupant.start()
        assert first_started.wait(10)
        response = chat(stack, messages=user("second"))
        error = assert_error(response, 429, "rate_limited")
        assert response.headers["retry-after"] == "1" and "capacity" in error["message"]
        sdk = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN, max_retries=0)
        with pytest.raises(openai.RateLimitError):
            sdk.chat.completions.create(model="openclaw", messages=user("third"))  # type: ignore[arg-type]
        occupant.join(10)
        assert chat(stack, messages=user("after")).status_code == 200
    finally:
        stack.stop()


def test_502_provider_failed(echo_stack: Stack) -> None:
    error = assert_error(
        chat(echo_stack, model="openclaw:flaky", messages=user("x")), 502, "api_error"
    )
    assert "provider" in error["message"]


def test_503_no_worker_reachable_answers_quickly(tmp_path: Path, echo_stack: Stack) -> None:
    def nowhere(config: dict) -> None:
        config["gateway"]["workers"] = [f"127.0.0.1:{free_port()}"]

    with extra_edge(tmp_path, echo_stack.config, nowhere, ready_path="/healthz") as base_url:
        started = time.monotonic()
        response = post_chat(base_url, {"messages": user("x")})
        elapsed = time.monotonic() - started
        assert httpx.get(f"{base_url}/readyz").status_code == 503
    assert "worker" in assert_error(response, 503, "api_error")["message"]
    assert elapsed < 5, f"took {elapsed:.1f}s"  # a generous bound: no long connect timeouts


def test_504_turn_timed_out(echo_stack: Stack) -> None:
    error = assert_error(
        chat(echo_stack, model="openclaw:sluggish", messages=user("x")), 504, "api_error"
    )
    assert "timed out" in error["message"]
