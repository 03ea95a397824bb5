"""Prompt caching on anthropic-messages (issue 46), over real processes: a 50-turn session
through the `openai` SDK, against the Anthropic stand-in, which caches as Anthropic documents
(devkit/anthropic_cache.py: prefixes up to breakpoints, 1,024 tokens at least, five minutes or an
hour, read back by looking back from each breakpoint). From its third turn on, a session reads at
least 90% of its input from the cache, with or without a tool loop; `cacheRetention: "none"`
reads nothing."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import openai
import pytest

from devkit.anthropic_standin import API_KEY, AnthropicStandIn
from devkit.processes import TOKEN, Stack, echo_config, start_stack

TURNS = 50
# Instructions long enough to be cached (Anthropic caches nothing under 1,024 tokens).
SYSTEM = "You answer questions about the weather and the time, briefly and politely. " * 80


@pytest.fixture(scope="module")
def standin() -> Iterator[AnthropicStandIn]:
    with AnthropicStandIn() as server:
        yield server


@pytest.fixture(scope="module")
def stack(standin: AnthropicStandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("prompt-caching")
    config = echo_config(tmp_path)
    config["models"]["providers"]["claude"] = {
        "api": "anthropic-messages",
        "baseUrl": standin.base_url,
        "apiKey": API_KEY,
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


def session_shares(
    stack: Stack, standin: AnthropicStandIn, agent: str
) -> tuple[list[float], set[int]]:
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
        starts.append(standin.requests[asked]["messages"][0])
    moved = {turn for turn in range(1, TURNS) if starts[turn] != starts[turn - 1]}
    return shares, moved


@pytest.mark.parametrize("agent", ["cached", "tooled"])
def test_a_long_session_reads_nine_tenths_of_its_input_from_the_cache(
    stack: Stack, standin: AnthropicStandIn, agent: str
) -> None:
    shares, moved = session_shares(stack, standin, agent)
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
