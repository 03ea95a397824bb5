"""OpenAI function tools end to end (issue 19), over a real worker and edge: the `openai` SDK,
plain HTTP, the OpenAI Agents SDK and LangChain against an OpenAI-compatible stand-in that
answers with tool calls (it calls the first offered tool, then answers with the results), and
the echo provider's scripted tool mode. Shapes are validated against OpenAI's schemas."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import openai
import pytest
from agents import OpenAIChatCompletionsModel
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from devkit.processes import TOKEN, Stack, echo_config, start_stack
from devkit.upstream import UpstreamStandIn
from tests.support.agents_sdk import run_weather_agent
from tests.support.schemas import assert_valid

CHAT = "/v1/chat/completions"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEATHER = {
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
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamStandIn]:
    with UpstreamStandIn() as server:
        yield server


@pytest.fixture(scope="module")
def stack(upstream: UpstreamStandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("tools")
    config = echo_config(tmp_path, upstream.base_url)
    config["agents"]["list"] += [
        {"id": "caller", "model": "upstream/tools-1"},
        {"id": "caller2", "model": "upstream/tools-2"},
    ]
    running = start_stack(tmp_path, config)
    yield running
    running.stop()


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN)


def post(stack: Stack, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{stack.base_url}{CHAT}", json=body, headers={**AUTH, **headers}, timeout=30)


def sse_chunks(stack: Stack, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream(
        "POST", f"{stack.base_url}{CHAT}", json={**body, "stream": True}, headers=AUTH, timeout=30
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def test_a_tool_call_comes_back_whole_with_its_commentary(stack: Stack) -> None:
    body = {
        "model": "openclaw:caller",
        "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": [WEATHER],
    }
    response = post(stack, body)
    assert response.status_code == 200, response.text
    completion = response.json()
    assert_valid("CreateChatCompletionResponse", completion)
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"] == "call_up_0"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris 0"}


def test_streamed_calls_arrive_in_pieces_with_indexes(stack: Stack) -> None:
    body = {
        "model": "openclaw:caller2",
        "messages": [{"role": "user", "content": "weather twice"}],
        "tools": [WEATHER],
        "stream_options": {"include_usage": True},
    }
    chunks = sse_chunks(stack, body)
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Let me check."
    pieces = [
        piece
        for c in chunks
        if c["choices"]
        for piece in c["choices"][0]["delta"].get("tool_calls") or ()
    ]
    firsts = [piece for piece in pieces if "id" in piece]
    assert [(p["index"], p["id"], p["function"]["name"]) for p in firsts] == [
        (0, "call_up_0", "get_weather"),
        (1, "call_up_1", "get_weather"),
    ]
    for index in (0, 1):
        arguments = "".join(p["function"]["arguments"] for p in pieces if p["index"] == index)
        assert json.loads(arguments) == {"city": f"Paris {index}"}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_the_follow_up_reaches_the_upstream_structurally(
    stack: Stack, upstream: UpstreamStandIn, client: openai.OpenAI
) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather?"}]
    first = client.chat.completions.create(
        model="openclaw:caller",
        messages=messages,
        tools=[WEATHER],  # type: ignore[list-item]
    )
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert isinstance(call, openai.types.chat.ChatCompletionMessageFunctionToolCall)
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    upstream.requests.clear()
    final = client.chat.completions.create(
        model="openclaw:caller",
        messages=messages,
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert final.choices[0].message.content == "results: sunny"
    assert final.choices[0].finish_reason == "stop"
    sent = upstream.requests[-1]["messages"]
    assistant = next(m for m in sent if m["role"] == "assistant")
    assert assistant["tool_calls"] == [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": "get_weather", "arguments": call.function.arguments},
        }
    ]
    assert sent[-1] == {"role": "tool", "content": "sunny", "tool_call_id": call.id}
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]


def test_a_named_session_continues_from_the_stored_tool_call(
    stack: Stack, upstream: UpstreamStandIn
) -> None:
    key = {"x-openclaw-session-key": "tools-session-1"}
    body = {
        "model": "openclaw:caller",
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [WEATHER],
    }
    first = post(stack, body, **key).json()
    call_id = first["choices"][0]["message"]["tool_calls"][0]["id"]
    upstream.requests.clear()
    follow_up = {
        "model": "openclaw:caller",
        "messages": [{"role": "tool", "tool_call_id": call_id, "content": "rainy"}],
        "tools": [WEATHER],
    }
    answer = post(stack, follow_up, **key).json()
    assert answer["choices"][0]["message"]["content"] == "results: rainy"
    sent = upstream.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    assert sent[2]["tool_calls"][0]["id"] == call_id
    assert sent[3]["tool_call_id"] == call_id
    # And the transcript keeps the structure, through the gRPC contract.
    with grpc.insecure_channel(stack.worker_address) as channel:
        stored = pb_grpc.AgentServiceStub(channel).GetSession(
            pb.GetSessionRequest(session_key="tools-session-1")
        )
    roles = [message.role for message in stored.messages]
    assert roles == [
        pb.ROLE_USER,
        pb.ROLE_ASSISTANT,
        pb.ROLE_TOOL,
        pb.ROLE_ASSISTANT,
    ]
    assert stored.messages[1].tool_calls[0].id == call_id
    assert stored.messages[2].tool_call_id == call_id


def test_the_echo_script_calls_tools_and_ids_stay_unique_in_the_session(stack: Stack) -> None:
    key = {"x-openclaw-session-key": "echo-tools-1"}
    ids = []
    for turn in range(2):
        body = {
            "model": "openclaw:main",
            "messages": [{"role": "user", "content": 'call get_time {"zone": "UTC"}'}],
            "tools": [TIME],
        }
        message = post(stack, body, **key).json()["choices"][0]["message"]
        (call,) = message["tool_calls"]
        assert call["function"] == {"name": "get_time", "arguments": '{"zone": "UTC"}'}
        ids.append(call["id"])
        result = {"role": "tool", "tool_call_id": call["id"], "content": f"noon {turn}"}
        answer = post(stack, {**body, "messages": [result]}, **key).json()
        said = answer["choices"][0]["message"]["content"]
        assert said == f"tool {call['id']} said: noon {turn}"
    assert len(set(ids)) == 2  # echo says call_0 both times; the second got a fresh id


def test_required_tool_choice_that_the_model_ignores_is_a_502_naming_the_tool(
    stack: Stack,
) -> None:
    body = {
        "model": "openclaw:main",
        "messages": [{"role": "user", "content": "just talk"}],
        "tools": [TIME, WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_time"}},
    }
    response = post(stack, body)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "api_error" and "get_time" in error["message"]
    chunks_response = httpx.post(
        f"{stack.base_url}{CHAT}", json={**body, "stream": True}, headers=AUTH, timeout=30
    )
    assert "get_time" in chunks_response.text and "just talk" not in chunks_response.text


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"tools": {"type": "function"}}, "tools"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools[0].function.parameters",
        ),
        (
            {"tools": [TIME], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tools": [TIME], "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
        (
            {"tools": [TIME], "tool_choice": {"type": "custom", "custom": {"name": "x"}}},
            "tool_choice",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": {"a": 1}},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c", "content": "r"},
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
    ],
)
def test_bad_tool_requests_are_400s_naming_the_param(
    stack: Stack, change: dict[str, Any], param: str
) -> None:
    body = {"model": "openclaw", "messages": [{"role": "user", "content": "hi"}], **change}
    response = post(stack, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_legacy_functions_map_onto_tools(stack: Stack) -> None:
    body = {
        "model": "openclaw:main",
        "messages": [{"role": "user", "content": "call get_time {}"}],
        "functions": [TIME["function"]],
        "function_call": {"name": "get_time"},
    }
    message = post(stack, body).json()["choices"][0]["message"]
    assert message["tool_calls"][0]["function"]["name"] == "get_time"
    history = {
        "model": "openclaw:main",
        "functions": [TIME["function"]],
        "messages": [
            {"role": "user", "content": "call get_time {}"},
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "get_time", "arguments": "{}"},
            },
            {"role": "function", "name": "get_time", "content": "noon"},
        ],
    }
    answer = post(stack, history).json()
    assert answer["choices"][0]["message"]["content"] == "tool get_time said: noon"


def test_x_openclaw_model_runs_another_configured_model_or_is_a_404(stack: Stack) -> None:
    body = {"model": "openclaw:main", "messages": [{"role": "user", "content": "hi"}]}
    answer = post(stack, body, **{"x-openclaw-model": "upstream/anything"}).json()
    assert answer["choices"][0]["message"]["content"] == "one two three"
    missing = post(stack, body, **{"x-openclaw-model": "nowhere/m"})
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "model",
        "model_not_found",
    )
    assert "nowhere/m" in error["message"]


async def test_the_openai_agents_sdk_runs_a_function_tool_to_the_final_answer(
    stack: Stack, upstream: UpstreamStandIn
) -> None:
    client = AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN)
    model = OpenAIChatCompletionsModel(model="openclaw:caller", openai_client=client)
    ran, final_output = await run_weather_agent(model)
    assert ran == ["Paris 0"]
    assert final_output == "results: sunny in Paris 0"
    follow_up = upstream.requests[-1]
    assert follow_up["messages"][-1]["role"] == "tool"
    assert follow_up["tools"][0]["function"]["name"] == "get_weather"


def test_langchain_bind_tools_gets_the_tool_calls(stack: Stack) -> None:
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    model = ChatOpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN, model="openclaw:caller")
    message = model.bind_tools([get_weather]).invoke("What is the weather in Paris?")
    assert message.content == "Let me check."
    assert [(call["name"], call["args"], call["id"]) for call in message.tool_calls] == [
        ("get_weather", {"city": "Paris 0"}, "call_up_0")
    ]
