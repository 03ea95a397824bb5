"""POST /v1/responses (issue 21, first part) over a real worker and edge: the `openai` SDK's
`responses.create` and `responses.stream`, plain HTTP with every object and event validated
against the `openai` package's Responses types, function tools resent as history, and the
OpenAI Agents SDK's default Responses model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import openai
import orjson
import pytest
from agents import OpenAIResponsesModel
from openai import AsyncOpenAI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from devkit.processes import TOKEN, Stack, echo_config, start_stack
from devkit.upstream import CACHED_TOKENS, UpstreamStandIn
from tests.support.agents_sdk import run_weather_agent

PATH = "/v1/responses"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamStandIn]:
    with UpstreamStandIn() as server:
        yield server


@pytest.fixture(scope="module")
def stack(upstream: UpstreamStandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("responses")
    config = echo_config(tmp_path, upstream.base_url)
    config["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True}
    config["agents"]["list"] += [{"id": "caller", "model": "upstream/tools-1"}]
    running = start_stack(tmp_path, config)
    yield running
    running.stop()


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN)


def post(stack: Stack, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{stack.base_url}{PATH}", json=body, headers=AUTH, timeout=30)


def events_of(stack: Stack, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream's events, each checked against the SDK's types; then `[DONE]`."""
    with httpx.stream(
        "POST", f"{stack.base_url}{PATH}", json={**body, "stream": True}, headers=AUTH, timeout=30
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line and not line.startswith(":")]
    assert lines[-1] == "data: [DONE]"
    events = []
    for kind, data in zip(lines[:-1:2], lines[1:-1:2], strict=True):
        event = json.loads(data.removeprefix("data: "))
        assert kind == f"event: {event['type']}"
        EVENTS.validate_python(event)  # strict: every field the SDK's types ask for
        events.append(event)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    return events


def test_a_text_answer_through_the_sdk_and_valid_against_the_response_type(
    stack: Stack, client: openai.OpenAI
) -> None:
    answer = client.responses.create(model="openclaw", input="hello", instructions="Be brief.")
    assert answer.output_text == "echo: hello [turns=0]"
    assert answer.status == "completed"
    body = post(stack, {"model": "openclaw:beta", "input": "hi"}).json()
    Response.model_validate(body)
    assert body["object"] == "response" and body["id"].startswith("resp_")
    assert body["output"][0]["content"][0]["text"] == "echo: hi [turns=0]"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0


def test_the_stream_sends_every_event_in_order(stack: Stack, client: openai.OpenAI) -> None:
    events = events_of(stack, {"model": "openclaw", "input": "one two"})
    kinds = [event["type"] for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [event["delta"] for event in events if event["type"] == "response.output_text.delta"]
    assert "".join(deltas) == "echo: one two [turns=0]"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "".join(deltas)
    with client.responses.stream(model="openclaw", input="streamed") as stream:
        seen = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == "echo: streamed [turns=0]"
    assert seen[-1] == "response.completed"


def test_max_output_tokens_ends_incomplete(stack: Stack) -> None:
    body = {"model": "openclaw", "input": "a b c d e f", "max_output_tokens": 2}
    answer = post(stack, body).json()
    Response.model_validate(answer)
    assert answer["status"] == "incomplete"
    assert answer["incomplete_details"] == {"reason": "max_output_tokens"}
    events = events_of(stack, body)
    assert events[-1]["type"] == "response.incomplete"


def test_a_function_call_round_trip_resending_history(
    stack: Stack, client: openai.OpenAI, upstream: UpstreamStandIn
) -> None:
    first = client.responses.create(
        model="openclaw:caller",
        input="What is the weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert [call.name for call in calls] == ["get_weather"]
    arguments = json.loads(calls[0].arguments)
    second = client.responses.create(
        model="openclaw:caller",
        tools=[WEATHER],  # type: ignore[list-item]
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            *[item.model_dump(exclude_none=True) for item in first.output],  # type: ignore[list-item]
            {
                "type": "function_call_output",
                "call_id": calls[0].call_id,
                "output": f"sunny in {arguments['city']}",
            },
        ],
    )
    assert second.output_text == f"results: sunny in {arguments['city']}"
    sent = upstream.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    assert sent[2]["tool_calls"][0]["id"] == sent[3]["tool_call_id"] == calls[0].call_id


def test_streamed_function_calls_are_items_with_argument_deltas(stack: Stack) -> None:
    events = events_of(
        stack, {"model": "openclaw:caller", "input": "Weather in Oslo?", "tools": [WEATHER]}
    )
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [e["item"]["type"] for e in added][-1] == "function_call"
    pieces = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    (done,) = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert "".join(pieces) == done["arguments"]
    final = events[-1]["response"]
    assert final["output"][-1]["type"] == "function_call"
    assert final["output"][-1]["arguments"] == done["arguments"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "openclaw"}, "input"),
        ({"input": [{"type": "message", "role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x", "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        (
            {
                "instructions": "Be brief.",
                "input": [
                    {"role": "user", "content": "q1"},
                    {"role": "assistant", "content": "a1"},
                    {"role": "user", "content": "q2"},
                    {"role": "user", "content": [{"type": "input_image", "image_url": "x"}]},
                ],
            },
            "input[3].content[0].image_url",
        ),
    ],
)
def test_bad_requests_are_400s_naming_the_param(
    stack: Stack, body: dict[str, Any], param: str
) -> None:
    response = post(stack, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_a_turn_that_fails_after_the_stream_began_ends_with_response_failed(
    stack: Stack,
) -> None:
    """A pinned tool the model does not call: the text was held back, and the stream ends with
    response.failed naming the tool (non-stream: a 502)."""
    body = {
        "model": "openclaw",
        "input": "just talk",
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "name": "get_weather"},
    }
    assert post(stack, body).status_code == 502
    events = events_of(stack, body)
    assert [event["type"] for event in events][-1] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and "get_weather" in failed["error"]["message"]
    assert not any(event["type"] == "response.output_text.delta" for event in events)


def test_input_images_reach_a_model_that_takes_them(stack: Stack) -> None:
    pixel = (
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4"
        "DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
    )
    body = {
        "model": "openclaw:vision",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what is this?"},
                    {"type": "input_image", "image_url": pixel},
                ],
            }
        ],
    }
    answer = post(stack, body)
    assert answer.status_code == 200, answer.text
    Response.model_validate(answer.json())
    refused = post(stack, {**body, "model": "openclaw:main"})  # echo takes no images
    assert refused.status_code == 400


def test_a_client_that_leaves_cancels_its_turn(stack: Stack) -> None:
    """The slow agent says a word every 0.7 s; the client leaves after the first. Had the turn
    run on, it would be stored after ~1.4 s; a cancelled turn stores nothing."""
    session = {"x-openclaw-session-key": "responses-leaving-1"}
    body = {"model": "openclaw:slow", "input": "a b c", "stream": True}
    with httpx.stream(
        "POST", f"{stack.base_url}{PATH}", json=body, headers={**AUTH, **session}, timeout=30
    ) as response:
        lines = response.iter_lines()
        while "response.output_text.delta" not in next(lines):
            pass
    time.sleep(3)
    with grpc.insecure_channel(stack.worker_address) as channel:
        stored = pb_grpc.AgentServiceStub(channel).GetSession(
            pb.GetSessionRequest(session_key="responses-leaving-1")
        )
    assert list(stored.messages) == []


def test_previous_response_id_continues_that_session(stack: Stack, client: openai.OpenAI) -> None:
    first = client.responses.create(model="openclaw:beta", input="first")
    assert first.output_text == "echo: first [turns=0]"
    second = client.responses.create(
        model="openclaw:beta", input="second", previous_response_id=first.id
    )
    assert second.output_text == "echo: second [turns=2]"  # it saw the first turn
    third = client.responses.create(
        model="openclaw:beta", input="third", previous_response_id=second.id
    )
    assert third.output_text == "echo: third [turns=4]"
    again = client.responses.create(  # any earlier response: the same session, now longer
        model="openclaw:beta", input="fourth", previous_response_id=first.id
    )
    assert again.output_text == "echo: fourth [turns=6]"


def test_a_function_call_round_trip_with_previous_response_id(
    stack: Stack, client: openai.OpenAI, upstream: UpstreamStandIn
) -> None:
    first = client.responses.create(
        model="openclaw:caller",
        input="What is the weather in Rome?",
        tools=[WEATHER],  # type: ignore[list-item]
    )
    (call,) = [item for item in first.output if item.type == "function_call"]
    second = client.responses.create(
        model="openclaw:caller",
        tools=[WEATHER],  # type: ignore[list-item]
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "warm"}],
    )
    assert second.output_text == "results: warm"
    sent = upstream.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    assert sent[2]["tool_calls"][0]["id"] == sent[3]["tool_call_id"] == call.call_id


def test_an_unknown_or_foreign_previous_response_id_is_refused(
    stack: Stack, client: openai.OpenAI
) -> None:
    unknown = post(stack, {"model": "openclaw", "input": "x", "previous_response_id": "resp_no"})
    assert unknown.status_code == 404
    error = unknown.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "previous_response_id"
    mine = client.responses.create(model="openclaw:beta", input="mine")
    other = post(stack, {"model": "openclaw:main", "input": "x", "previous_response_id": mine.id})
    assert other.status_code == 400
    assert "beta" in other.json()["error"]["message"]


async def test_the_agents_sdk_default_responses_model_runs_a_tool_to_the_final_answer(
    stack: Stack,
) -> None:
    client = AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN)
    model = OpenAIResponsesModel(model="openclaw:caller", openai_client=client)
    ran, final_output = await run_weather_agent(model)
    assert len(ran) == 1
    assert final_output == f"results: sunny in {ran[0]}"


def test_more_input_items_than_max_messages_are_refused_at_once(stack: Stack) -> None:
    """400,000 items kept a worker busy for minutes, and its model with it (issue 31)."""
    item = {"type": "message", "role": "user", "content": "x"}
    body = orjson.dumps({"model": "openclaw", "input": [item] * 400_000})
    started = time.monotonic()
    refused = httpx.post(f"{stack.base_url}{PATH}", content=body, headers=AUTH, timeout=30)
    took = time.monotonic() - started
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "array_above_max_length" and error["param"] == "input"
    assert "maxMessages" in error["message"]
    assert took < 5  # refused before anything is validated: well under a second here
    assert post(stack, {"model": "openclaw", "input": "hi"}).status_code == 200


def test_cached_prompt_tokens_reach_both_apis(client: openai.OpenAI) -> None:
    """The upstream's `prompt_tokens_details.cached_tokens`, as OpenAI's SDK reads it."""
    chat = client.chat.completions.create(
        model="openclaw:vision", messages=[{"role": "user", "content": "hi"}]
    )
    assert chat.usage is not None and chat.usage.prompt_tokens_details is not None
    assert chat.usage.prompt_tokens_details.cached_tokens == CACHED_TOKENS
    response = client.responses.create(model="openclaw:vision", input="hi")
    assert response.usage is not None
    assert response.usage.input_tokens_details.cached_tokens == CACHED_TOKENS
