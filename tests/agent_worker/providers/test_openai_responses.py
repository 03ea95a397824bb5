"""The Responses provider's pure parts: the input mapping, the event-stream parser, the error
mapping and the request body (checked by the stand-in's rules, which include the `openai` SDK's
request types), and the stand-in's own events against the SDK's stream event types."""

from __future__ import annotations

from typing import Any, get_args

import orjson
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel

from agent_worker.domain import (
    ChatMessage,
    FinishReason,
    Image,
    Reasoning,
    Sampling,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
)
from agent_worker.errors import (
    ContextOverflowError,
    ProviderAuthError,
    ProviderFailedError,
    ProviderOverloadedError,
    ProviderRateLimitedError,
    ProviderRejectedError,
)
from agent_worker.events import ReasoningDelta, TextDelta, ToolCallDelta
from agent_worker.providers.anthropic_request import conversation
from agent_worker.providers.base import ProviderRequest
from agent_worker.providers.http_provider import MidAnswerError
from agent_worker.providers.openai_responses import OpenAIResponsesProvider
from agent_worker.providers.responses_request import input_items
from agent_worker.providers.responses_stream import ResponsesStream, error_of
from agent_worker.providers.upstream_errors import status_error
from devkit.anthropic_rules import Refused
from devkit.responses_rules import check_body, encrypted_of
from devkit.responses_standin import ResponsesStandIn
from services.provider_config import OpenAIResponsesProviderConfig

CALL = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
WEATHER = Tool("get_weather", "The weather.", '{"type": "object", "properties": {}}')
# The SDK's stream event classes by their `type` (its union's discriminator is its own, not
# one pydantic reads).
EVENT_CLASSES: dict[str, type[BaseModel]] = {
    get_args(event.model_fields["type"].annotation)[0]: event
    for event in get_args(get_args(ResponseStreamEvent)[0])
}


def provider(
    base_url: str = "http://127.0.0.1:9/v1", models: dict[str, dict[str, Any]] | None = None
) -> OpenAIResponsesProvider:
    entries = [{"id": model_id, **entry} for model_id, entry in (models or {}).items()]
    config = {"api": "openai-responses", "baseUrl": base_url, "models": entries}
    return OpenAIResponsesProvider(OpenAIResponsesProviderConfig.model_validate(config))


def request(
    messages: list[ChatMessage],
    sampling: Sampling | None = None,
    model: str = "gpt-x",
    **fields: Any,
) -> ProviderRequest:
    return ProviderRequest(model, tuple(messages), sampling or Sampling(), **fields)


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(
        b"event: %s\ndata: %s\n\n" % (event["type"].encode(), orjson.dumps(event))
        for event in events
    )


def test_system_goes_to_instructions_and_a_tool_loop_maps_to_items() -> None:
    thought = Reasoning("I should look.", "sealed", item_id="rs_1")
    anthropic_thought = Reasoning("claude thinking", "sig")
    instructions, items = input_items(
        [
            ChatMessage("system", "be brief"),
            ChatMessage("user", "weather?"),
            ChatMessage(
                "assistant",
                "Let me check.",
                tool_calls=(CALL,),
                reasoning=(thought, anthropic_thought),
            ),
            ChatMessage("tool", "sunny", tool_call_id="call_1", name="get_weather"),
            ChatMessage("system", "and kind"),
        ]
    )
    assert instructions == "be brief\n\nand kind"
    assert items == [
        {"role": "user", "content": "weather?"},
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "I should look."}],
            "encrypted_content": "sealed",
        },  # Anthropic's thinking is not OpenAI's to read: left out
        {"role": "assistant", "content": "Let me check."},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": CALL.arguments,
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    ]


def test_anthropic_leaves_out_openais_reasoning_items() -> None:
    thought = Reasoning("I should look.", "sealed", item_id="rs_1")
    _, turns = conversation(
        [ChatMessage("user", "q"), ChatMessage("assistant", "a", reasoning=(thought,))]
    )
    assert turns[1]["content"] == [{"type": "text", "text": "a"}]


def test_an_orphan_tool_result_stays_as_words_and_images_go_as_data_urls() -> None:
    _, items = input_items(
        [
            ChatMessage("tool", "42", tool_call_id="gone", name="calc"),
            ChatMessage("user", "this?", images=(Image("image/png", b"\x89PNG"),)),
        ]
    )
    assert items[0] == {"role": "user", "content": "(tool calc result) 42"}
    assert items[1]["content"] == [
        {"type": "input_text", "text": "this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw==", "detail": "auto"},
    ]


def test_the_body_passes_the_responses_api_rules() -> None:
    body = provider().body(
        request(
            [
                ChatMessage("system", "s"),
                ChatMessage("user", "q"),
                ChatMessage("assistant", "", tool_calls=(CALL,)),
                ChatMessage("tool", "sunny", tool_call_id="call_1"),
            ],
            Sampling(temperature=0.5, max_tokens=5, response_format="json_object"),
            tools=(WEATHER,),
            tool_choice=ToolChoice("function", "get_weather"),
            parallel_tool_calls=False,
        )
    )
    check_body(body)
    assert body["store"] is False and body["stream"] is True
    assert body["max_output_tokens"] == 16  # OpenAI's least; 5 would be refused
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert body["tools"][0]["strict"] is False
    assert body["text"] == {"format": {"type": "json_object"}}
    assert "include" not in body and "reasoning" not in body


def test_a_reasoning_model_asks_for_encrypted_reasoning_and_sends_no_temperature() -> None:
    reasoner = provider(models={"o-x": {"reasoning": True}})
    body = reasoner.body(request([ChatMessage("user", "q")], Sampling(temperature=0.2), "o-x"))
    assert body["include"] == ["reasoning.encrypted_content"]
    assert body["reasoning"] == {"summary": "auto"}
    assert "temperature" not in body
    body["model"] = "reasoning-x"
    check_body(body)
    with pytest.raises(Refused, match="temperature"):
        check_body({**body, "temperature": 0.2})


def test_a_json_schema_format_is_flattened() -> None:
    schema = {"name": "answer", "schema": {"type": "object"}, "strict": True}
    sampling = Sampling(response_format="json_schema", json_schema=orjson.dumps(schema).decode())
    body = provider().body(request([ChatMessage("user", "q")], sampling))
    assert body["text"] == {"format": {"type": "json_schema", **schema}}
    check_body(body)


@pytest.mark.parametrize(
    ("base_url", "retention", "expected"),
    [
        ("https://api.openai.com/v1", "short", {"prompt_cache_key": "k"}),
        (
            "https://api.openai.com/v1",
            "long",
            {"prompt_cache_key": "k", "prompt_cache_retention": "24h"},
        ),
        ("https://api.openai.com/v1", "none", {}),
        ("http://127.0.0.1:9/v1", "short", {}),  # another host opts in with compat
    ],
)
def test_prompt_cache_key_as_for_chat_completions(
    base_url: str, retention: str, expected: dict[str, str]
) -> None:
    body = provider(base_url).body(
        request([ChatMessage("user", "q")], cache_retention=retention, cache_key="k")
    )
    assert {
        key: body[key] for key in ("prompt_cache_key", "prompt_cache_retention") if key in body
    } == expected


def test_the_stand_in_refuses_what_openai_refuses_of_items() -> None:
    base = {"model": "m", "stream": True, "store": False}
    with pytest.raises(Refused, match="No tool call found"):
        check_body(
            {**base, "input": [{"type": "function_call_output", "call_id": "x", "output": "1"}]}
        )
    lone = {"type": "reasoning", "id": "rs_1", "summary": []}
    with pytest.raises(Refused, match="without its required following item"):
        check_body({**base, "input": [{"role": "user", "content": "q"}, lone]})
    answer = {"role": "assistant", "content": "a"}
    with pytest.raises(Refused, match="not persisted"):
        check_body({**base, "input": [lone, answer]})
    with pytest.raises(Refused, match="could not be verified"):
        check_body({**base, "input": [{**lone, "encrypted_content": "forged"}, answer]})
    check_body({**base, "input": [{**lone, "encrypted_content": encrypted_of("rs_1", "")}, answer]})
    with pytest.raises(Refused, match="types refuse"):
        check_body({**base, "input": [{"type": "function_call", "call_id": 1}]})


def test_the_stream_parser_across_split_reads() -> None:
    body = sse(
        {"type": "response.created", "sequence_number": 0, "response": {}},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"type": "reasoning", "id": "rs_1", "summary": []},
        },
        {"type": "response.reasoning_summary_part.added", "summary_index": 0, "item_id": "rs_1"},
        {"type": "response.reasoning_summary_text.delta", "summary_index": 0, "delta": "Think."},
        {"type": "response.reasoning_summary_part.added", "summary_index": 1, "item_id": "rs_1"},
        {"type": "response.reasoning_summary_text.delta", "summary_index": 1, "delta": "More."},
        {
            "type": "response.output_item.done",
            "item": {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [
                    {"type": "summary_text", "text": "Think."},
                    {"type": "summary_text", "text": "More."},
                ],
                "encrypted_content": "sealed",
            },
        },
        {"type": "response.output_text.delta", "delta": "Let "},
        {"type": "response.output_text.delta", "delta": "me check."},
        {
            "type": "response.output_item.added",
            "item": {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": "",
            },
        },
        {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": '{"city": '},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": '"Paris"}'},
        {
            "type": "response.completed",
            "response": {
                "status": "completed",
                "usage": {
                    "input_tokens": 100,
                    "input_tokens_details": {"cached_tokens": 64},
                    "output_tokens": 7,
                },
            },
        },
    )
    for size in (len(body), 7, 1):
        stream = ResponsesStream()
        events: list[Any] = []
        for start in range(0, len(body), size):
            events += stream.feed(body[start : start + size])
        merged: list[Any] = []
        for event in events:  # reads split differently join text differently
            if (
                merged
                and type(event) is type(merged[-1])
                and isinstance(event, TextDelta | ReasoningDelta)
            ):
                merged[-1] = type(event)(merged[-1].text + event.text)
            else:
                merged.append(event)
        assert merged == [
            ReasoningDelta("Think.\n\nMore."),
            TextDelta("Let me check."),
            ToolCallDelta(0, "call_1", "get_weather", ""),
            ToolCallDelta(0, "", "", '{"city": '),
            ToolCallDelta(0, "", "", '"Paris"}'),
        ], size
        assert stream.done and stream.finish_reason == FinishReason.TOOL_CALLS
        assert stream.usage == Usage(100, 7, 64)
        assert stream.reasoning == [Reasoning("Think.\n\nMore.", "sealed", item_id="rs_1")]


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("max_output_tokens", FinishReason.LENGTH), ("content_filter", FinishReason.CONTENT_FILTER)],
)
def test_an_incomplete_response_finishes_with_its_reason(reason: str, finish: FinishReason) -> None:
    stream = ResponsesStream()
    incomplete = {"status": "incomplete", "incomplete_details": {"reason": reason}}
    stream.feed(sse({"type": "response.incomplete", "response": incomplete}))
    assert stream.done and stream.finish_reason == finish


def test_a_failed_response_keeps_what_came_before_it() -> None:
    stream = ResponsesStream()
    failed = {"status": "failed", "error": {"code": "server_error", "message": "boom"}}
    with pytest.raises(MidAnswerError) as raised:
        stream.feed(
            sse(
                {"type": "response.output_text.delta", "delta": "one "},
                {"type": "response.failed", "response": failed},
            )
        )
    assert raised.value.before == [TextDelta("one ")]
    assert isinstance(raised.value.error, ProviderOverloadedError)


def test_errors_by_code() -> None:
    assert isinstance(error_of("rate_limit_exceeded", "slow down"), ProviderRateLimitedError)
    assert isinstance(error_of("server_error", "oops"), ProviderOverloadedError)
    assert isinstance(error_of("context_length_exceeded", "too long"), ContextOverflowError)
    assert isinstance(error_of("invalid_prompt", "no"), ProviderRejectedError)
    assert type(error_of("", "what")) is ProviderFailedError
    assert isinstance(status_error(401, b'{"error": {"message": "bad key"}}'), ProviderAuthError)
    overflow = orjson.dumps(
        {"error": {"message": "Input too long.", "code": "context_length_exceeded"}}
    )
    assert isinstance(status_error(400, overflow), ContextOverflowError)


def test_a_malformed_event_is_a_provider_failure() -> None:
    with pytest.raises(ProviderFailedError, match="malformed event"):
        ResponsesStream().feed(
            sse({"type": "response.function_call_arguments.delta", "delta": "x"})
        )


@pytest.mark.parametrize(
    "model", ["said-back", "reasoning-tools", "words-3", "incomplete", "failed-server_error"]
)
def test_the_stand_ins_events_are_openais(model: str) -> None:
    reasoner = provider(models={model: {"reasoning": model.startswith("reasoning")}})
    body = reasoner.body(request([ChatMessage("user", "hi")], model=model, tools=(WEATHER,)))
    check_body(body)
    frames = ResponsesStandIn()._frames(body, model)  # not started: its frames alone
    kinds = []
    for frame in frames:
        if frame is None:
            continue
        kind, data = frame.split(b"\n", 1)
        event = orjson.loads(data.removeprefix(b"data: "))
        assert kind == b"event: " + event["type"].encode()
        EVENT_CLASSES[event["type"]].model_validate(event)
        kinds.append(event["type"])
    assert kinds[0] == "response.created" and kinds[-1].startswith("response.")
    assert kinds[-1] in ("response.completed", "response.incomplete", "response.failed")
    parsed = ResponsesStream()
    try:
        parsed.feed(b"".join(frame for frame in frames if frame))
    except MidAnswerError:
        assert model.startswith("failed")
    else:
        assert parsed.done
        if model.startswith("reasoning"):
            [thought] = parsed.reasoning
            assert thought.signature == encrypted_of(thought.item_id, thought.text)
