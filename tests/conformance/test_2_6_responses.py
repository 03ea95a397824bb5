"""Responses: JSON and SSE shapes, validated against OpenAI's schemas, through the
official openai SDK (sync and async) and plain HTTP."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from devkit.processes import TOKEN, Stack
from tests.support.schemas import assert_valid


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN, max_retries=0)


def test_sync_non_stream(echo_stack: Stack) -> None:
    raw = client(echo_stack).chat.completions.with_raw_response.create(
        model="openclaw:main", messages=[{"role": "user", "content": "hello world"}]
    )
    assert_valid("CreateChatCompletionResponse", raw.http_response.json())
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello world [turns=0]"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "openclaw:main"
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 4


def test_sync_stream(echo_stack: Stack) -> None:
    chunks = list(
        client(echo_stack).chat.completions.create(
            model="openclaw:main",
            messages=[{"role": "user", "content": "stream me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "echo: stream me [turns=0]"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert len({(chunk.id, chunk.created) for chunk in chunks}) == 1


async def test_async_non_stream_and_stream(echo_stack: Stack) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{echo_stack.base_url}/v1", api_key=TOKEN, max_retries=0
    ) as aclient:
        completion = await aclient.chat.completions.create(
            model="openclaw:main", messages=[{"role": "user", "content": "async one"}]
        )
        assert completion.choices[0].message.content == "echo: async one [turns=0]"
        stream = await aclient.chat.completions.create(
            model="openclaw:main", messages=[{"role": "user", "content": "async two"}], stream=True
        )
        parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert "".join(parts) == "echo: async two [turns=0]"


def test_raw_stream_frames_validate_and_end_with_done(echo_stack: Stack) -> None:
    with httpx.stream(
        "POST",
        f"{echo_stack.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={
            "model": "openclaw",
            "stream": True,
            "messages": [{"role": "user", "content": "a b c"}],
        },
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    for line in lines[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", json.loads(line.removeprefix("data: ")))


def test_sdk_raises_standard_errors(echo_stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"{echo_stack.base_url}/v1", api_key="wrong", max_retries=0
        ).chat.completions.create(model="openclaw", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as caught:
        client(echo_stack).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.body["param"] == "model"  # type: ignore[index]


def sse_lines(stack: Stack, body: dict) -> list[str]:
    with httpx.stream(
        "POST",
        f"{stack.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={"stream": True, **body},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["x-openclaw-session-key"]
        return [line for line in response.iter_lines() if line]


def test_keep_alive_comments_while_the_agent_is_silent(echo_stack: Stack) -> None:
    lines = sse_lines(
        echo_stack, {"model": "openclaw:slow", "messages": [{"role": "user", "content": "a b"}]}
    )
    assert lines[-1] == "data: [DONE]"
    assert ": keep-alive" in lines
    first_delta = next(i for i, line in enumerate(lines) if '"content":"slow ' in line)
    assert (
        ": keep-alive" in lines[first_delta:]
    )  # between deltas, 700 ms apart, pinged every 250 ms
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    for chunk in data:
        assert_valid("CreateChatCompletionStreamResponse", chunk)


def test_no_usage_chunk_unless_asked_and_length_finish(echo_stack: Stack) -> None:
    lines = sse_lines(
        echo_stack,
        {"messages": [{"role": "user", "content": "one two three four"}], "max_tokens": 2},
    )
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(chunk["choices"] for chunk in chunks) and all(
        "usage" not in chunk for chunk in chunks
    )
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "echo: one "


def test_error_after_the_stream_started_is_an_error_event_then_done(echo_stack: Stack) -> None:
    lines = sse_lines(
        echo_stack, {"model": "openclaw:flaky", "messages": [{"role": "user", "content": "x"}]}
    )
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2].removeprefix("data: "))["error"]
    assert error["type"] == "api_error" and "broke off" in error["message"]
    assert_valid("ErrorResponse", {"error": error})
    content = [json.loads(line[6:]) for line in lines[:-2]]
    assert content[1]["choices"][0]["delta"]["content"] == "one "  # what came before the failure


def test_non_stream_finish_reason_and_real_usage_from_the_provider(echo_stack: Stack) -> None:
    response = client(echo_stack).chat.completions.create(
        model="openclaw:vision", messages=[{"role": "user", "content": "x"}]
    )
    assert response.choices[0].message.content == "one two three"
    assert response.choices[0].finish_reason == "length"
    assert response.usage is not None
    assert (
        response.usage.prompt_tokens,
        response.usage.completion_tokens,
        response.usage.total_tokens,
    ) == (11, 3, 14)
