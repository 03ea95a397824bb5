"""Prompt caching (issue 46), over real processes: a 50-turn session through the `openai` SDK,
against the Anthropic stand-in, which caches as Anthropic documents (devkit/anthropic_cache.py:
prefixes up to breakpoints, 1,024 tokens at least, five minutes or an hour, read back by looking
back from each breakpoint), and against an OpenAI-compatible one that caches as OpenAI documents
(per `prompt_cache_key`, in 128-token steps from 1,024). From its third turn on, a session reads
at least 90% of its input from the cache, with or without a tool loop; `cacheRetention: "none"`
reads nothing; each request repeats the previous one's prefix byte for byte."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import Any, Protocol

import openai
import pytest

from devkit.anthropic_cache import prefix_bytes
from devkit.anthropic_standin import API_KEY, AnthropicStandIn
from devkit.processes import TOKEN, Stack, echo_config, start_stack
from devkit.upstream import CachingUpstreamStandIn

TURNS = 50
# Instructions long enough to be cached (Anthropic caches nothing under 1,024 tokens).
SYSTEM = "You answer questions about the weather and the time, briefly and politely. " * 80


@pytest.fixture(scope="module")
def standin() -> Iterator[AnthropicStandIn]:
    with AnthropicStandIn() as server:
        yield server


@pytest.fixture(scope="module")
def openai_standin() -> Iterator[CachingUpstreamStandIn]:
    with CachingUpstreamStandIn() as server:
        yield server


@pytest.fixture(scope="module")
def stack(
    standin: AnthropicStandIn,
    openai_standin: CachingUpstreamStandIn,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("prompt-caching")
    config = echo_config(tmp_path)
    config["models"]["providers"]["claude"] = {
        "api": "anthropic-messages",
        "baseUrl": standin.base_url,
        "apiKey": API_KEY,
    }
    keyed = {"compat": {"supportsPromptCacheKey": True}}
    config["models"]["providers"]["openai"] = {
        "api": "openai-completions",
        "baseUrl": openai_standin.base_url,
        "models": [{"id": "m", **keyed}, {"id": "tools-1", **keyed}],
    }
    config["mcp"] = {
        "servers": {"time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]}}
    }
    config["agents"]["list"] += [
        # No cacheRetention: an anthropic-messages agent caches for five minutes.
        {"id": "cached", "model": "claude/words-16", "systemPrompt": SYSTEM},
        {
            "id": "tooled",
            "model": "claude/tools-then-words",
            "systemPrompt": SYSTEM,
            "tools": {"allow": ["time__*"]},
        },
        {"id": "oa-cached", "model": "openai/m", "systemPrompt": SYSTEM},
        {
            "id": "oa-tooled",
            "model": "openai/tools-1",
            "systemPrompt": SYSTEM,
            "tools": {"allow": ["time__*"]},
        },
        {
            "id": "uncached",
            "model": "claude/words-16",
            "systemPrompt": SYSTEM,
            "params": {"cacheRetention": "none"},
        },
    ]
    running = start_stack(tmp_path, config)
    yield running
    running.stop()


class Recording(Protocol):
    requests: list[dict[str, Any]]


def session_shares(stack: Stack, standin: Recording, agent: str) -> tuple[list[float], set[int]]:
    """Each turn's share of input tokens read from the cache, as the SDK reads the usage; and
    the turns whose prompt starts elsewhere than the turn before's (historyLimit's steps)."""
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN, max_retries=0)
    user = f"caching-{uuid.uuid4().hex[:8]}"
    shares = []
    starts = []
    for turn in range(TURNS):
        asked = len(standin.requests)
        completion = client.chat.completions.create(
            model=f"openclaw:{agent}",
            messages=[{"role": "user", "content": f"Question {turn}: is it sunny?"}],
            user=user,
        )
        usage = completion.usage
        assert usage is not None and usage.prompt_tokens_details is not None
        cached = usage.prompt_tokens_details.cached_tokens or 0
        shares.append(cached / usage.prompt_tokens)
        body = standin.requests[asked]
        starts.append(next(m for m in body["messages"] if m.get("role") != "system"))
    moved = {turn for turn in range(1, TURNS) if starts[turn] != starts[turn - 1]}
    return shares, moved


@pytest.mark.parametrize("agent", ["cached", "tooled", "oa-cached", "oa-tooled"])
def test_a_long_session_reads_nine_tenths_of_its_input_from_the_cache(
    stack: Stack,
    standin: AnthropicStandIn,
    openai_standin: CachingUpstreamStandIn,
    agent: str,
) -> None:
    server: Recording = openai_standin if agent.startswith("oa-") else standin
    shares, moved = session_shares(stack, server, agent)
    # The planned breaks: the turn whose history historyLimit cut further (it cuts in steps of
    # half the limit, so this happens every 50 messages, not every turn).
    assert len(moved) <= 3, moved
    kept = [share for turn, share in enumerate(shares[2:], start=2) if turn not in moved]
    assert min(kept) >= 0.9, " ".join(f"{share:.2f}" for share in shares)


def test_cache_retention_none_reads_nothing(stack: Stack, standin: AnthropicStandIn) -> None:
    before = len(standin.requests)
    shares, _ = session_shares(stack, standin, "uncached")
    assert shares == [0.0] * TURNS
    sent = standin.requests[before:]
    assert not any("cache_control" in str(body) for body in sent)


@pytest.mark.parametrize("agent", ["tooled", "oa-tooled"])
def test_each_request_repeats_the_previous_ones_prefix_byte_for_byte(
    stack: Stack,
    standin: AnthropicStandIn,
    openai_standin: CachingUpstreamStandIn,
    agent: str,
) -> None:
    """With the agent's MCP tools offered, over three turns of two steps each: every request
    begins with the bytes of the one before, up to the end of that one's messages."""
    server: Recording = openai_standin if agent.startswith("oa-") else standin
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN, max_retries=0)
    user = f"prefix-{uuid.uuid4().hex[:8]}"
    before = len(server.requests)
    for turn in range(3):
        client.chat.completions.create(
            model=f"openclaw:{agent}",
            messages=[{"role": "user", "content": f"What time is it now ({turn})?"}],
            user=user,
        )
    bodies = server.requests[before:]
    assert len(bodies) == 6 and all(body.get("tools") for body in bodies)
    if agent.startswith("oa-"):  # one cache key for the session, and not its name
        keys = {body["prompt_cache_key"] for body in bodies}
        assert len(keys) == 1 and user not in keys.pop()
    for earlier, later in zip(bodies, bodies[1:], strict=False):
        count = len(earlier["messages"])
        assert prefix_bytes(later, count) == prefix_bytes(earlier, count)
