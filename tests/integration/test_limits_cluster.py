"""Usage and limits on a deployment (issue 45's must-show): two edges and two workers on the
machine's PostgreSQL, limits counted in its Redis, callers told apart by a trusted proxy's user
header (the test stands where the proxy would). Limits per identity hold across both edges,
a token budget stops a streamed answer at "length", usage rows equal what the upstream stand-in
reported and are priced to the cent, and a worker killed mid-turn leaves no row and no double
count behind."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import openai
import pytest
import redis

from devkit.processes import wait_until
from devkit.upstream import CACHED_TOKENS, UpstreamStandIn
from tests.integration.test_scale_out import Cluster
from tests.support.postgres import POSTGRES_URL, requires_postgres

pytestmark = requires_postgres
REDIS_URL = "redis://127.0.0.1:6379/11"
PER_MINUTE = 5
AT_ONCE = 2
TOKEN_BUDGET = 60
# The session store's PostgreSQL keeps usage rows between runs: each run has people of its own.
RUN = uuid.uuid4().hex[:8]
ALICE, BOB, CARL, TINA, UNA, KIM = (
    f"{name}-{RUN}" for name in ("alice", "bob", "carl", "tina", "una", "kim")
)
# USD per million tokens, large enough that three turns come to whole cents.
PRICES = {"input": 25_000, "output": 100_000, "cacheRead": 2_500}


def configure(upstream_url: str) -> Any:
    def change(config: dict[str, Any]) -> None:
        gateway = config["gateway"]
        gateway["trustedProxies"] = ["127.0.0.1"]
        gateway["auth"] = {
            "mode": "trusted-proxy",
            "trustedProxy": {"userHeader": "x-forwarded-user", "allowLoopback": True},
        }
        gateway["limits"] = {
            "store": REDIS_URL,
            "default": {"requestsPerMinute": 1000},
            "identities": {
                ALICE: {"requestsPerMinute": PER_MINUTE},
                CARL: {"concurrentTurns": AT_ONCE},
                TINA: {"tokensPerDay": TOKEN_BUDGET},
            },
        }
        providers = config["models"]["providers"]
        providers["long"] = {"api": "echo", "reply": "w " * 200, "delayMs": 5}
        providers["upstream"] = {
            "api": "openai-compatible",
            "baseUrl": upstream_url,
            "models": [{"id": "m", "cost": PRICES}, {"id": "tools-1", "cost": PRICES}],
        }
        # A real MCP server (PyPI's mcp-server-time, over stdio) for the agent's own tools.
        config["mcp"] = {
            "servers": {"time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]}}
        }
        config["agents"]["list"] += [
            {"id": "long", "model": "long/l"},
            {"id": "priced", "model": "upstream/m"},
            {"id": "tooled", "model": "upstream/tools-1", "tools": {"allow": ["time__*"]}},
        ]

    return change


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamStandIn]:
    with UpstreamStandIn() as running:
        yield running


@pytest.fixture
def cluster(tmp_path: Any, upstream: UpstreamStandIn) -> Iterator[tuple[Cluster, list[str]]]:
    redis.Redis.from_url(REDIS_URL).flushdb()
    running = Cluster(tmp_path, workers=2, configure=configure(upstream.base_url))
    try:
        for address in running.addresses:
            running.start_worker(address)
        edges = [running.start_edge(running.addresses) for _ in range(2)]
        yield running, edges
    finally:
        running.stop()


def as_user(user: str) -> dict[str, str]:
    return {"x-forwarded-user": user, "x-forwarded-proto": "https"}


def chat(base_url: str, who: str, text: str = "hi", **fields: Any) -> httpx.Response:
    """A chat completion as `who` (the proxy's user); `fields` add to the body."""
    body = {"model": "openclaw", "messages": [{"role": "user", "content": text}], **fields}
    return httpx.post(
        f"{base_url}/v1/chat/completions", headers=as_user(who), json=body, timeout=60
    )


def usage_of(base_url: str, user: str) -> dict[str, Any]:
    answer = httpx.get(
        f"{base_url}/v1/usage", params={"group_by": "identity"}, headers=as_user(user), timeout=30
    )
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["data"]
    assert len(rows) <= 1
    return rows[0] if rows else {"requests": 0}


def test_limits_per_identity_hold_across_two_edges(cluster: tuple[Cluster, list[str]]) -> None:
    _, (first, second) = cluster
    import time

    if 60 - time.time() % 60 < 8:  # alice's requests stay in one minute's window
        time.sleep(60 - time.time() % 60 + 0.1)
    answers = [chat(first if n % 2 else second, ALICE) for n in range(PER_MINUTE + 2)]
    assert [a.status_code for a in answers] == [200] * PER_MINUTE + [429] * 2
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == [
        "4", "3", "2", "1", "0", "0", "0"
    ]  # fmt: skip
    assert answers[-1].json()["error"]["type"] == "rate_limit_error"
    assert chat(first, BOB).status_code == 200  # the default, another person's count

    # carl: two slow turns at once, one through each edge; a third waits for neither.
    started = [threading.Event(), threading.Event()]

    def occupy(base_url: str, event: threading.Event) -> None:
        body = {"model": "openclaw:slow", "stream": True}
        body["messages"] = [{"role": "user", "content": "a b c"}]
        with httpx.stream(
            "POST",
            f"{base_url}/v1/chat/completions",
            headers=as_user(CARL),
            json=body,
            timeout=60,
        ) as streamed:
            for _ in streamed.iter_lines():
                event.set()

    occupants = [
        threading.Thread(target=occupy, args=(edge, event))
        for edge, event in zip((first, second), started, strict=True)
    ]
    for occupant in occupants:
        occupant.start()
    assert all(event.wait(20) for event in started)
    refused = [chat(first, CARL), chat(second, CARL)]
    for occupant in occupants:
        occupant.join(60)
    assert [r.status_code for r in refused] == [429, 429], [r.text for r in refused]
    assert f"at most {AT_ONCE}" in refused[0].json()["error"]["message"]
    assert chat(second, CARL).status_code == 200  # the places were given back


def test_a_token_budget_stops_a_streamed_answer_at_length(
    cluster: tuple[Cluster, list[str]],
) -> None:
    _, (first, second) = cluster
    client = openai.OpenAI(
        base_url=f"{first}/v1", api_key="unused", default_headers=as_user(TINA), max_retries=0
    )
    chunks = list(
        client.chat.completions.create(
            model="openclaw:long",
            messages=[{"role": "user", "content": "go"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    usage = chunks[-1].usage
    assert usage is not None
    assert 0 < usage.completion_tokens < 200 and usage.total_tokens <= TOKEN_BUDGET
    words = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split()
    assert len(words) == usage.completion_tokens
    spent = usage_of(second, TINA)
    assert spent["input_tokens"] + spent["output_tokens"] == usage.total_tokens
    # What is left cannot pay for another prompt: refused as OpenAI refuses a spent quota.
    other = openai.OpenAI(
        base_url=f"{second}/v1", api_key="unused", default_headers=as_user(TINA), max_retries=0
    )
    with pytest.raises(openai.RateLimitError) as refused:
        other.chat.completions.create(
            model="openclaw:long", messages=[{"role": "user", "content": "more"}]
        )
    assert refused.value.code == "insufficient_quota"
    assert usage_of(first, TINA)["requests"] == 1  # the refusal spent nothing


def stored_usage(who: str) -> list[tuple[int, int, int, bool]]:
    """`who`'s usage rows in the session store, in the order the calls were made."""

    async def read() -> list[Any]:
        connection = await asyncpg.connect(POSTGRES_URL)
        try:
            return list(
                await connection.fetch(
                    "SELECT input_tokens, output_tokens, cache_read_tokens, estimated"
                    " FROM clawgate_usage WHERE identity = $1 ORDER BY created_at, call",
                    who,
                )
            )
        finally:
            await connection.close()

    return [tuple(row) for row in asyncio.run(read())]


def test_usage_rows_are_what_the_upstream_reported_priced_to_the_cent(
    cluster: tuple[Cluster, list[str]], upstream: UpstreamStandIn
) -> None:
    _, edges = cluster
    upstream.usages.clear()
    answers = []
    for index in range(3):  # one conversation, through both edges
        answer = chat(edges[index % 2], UNA, f"question {index}", model="openclaw:priced", user="u")
        assert answer.status_code == 200, answer.text
        answers.append(answer.json()["usage"])
    key = answer.headers["x-openclaw-session-key"]
    # A turn of two steps: the model calls the agent's own tool, then answers with its result.
    tooled = chat(edges[1], UNA, "what time is it", model="openclaw:tooled")
    assert tooled.status_code == 200, tooled.text
    assert tooled.json()["choices"][0]["message"]["content"].startswith("Let me check.")
    # A manual compaction: one summary call, a request of its own, by the session's own agent
    # (the agent its key names: before, the default agent's model wrote the summary).
    compacted = httpx.post(
        f"{edges[0]}/v1/sessions/{key}/compact", headers=as_user(UNA), json={}, timeout=60
    )
    assert compacted.status_code == 200 and compacted.json()["compacted"], compacted.text

    reported = [
        (
            usage["prompt_tokens"],
            usage["completion_tokens"],
            (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
            False,
        )
        for usage in upstream.usages
    ]
    assert len(reported) == 3 + 2 + 1  # three turns, two tool steps, one summary
    assert stored_usage(UNA) == reported  # call by call, none estimated
    tool_steps = reported[3:5]
    assert tooled.json()["usage"]["prompt_tokens"] == sum(step[0] for step in tool_steps)
    assert {u["prompt_tokens_details"]["cached_tokens"] for u in answers} == {CACHED_TOKENS}

    row = usage_of(edges[0], UNA)
    assert row["requests"] == 3 + 1 + 1
    assert row["input_tokens"] == sum(call[0] for call in reported)
    assert row["output_tokens"] == sum(call[1] for call in reported)
    assert row["cache_read_tokens"] == sum(call[2] for call in reported)
    fresh = row["input_tokens"] - row["cache_read_tokens"]
    expected = (
        fresh * PRICES["input"]
        + row["cache_read_tokens"] * PRICES["cacheRead"]
        + row["output_tokens"] * PRICES["output"]
    ) / 1e6
    assert round(row["cost_usd"], 2) == round(expected, 2) and expected > 1


def test_a_worker_killed_mid_turn_leaves_no_row_and_no_double_count(
    cluster: tuple[Cluster, list[str]],
) -> None:
    running, (first, _) = cluster
    user = f"kill-{uuid.uuid4().hex[:8]}"
    opened = chat(first, KIM, "x", model="openclaw:slow", user=user)
    assert opened.status_code == 200, opened.text
    key = opened.headers["x-openclaw-session-key"]
    wait_until(
        lambda: any(running.turns_logged(a, key) for a in running.addresses), 10, "turn line"
    )
    serving = next(a for a in running.addresses if running.turns_logged(a, key))
    body = {
        "model": "openclaw:slow",
        "user": user,
        "stream": True,
        "messages": [{"role": "user", "content": "a b c d e f g h i j"}],
    }
    with httpx.stream(
        "POST", f"{first}/v1/chat/completions", headers=as_user(KIM), json=body, timeout=60
    ) as streamed:
        lines = streamed.iter_lines()
        next(line for line in lines if '"content"' in line)  # the turn is under way
        running.workers[serving].stop(signal.SIGKILL)
        rest = "\n".join(lines)
    assert '"finish_reason":"stop"' not in rest.replace(" ", "")
    retried = chat(first, KIM, "a b c d e f g h i j", model="openclaw:slow", user=user)
    assert retried.status_code == 200, retried.text
    kept = usage_of(first, KIM)
    assert kept["requests"] == 2  # the first turn and the retry; nothing of the lost one
    first_turn_and_retry = retried.json()["usage"]["completion_tokens"] + 2  # "slow x"
    assert kept["output_tokens"] == first_turn_and_retry
