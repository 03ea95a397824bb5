from __future__ import annotations

import base64
import re
from collections.abc import Mapping

import pytest

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.dialects.chat_request import parse_chat_request
from gateway_edge.dialects.chat_turn import chat_turn
from gateway_edge.dialects.responses_request import parse_responses_request
from gateway_edge.dialects.responses_turn import responses_turn
from gateway_edge.errors import ApiError
from gateway_edge.input_sources import InputSources
from gateway_edge.sessions import Session
from gateway_edge.turn_input import TurnInput, turn_request_for
from services.gateway_config import ChatCompletionsEndpointConfig, ResponsesEndpointConfig

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


def turn(**body: object) -> pb.RunTurnRequest:
    return turn_request_for(chat_of(body), "main", Session("key", named=True), "rid")


def chat_of(body: dict[str, object]) -> TurnInput:
    return chat_turn(parse_chat_request(body), InputSources(ChatCompletionsEndpointConfig()))


def responses_of(body: Mapping[str, object]) -> TurnInput:
    sources = InputSources(ResponsesEndpointConfig())
    return responses_turn(parse_responses_request(body), sources)


def test_system_and_developer_become_extra_instructions() -> None:
    request = turn(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            {"role": "system", "content": "  "},
            {"role": "user", "content": "hi"},
        ]
    )
    assert request.extra_system_prompt == "Be brief.\n\nUse French."
    assert request.input.text == "hi" and request.input.role == pb.ROLE_USER
    assert list(request.context) == []
    assert (request.agent_id, request.session_key, request.request_id) == ("main", "key", "rid")


def test_earlier_turns_are_structured_context() -> None:
    request = turn(
        messages=[
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "tool out"},
        ]
    )
    assert [(m.role, m.text) for m in request.context] == [
        (pb.ROLE_USER, "q1"),
        (pb.ROLE_ASSISTANT, "a1"),
        (pb.ROLE_ASSISTANT, ""),
    ]
    (call,) = request.context[2].tool_calls
    assert (call.id, call.name, call.arguments) == ("c1", "f", "{}")
    assert request.input.role == pb.ROLE_TOOL and request.input.text == "tool out"
    assert request.input.tool_call_id == "c1"


def test_text_parts_join_with_newlines_and_images_decode() -> None:
    request = turn(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "input_text", "text": "b"},
                ],
            }
        ]
    )
    assert request.input.text == "a\nb"
    assert request.input.images[0].media_type == "image/png"
    assert request.input.images[0].data.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "only system"}],
        [{"role": "user", "content": "   "}],
        [{"role": "user", "content": []}],
        [{"role": "assistant", "content": "no user"}],
    ],
)
def test_missing_user_message(messages: list[dict]) -> None:
    with pytest.raises(ApiError, match="Missing user message in messages."):
        turn(messages=messages)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://example.com/cat.png", "images.allowUrl is off"),
        ("data:image/bmp;base64,AAAA", "Unsupported image type"),
        ("data:image/png;base64,@@@", "base64 data is invalid"),
        ("data:image/png,plain", "base64 data: URI"),
    ],
)
def test_bad_images_are_400(url: str, message: str) -> None:
    with pytest.raises(ApiError, match=message) as caught:
        turn(
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
            ]
        )
    assert caught.value.param == "messages[0].content[0].image_url.url"


def test_at_most_eight_images() -> None:
    part = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    turn(messages=[{"role": "user", "content": [part] * 8}])
    with pytest.raises(ApiError, match="At most 8 images"):
        turn(messages=[{"role": "user", "content": [part] * 9}])


def test_sampling_fields_are_forwarded() -> None:
    request = turn(
        messages=[{"role": "user", "content": "x"}],
        temperature=0.5,
        top_p=0.9,
        max_tokens=10,
        max_completion_tokens=7,
        stop="END",
        seed=3,
        presence_penalty=-1.5,
        frequency_penalty=2,
        response_format={"type": "json_object"},
    )
    sampling = request.sampling
    assert (sampling.temperature, sampling.top_p, sampling.max_tokens) == (0.5, 0.9, 7)
    assert list(sampling.stop) == ["END"] and sampling.seed == 3
    assert (sampling.presence_penalty, sampling.frequency_penalty) == (-1.5, 2)
    assert sampling.response_format == pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT
    assert not turn(messages=[{"role": "user", "content": "x"}]).sampling.HasField("temperature")


def test_a_made_up_session_is_new_and_a_named_one_is_not() -> None:
    body = chat_of({"messages": [{"role": "user", "content": "x"}]})
    named = turn_request_for(body, "main", Session("k", named=True), "rid")
    fresh = turn_request_for(body, "main", Session("k", named=False), "rid")
    assert (named.new_session, fresh.new_session) == (False, True)


def test_chat_and_responses_make_the_same_turn_of_the_same_conversation() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    chat = chat_of(
        {
            "model": "openclaw:main",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "thinking", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "out"},
            ],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "required",
            "max_tokens": 9,
            "user": "u1",
        }
    )
    responses = responses_of(
        {
            "model": "openclaw:main",
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": "q1"},
                {"type": "message", "role": "assistant", "content": "thinking"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "out"},
            ],
            "tools": [{"type": "function", "name": "f"}],
            "tool_choice": "required",
            "max_output_tokens": 9,
            "user": "u1",
        }
    )
    assert responses == chat


@pytest.mark.parametrize(
    ("item", "param", "message"),
    [
        (
            {
                "role": "user",
                "content": [{"type": "input_image", "image_url": "data:image/bmp;base64,AAAA"}],
            },
            "input[3].content[0].image_url",
            "Unsupported image type",
        ),
        ({"role": "assistant", "content": "late"}, "input", "input[3] is an assistant message"),
        ({"role": "user", "content": "  "}, "input", "Missing user message in input."),
    ],
)
def test_responses_refusals_name_the_item_as_the_client_numbered_it(
    item: dict[str, object], param: str, message: str
) -> None:
    """`instructions` is not an item: it does not shift the items' numbers."""
    body = {
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Use French."},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"},
            item,
        ],
    }
    with pytest.raises(ApiError, match=re.escape(message)) as caught:
        responses_of(body)
    assert caught.value.param == param


def test_a_pinned_tool_must_be_offered_in_both_dialects() -> None:
    with pytest.raises(ApiError, match="not among the tools") as caught:
        chat_of(
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            }
        )
    assert caught.value.param == "tool_choice"
    with pytest.raises(ApiError, match="not among the tools"):
        responses_of(
            {
                "input": "x",
                "tools": [{"type": "function", "name": "f"}],
                "tool_choice": {"type": "function", "name": "g"},
            }
        )


def test_a_legacy_function_call_is_refused_in_its_own_name() -> None:
    with pytest.raises(ApiError, match="function_call names the function 'g'") as caught:
        chat_of(
            {
                "messages": [{"role": "user", "content": "x"}],
                "functions": [{"name": "f"}],
                "function_call": {"name": "g"},
            }
        )
    assert caught.value.param == "function_call"
