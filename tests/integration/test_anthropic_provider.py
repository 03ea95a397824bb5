"""`api: "anthropic-messages"` over real processes (edge, worker, HTTP) against the Anthropic
stand-in (devkit/anthropic_standin.py), which refuses what Anthropic refuses and checks every
body against the `anthropic` SDK's request types; and fallbacks and retries (issue 33)."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall, ChatCompletionToolParam

from devkit.anthropic_standin import API_KEY, AnthropicStandIn
from devkit.processes import TOKEN, Stack, echo_config, free_port, start_stack, wait_until
from tests.support.schemas import assert_valid

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHAT = "/v1/chat/completions"
SYSTEM = "You are the stand-in's agent."
THOUGHT = "The user wants thinking; think first."  # what the stand-in thinks for `thinking`
# The smallest valid PNG: a 1x1 transparent pixel.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def standin() -> Iterator[AnthropicStandIn]:
    with AnthropicStandIn() as server:
        yield server


@pytest.fixture(scope="module")
def stack(standin: AnthropicStandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("anthropic")
    config = echo_config(tmp_path)
    config["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True}
    config["worker"]["metricsListen"] = f"127.0.0.1:{free_port()}"
    config["models"]["providers"]["down"] = {  # nothing listens there: connection refused
        "api": "anthropic-messages",
        "baseUrl": f"http://127.0.0.1:{free_port()}",
        "apiKey": API_KEY,
    }
    config["models"]["providers"]["claude"] = {
        "api": "anthropic-messages",
        "baseUrl": standin.base_url,
        "apiKey": API_KEY,
        "headers": {"x-team": "clawgate-tests"},
        "models": [
            {"id": "said-back", "input": ["text", "image"]},
            {"id": "text-only", "input": ["text"]},
            {"id": "thinking", "reasoning": True, "maxTokens": 4096},
            {"id": "thinking-tools", "reasoning": True, "maxTokens": 4096},
            {"id": "long", "maxTokens": 5},
        ],
    }
    config["mcp"] = {
        "servers": {"time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]}}
    }
    agents = [
        {"id": "claude", "model": "claude/said-back", "systemPrompt": SYSTEM},
        {"id": "thinker", "model": "claude/thinking-tools", "tools": {"allow": ["time__*"]}},
        {
            "id": "fallback",
            "model": {"primary": "claude/overloaded", "fallbacks": ["claude/words-3"]},
        },
        {
            "id": "ratelimited",
            "model": {"primary": "claude/ratelimited-30", "fallbacks": ["echo/echo-1"]},
        },
        {"id": "limited", "model": "claude/ratelimited-30"},
        {"id": "unreachable", "model": {"primary": "down/any", "fallbacks": ["claude/words-2"]}},
        {"id": "once", "model": "claude/overloaded-1-once"},
        {
            "id": "broken",
            "model": {"primary": "claude/break-after-1", "fallbacks": ["echo/echo-1"]},
        },
    ]
    config["agents"]["list"] += agents
    running = start_stack(tmp_path, config)
    yield running
    running.stop()


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN, max_retries=0)


def asked(standin: AnthropicStandIn, before: int) -> list[dict[str, Any]]:
    """The request bodies the stand-in got since `before` (its count then)."""
    return standin.requests[before:]


def test_text_with_the_system_prompt_top_level(
    client: openai.OpenAI, standin: AnthropicStandIn
) -> None:
    before = len(standin.requests)
    completion = client.chat.completions.create(
        model="openclaw:claude", messages=[{"role": "user", "content": "hello there"}]
    )
    assert_valid("CreateChatCompletionResponse", completion.model_dump(exclude_unset=True))
    assert completion.choices[0].message.content == f"system={SYSTEM} user=hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == sum(standin.usages[-1].values())
    [body] = asked(standin, before)
    # Cached for five minutes unless told otherwise (cacheRetention "short"): a breakpoint
    # after the system prompt, and after the latest input.
    ephemeral = {"type": "ephemeral"}
    assert body["system"] == [{"type": "text", "text": SYSTEM, "cache_control": ephemeral}]
    assert body["messages"][-1]["content"][-1]["cache_control"] == ephemeral
    assert body["stream"] is True
    assert all(message["role"] in ("user", "assistant") for message in body["messages"])
    assert body["max_tokens"] == 4096  # none asked for, none in the catalog: the provider's
    headers = standin.headers[-1]
    assert headers["x-api-key"] == API_KEY and headers["anthropic-version"] == "2023-06-01"
    assert headers["x-team"] == "clawgate-tests"  # the provider's `headers`


def test_stream_chunks_are_valid_and_carry_usage(
    client: openai.OpenAI, standin: AnthropicStandIn
) -> None:
    chunks = list(
        client.chat.completions.create(
            model="openclaw:claude",
            messages=[{"role": "user", "content": "stream it"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"system={SYSTEM} user=stream it"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == sum(standin.usages[-1].values())


def test_max_tokens_is_sent_and_its_stop_is_length(
    client: openai.OpenAI, standin: AnthropicStandIn
) -> None:
    before = len(standin.requests)
    completion = client.chat.completions.create(
        model="openclaw:claude",
        messages=[{"role": "user", "content": "go on"}],
        extra_headers={"x-openclaw-model": "claude/long"},
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "w0 w1 w2 w3 w4 "
    assert asked(standin, before)[0]["max_tokens"] == 5  # the catalog's maxTokens
    client.chat.completions.create(
        model="openclaw:claude",
        messages=[{"role": "user", "content": "go on"}],
        max_tokens=3,
        extra_headers={"x-openclaw-model": "claude/long"},
    )
    assert standin.requests[-1]["max_tokens"] == 3  # the request's own wins


def test_an_image_goes_as_a_base64_block(client: openai.OpenAI, standin: AnthropicStandIn) -> None:
    url = f"data:image/png;base64,{base64.b64encode(PNG).decode()}"
    content: Any = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    completion = client.chat.completions.create(
        model="openclaw:claude", messages=[{"role": "user", "content": content}]
    )
    assert completion.choices[0].message.content == (
        f"system={SYSTEM} user=what is this? image=image/png:{len(PNG)}"
    )
    block = next(b for b in standin.requests[-1]["messages"][-1]["content"] if b["type"] == "image")
    assert block["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": base64.b64encode(PNG).decode(),
    }


def test_a_model_whose_catalog_says_text_refuses_images(stack: Stack) -> None:
    url = f"data:image/png;base64,{base64.b64encode(PNG).decode()}"
    body = {
        "model": "openclaw:claude",
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
        ],
    }
    headers = {**AUTH, "x-openclaw-model": "claude/text-only"}
    response = httpx.post(f"{stack.base_url}{CHAT}", json=body, headers=headers, timeout=30)
    assert response.status_code == 400
    assert "does not accept images" in response.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_call_round_trip(
    client: openai.OpenAI, standin: AnthropicStandIn, stream: bool
) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    tool_model = {"x-openclaw-model": "claude/tools"}
    first = client.chat.completions.create(
        model="openclaw:claude",
        messages=messages,
        tools=[WEATHER_TOOL],
        extra_headers=tool_model,
    )
    if stream:  # the same call, streamed: pieces that join to the same call
        chunks = list(
            client.chat.completions.create(
                model="openclaw:claude",
                messages=messages,
                tools=[WEATHER_TOOL],
                extra_headers=tool_model,
                stream=True,
            )
        )
        for chunk in chunks:
            assert_valid("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True))
        pieces = [
            call
            for chunk in chunks
            if chunk.choices
            for call in chunk.choices[0].delta.tool_calls or ()
        ]
        functions = [piece.function for piece in pieces if piece.function is not None]
        assert pieces[0].id == "toolu_standin_0" and functions[0].name == "get_weather"
        arguments = "".join(function.arguments or "" for function in functions)
        assert json.loads(arguments) == {"city": "Paris"}
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me check."
    [call] = choice.message.tool_calls or []
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.id == "toolu_standin_0" and json.loads(call.function.arguments) == {"city": "Paris"}
    tools_sent = standin.requests[-1]["tools"]
    assert tools_sent[0]["name"] == "get_weather"
    assert tools_sent[0]["input_schema"]["properties"] == {"city": {"type": "string"}}
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21°C"},
    ]
    before = len(standin.requests)
    answer = client.chat.completions.create(
        model="openclaw:claude",
        messages=messages,
        tools=[WEATHER_TOOL],
        extra_headers=tool_model,
    )
    assert answer.choices[0].message.content == "tool said: sunny, 21°C"
    [body] = asked(standin, before)
    assistant, result = body["messages"][-2:]
    assert assistant["role"] == "assistant"
    assert assistant["content"][-1] == {
        "type": "tool_use",
        "id": "toolu_standin_0",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    assert result == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_standin_0",
                "content": "sunny, 21°C",
                "cache_control": {"type": "ephemeral"},  # the latest input: a breakpoint
            }
        ],
    }


def test_thinking_is_kept_out_of_the_answer(
    client: openai.OpenAI, standin: AnthropicStandIn
) -> None:
    before = len(standin.requests)
    completion = client.chat.completions.create(
        model="openclaw:claude",
        messages=[{"role": "user", "content": "think"}],
        extra_headers={"x-openclaw-model": "claude/thinking"},
    )
    message = completion.choices[0].message
    assert message.content == "system=You are the stand-in's agent. user=think"
    # The thinking is shown apart, as reasoning models' OpenAI-compatible servers show it.
    assert (message.model_extra or {})["reasoning_content"] == THOUGHT
    [body] = asked(standin, before)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert "temperature" not in body
    chunks = list(
        client.chat.completions.create(
            model="openclaw:claude",
            messages=[{"role": "user", "content": "think"}],
            extra_headers={"x-openclaw-model": "claude/thinking"},
            stream=True,
        )
    )
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True))
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    assert "".join(delta.content or "" for delta in deltas) == message.content
    reasoning = [(delta.model_extra or {}).get("reasoning_content") for delta in deltas]
    assert "".join(piece for piece in reasoning if piece) == THOUGHT
    assert reasoning.index(THOUGHT) < next(i for i, d in enumerate(deltas) if d.content)


def test_thinking_is_a_reasoning_item_in_responses(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN, max_retries=0)
    think = {"x-openclaw-model": "claude/thinking"}
    response = client.responses.create(model="openclaw:claude", input="think", extra_headers=think)
    kinds = [item.type for item in response.output]
    assert kinds == ["reasoning", "message"]
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == THOUGHT
    assert response.output_text == "system=You are the stand-in's agent. user=think"
    events = list(
        client.responses.create(
            model="openclaw:claude", input="think", extra_headers=think, stream=True
        )
    )
    deltas = [event.delta for event in events if event.type == "response.reasoning_text.delta"]
    assert "".join(deltas) == THOUGHT
    done = next(event for event in events if event.type == "response.completed")
    assert [item.type for item in done.response.output] == ["reasoning", "message"]


def test_thinking_goes_back_signed_in_the_agents_own_tool_loop(
    client: openai.OpenAI, standin: AnthropicStandIn
) -> None:
    """The stand-in refuses the loop's second call unless it starts with the signed thinking
    block of the first (as Anthropic does with thinking on)."""
    before = len(standin.requests)
    refusals = len(standin.refusals)
    completion = client.chat.completions.create(
        model="openclaw:thinker", messages=[{"role": "user", "content": "what time is it?"}]
    )
    assert (completion.choices[0].message.content or "").startswith("Let me check.")
    assert "tool said:" in (completion.choices[0].message.content or "")
    first, second = asked(standin, before)
    assert first["tools"][0]["name"].startswith("time__")
    thinking = second["messages"][-2]["content"][0]
    assert thinking["type"] == "thinking" and thinking["signature"]
    assert len(standin.refusals) == refusals


@pytest.mark.parametrize("stream", [False, True])
def test_an_overloaded_primary_is_answered_by_the_fallback(
    stack: Stack, client: openai.OpenAI, standin: AnthropicStandIn, stream: bool
) -> None:
    before = len(standin.requests)
    messages: Any = [{"role": "user", "content": "hi"}]
    if stream:
        chunks = list(
            client.chat.completions.create(
                model="openclaw:fallback", messages=messages, stream=True
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        completion = client.chat.completions.create(model="openclaw:fallback", messages=messages)
        text = completion.choices[0].message.content or ""
    assert text == "w0 w1 w2 "
    models = [body["model"] for body in asked(standin, before)]
    assert models == ["overloaded"] * 3 + ["words-3"]  # three attempts, then the fallback
    assert "falling back to claude/words-3" in stack.worker.log()
    # The turn's line (written once the answer is out) names the model that answered.
    wait_until(
        lambda: "agent=fallback model=claude/words-3" in stack.worker.log(), 10, "the turn's line"
    )


def test_a_rate_limited_primary_falls_back_at_once(
    client: openai.OpenAI, standin: AnthropicStandIn
) -> None:
    before = len(standin.requests)
    completion = client.chat.completions.create(
        model="openclaw:ratelimited", messages=[{"role": "user", "content": "hi"}]
    )
    assert (completion.choices[0].message.content or "").startswith("echo: hi")
    # Retry-After 30 s is longer than a turn waits for: no second try of the same model.
    assert [body["model"] for body in asked(standin, before)] == ["ratelimited-30"]


def test_a_rate_limit_without_fallback_reaches_the_client_with_retry_after(stack: Stack) -> None:
    body = {"model": "openclaw:limited", "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{stack.base_url}{CHAT}", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    error = response.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert "claude/ratelimited-30" in error["message"]  # each model tried is named
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="openclaw:limited", messages=body["messages"])  # type: ignore[arg-type]


def test_one_transient_overload_is_retried_on_the_same_model(
    stack: Stack, client: openai.OpenAI, standin: AnthropicStandIn
) -> None:
    before = len(standin.requests)
    completion = client.chat.completions.create(
        model="openclaw:once", messages=[{"role": "user", "content": "again"}]
    )
    assert completion.choices[0].message.content == "system=You are an echo. user=again"
    assert [body["model"] for body in asked(standin, before)] == ["overloaded-1-once"] * 2
    assert "model claude/overloaded-1-once failed before answering" in stack.worker.log()


def test_a_stream_that_failed_after_its_first_word_is_not_restarted(
    stack: Stack, client: openai.OpenAI, standin: AnthropicStandIn
) -> None:
    before, log_before = len(standin.requests), len(stack.worker.log())
    said: list[str] = []
    chunks = client.chat.completions.create(
        model="openclaw:broken", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(openai.APIError, match="Overloaded"):
        for chunk in chunks:
            said += [chunk.choices[0].delta.content or ""] if chunk.choices else []
    assert "".join(said) == "one "  # the first word, then the failure: no echo fallback
    assert [body["model"] for body in asked(standin, before)] == ["break-after-1"]
    assert "falling back" not in stack.worker.log()[log_before:]


def test_a_client_tool_loop_in_a_session_sends_the_stored_thinking_back(
    client: openai.OpenAI, standin: AnthropicStandIn
) -> None:
    """The session keeps the signed thinking with the turn, so the next call of the same
    session continues the tool loop with thinking on (the stand-in checks the signature)."""
    thinking_model = {"x-openclaw-model": "claude/thinking-tools"}
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    first = client.chat.completions.create(
        model="openclaw:claude",
        messages=messages,
        tools=[WEATHER_TOOL],
        user="thinking-loop",
        extra_headers=thinking_model,
    )
    [call] = first.choices[0].message.tool_calls or []
    assert "think first" not in (first.choices[0].message.content or "")
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "rainy"},
    ]
    before, refusals = len(standin.requests), len(standin.refusals)
    answer = client.chat.completions.create(
        model="openclaw:claude",
        messages=messages,
        tools=[WEATHER_TOOL],
        user="thinking-loop",
        extra_headers=thinking_model,
    )
    assert answer.choices[0].message.content == "tool said: rainy"
    [body] = asked(standin, before)
    assert body["thinking"]["type"] == "enabled" and len(standin.refusals) == refusals
    assistant = body["messages"][-2]
    assert assistant["content"][0]["type"] == "thinking" and assistant["content"][0]["signature"]


def worker_metrics(stack: Stack) -> str:
    return httpx.get(f"http://{stack.config['worker']['metricsListen']}/metrics", timeout=10).text


def test_an_unreachable_primary_is_retried_then_falls_back(
    stack: Stack, client: openai.OpenAI
) -> None:
    completion = client.chat.completions.create(
        model="openclaw:unreachable", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == "w0 w1 "
    metrics = worker_metrics(stack)
    # Two retries of the refused connection, then one fallback: each counted.
    assert (
        'clawgate_worker_model_retries_total{model="down/any",reason="unavailable"} 2.0' in metrics
    )
    assert (
        'clawgate_worker_model_fallbacks_total{fallback="claude/words-2",model="down/any"} 1.0'
        in metrics
    )
