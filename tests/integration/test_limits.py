"""Limits per identity and per agent (issue 45, its first limits): requests per minute and
turns at once, counted in the machine's Redis and so shared by two edges; OpenAI's rate-limit
headers, the SDK's RateLimitError, and the store down both ways."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from devkit.processes import TOKEN, echo_config, extra_edge, start_stack

AUTH = {"Authorization": f"Bearer {TOKEN}"}
REDIS_URL = "redis://127.0.0.1:6379/11"  # a database of the tests' own, emptied per test
PER_MINUTE = 5


def chat(base_url: str, model: str = "openclaw", **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(f"{base_url}/v1/chat/completions", headers=AUTH, json=body, timeout=30)


@contextlib.contextmanager
def two_edges(tmp_path: Path, limits: dict[str, Any]) -> Iterator[tuple[str, str]]:
    redis.Redis.from_url(REDIS_URL).flushdb()
    config = echo_config(tmp_path)
    config["gateway"]["limits"] = limits
    stack = start_stack(tmp_path, config)
    try:
        with extra_edge(tmp_path, config, lambda changed: None) as second:
            yield stack.base_url, second
    finally:
        stack.stop()


def test_requests_per_minute_hold_across_two_edges(tmp_path: Path) -> None:
    limits = {"store": REDIS_URL, "default": {"requestsPerMinute": PER_MINUTE}}
    with two_edges(tmp_path, limits) as (first, second):
        if 60 - time.time() % 60 < 5:  # the requests below stay in one minute's window
            time.sleep(60 - time.time() % 60 + 0.1)
        answers = [chat(first if n % 2 else second) for n in range(PER_MINUTE + 3)]
        client = openai.OpenAI(base_url=f"{first}/v1", api_key=TOKEN, max_retries=0)
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(
                model="openclaw", messages=[{"role": "user", "content": "one more"}]
            )
    assert [answer.status_code for answer in answers] == [200] * PER_MINUTE + [429] * 3
    remaining = [int(a.headers["x-ratelimit-remaining-requests"]) for a in answers]
    assert remaining == [4, 3, 2, 1, 0, 0, 0, 0]
    assert all(a.headers["x-ratelimit-limit-requests"] == str(PER_MINUTE) for a in answers)
    assert all(a.headers["x-ratelimit-reset-requests"].endswith("s") for a in answers)
    over = answers[-1]
    assert over.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(over.headers["retry-after"]) <= 60
    headers = refused.value.response.headers
    assert headers["x-ratelimit-remaining-requests"] == "0" and "retry-after" in headers


def test_an_agents_concurrent_turns_hold_across_two_edges(tmp_path: Path) -> None:
    limits = {"store": REDIS_URL, "agents": {"slow": {"concurrentTurns": 1}}}
    with two_edges(tmp_path, limits) as (first, second):
        started = threading.Event()

        def occupy() -> None:
            body = {"model": "openclaw:slow", "stream": True}
            body["messages"] = [{"role": "user", "content": "a b c"}]
            with httpx.stream(
                "POST", f"{first}/v1/chat/completions", headers=AUTH, json=body, timeout=30
            ) as streamed:
                for _ in streamed.iter_lines():
                    started.set()

        occupant = threading.Thread(target=occupy)
        occupant.start()
        assert started.wait(10)
        refused = chat(second, "openclaw:slow")
        other_agent = chat(second, "openclaw:main")
        occupant.join(30)
        after = chat(second, "openclaw:slow")
    assert refused.status_code == 429, refused.text
    assert "at most 1" in refused.json()["error"]["message"]
    assert other_agent.status_code == 200 and after.status_code == 200


@pytest.mark.parametrize(("choice", "status"), [("open", 200), ("closed", 503)])
def test_a_limit_store_that_does_not_answer(tmp_path: Path, choice: str, status: int) -> None:
    config = echo_config(tmp_path)
    config["gateway"]["limits"] = {
        "store": "redis://127.0.0.1:1/0",  # nothing listens there
        "onStoreDown": choice,
        "default": {"requestsPerMinute": 100},
    }
    stack = start_stack(tmp_path, config)
    try:
        answer = chat(stack.base_url)
        metrics = httpx.get(f"{stack.base_url}/metrics", headers=AUTH, timeout=10).text
    finally:
        stack.stop()
    assert answer.status_code == status, answer.text
    assert "clawgate_edge_limit_store_failures_total 1.0" in metrics
    if choice == "open":
        assert "limit store down" in stack.edge.log()
    else:
        assert answer.json()["error"]["code"] == "limits_unavailable"
