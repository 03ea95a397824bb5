"""The Anthropic provider's pure parts: the conversation mapping, the event-stream parser, the
error mapping and the request body (checked by the stand-in's rules, which include the
`anthropic` SDK's types)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agent_worker.domain import (
    ChatMessage,
    FinishReason,
    Image,
    Reasoning,
    Sampling,
    Tool,
    ToolCall,
    ToolChoice,
)
from agent_worker.errors import (
    ContextOverflowError,
    ProviderOverloadedError,
    ProviderRateLimitedError,
    ProviderRejectedError,
)
from agent_worker.events import ReasoningDelta, TextDelta, ToolCallDelta
from agent_worker.providers.anthropic_messages import AnthropicMessagesProvider
from agent_worker.providers.anthropic_request import conversation, messages_url
from agent_worker.providers.anthropic_stream import MessagesStream, error_of
from agent_worker.providers.base import ProviderRequest
from agent_worker.providers.upstream_errors import retry_after_seconds, status_error
from devkit.anthropic_cache import prefix_bytes
from devkit.anthropic_rules import Refused, check_body
from services.provider_config import AnthropicProviderConfig

CALL = ToolCall("toolu_1", "get_weather", '{"city": "Paris"}')


def provider(**models: dict[str, Any]) -> AnthropicMessagesProvider:
    entries = [{"id": model_id, **entry} for model_id, entry in models.items()]
    return AnthropicMessagesProvider(
        AnthropicProviderConfig.model_validate(
            {"api": "anthropic-messages", "baseUrl": "http://127.0.0.1:9", "models": entries}
        )
    )


def test_messages_url_takes_a_base_with_or_without_v1() -> None:
    assert str(messages_url("https://api.anthropic.com")) == "https://api.anthropic.com/v1/messages"
    assert str(messages_url("http://h:1/v1/")) == "http://h:1/v1/messages"


def test_system_goes_top_level_and_same_roles_merge() -> None:
    system, turns = conversation(
        [
            ChatMessage("system", "be brief"),
            ChatMessage("user", "one"),
            ChatMessage("user", "two"),
            ChatMessage("assistant", "ok"),
            ChatMessage("system", "and kind"),
            ChatMessage("user", "three"),
        ]
    )
    assert system == "be brief\n\nand kind"
    assert turns == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        {"role": "user", "content": [{"type": "text", "text": "three"}]},
    ]


def test_tool_results_answer_the_calls_first_in_the_next_user_message() -> None:
    _, turns = conversation(
        [
            ChatMessage("user", "weather?"),
            ChatMessage("assistant", "", tool_calls=(CALL,)),
            ChatMessage("tool", "sunny", tool_call_id="toolu_1", name="get_weather"),
            ChatMessage("user", "thanks"),
        ]
    )
    assert turns[1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
        ],
    }
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
        {"type": "text", "text": "thanks"},
    ]


def test_a_result_whose_call_was_trimmed_stays_as_words_and_a_user_goes_first() -> None:
    _, turns = conversation(
        [
            ChatMessage("assistant", "earlier answer"),
            ChatMessage("tool", "42", tool_call_id="gone", name="add"),
        ]
    )
    assert turns[0]["role"] == "user"  # the API wants a user first
    assert turns[-1]["content"] == [{"type": "text", "text": "(tool add result) 42"}]


def test_thinking_goes_back_signed_before_the_calls() -> None:
    thoughts = (Reasoning("let me think", "sig"), Reasoning("", "opaque", redacted=True))
    _, turns = conversation(
        [
            ChatMessage("user", "q"),
            ChatMessage("assistant", "", tool_calls=(CALL,), reasoning=thoughts),
            ChatMessage("tool", "r", tool_call_id="toolu_1"),
        ]
    )
    assert turns[1]["content"][:2] == [
        {"type": "thinking", "thinking": "let me think", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"},
    ]


REQUIRED = ToolChoice("required")


def request(
    messages: list[ChatMessage], choice: ToolChoice = REQUIRED, **sampling: object
) -> ProviderRequest:
    return ProviderRequest(
        "claude-x",
        tuple(messages),
        Sampling(**sampling),  # type: ignore[arg-type]
        (Tool("get_weather", "w", '{"type": "object", "properties": {}}'),),
        choice,
        parallel_tool_calls=False,
    )


def test_the_body_passes_the_messages_api_rules() -> None:
    image = Image("image/png", b"\x89PNG")
    body = provider().body(
        request(
            [ChatMessage("system", "s"), ChatMessage("user", "look", (image,))],
            temperature=1.7,
            stop=("END",),
        )
    )
    check_body(body)  # raises Refused otherwise
    assert body["temperature"] == 1.0  # Anthropic's range ends at 1
    assert body["stop_sequences"] == ["END"]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["messages"][0]["content"][0]["type"] == "image"


def test_the_stand_in_refuses_a_system_role_and_a_missing_max_tokens() -> None:
    body = provider().body(request([ChatMessage("user", "hi")]))
    with pytest.raises(Refused, match="max_tokens"):
        check_body({key: value for key, value in body.items() if key != "max_tokens"})
    with pytest.raises(Refused, match="role"):
        check_body({**body, "messages": [{"role": "system", "content": "x"}, *body["messages"]]})


def test_thinking_is_off_for_a_client_tool_loop_it_cannot_continue() -> None:
    client_loop = [
        ChatMessage("user", "q"),
        ChatMessage("assistant", "", tool_calls=(CALL,)),  # the client never saw the thinking
        ChatMessage("tool", "r", tool_call_id="toolu_1"),
    ]
    thinking = provider(**{"claude-x": {"reasoning": True, "maxTokens": 4096}})
    assert "thinking" in thinking.body(request([ChatMessage("user", "q")], ToolChoice()))
    body = thinking.body(request(client_loop, ToolChoice(), temperature=0.5))
    assert "thinking" not in body and body["temperature"] == 0.5
    check_body(body)


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(
        b"event: %s\ndata: %s\n\n" % (str(event["type"]).encode(), orjson.dumps(event))
        for event in events
    )


START = {
    "type": "message_start",
    "message": {"usage": {"input_tokens": 5, "cache_read_input_tokens": 7}},
}
CACHE_WRITE = {
    "type": "message_start",
    "message": {"usage": {"input_tokens": 5, "cache_creation_input_tokens": 3}},
}


def test_the_stream_parser_across_split_reads() -> None:
    data = sse(
        START,
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hm"},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "s"},
        },
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hel"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "lo"}},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": "{}"},
        },
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    )
    stream = MessagesStream()
    events: list[TextDelta | ReasoningDelta | ToolCallDelta] = []
    for start in range(0, len(data), 13):  # reads that cut lines anywhere
        events += stream.feed(data[start : start + 13])
    text = "".join(event.text for event in events if isinstance(event, TextDelta))
    assert text == "Hello"  # the thinking is not text
    thinking = [event.text for event in events if isinstance(event, ReasoningDelta)]
    assert thinking == ["hm"]
    calls = [event for event in events if isinstance(event, ToolCallDelta)]
    assert calls == [ToolCallDelta(0, "t", "f", ""), ToolCallDelta(0, "", "", "{}")]
    assert stream.thinking == [["hm", "s", False]]
    assert stream.done and stream.finish_reason is FinishReason.TOOL_CALLS
    assert (stream.prompt_tokens, stream.completion_tokens) == (12, 9)
    assert (stream.cache_read_tokens, stream.cache_write_tokens) == (7, 0)
    writing = MessagesStream()
    writing.feed(sse(CACHE_WRITE))
    assert (writing.prompt_tokens, writing.cache_read_tokens, writing.cache_write_tokens) == (
        8,
        0,
        3,
    )


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(reason: str, finish: str) -> None:
    stream = MessagesStream()
    stream.feed(sse(START, {"type": "message_delta", "delta": {"stop_reason": reason}}))
    assert stream.finish_reason.value == finish


def test_an_unknown_stop_reason_is_said_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    stream = MessagesStream()
    stream.feed(sse(START, {"type": "message_delta", "delta": {"stop_reason": "new_reason"}}))
    assert stream.finish_reason.value == "stop"
    assert "unknown stop_reason 'new_reason'" in caplog.text


def test_errors_by_kind() -> None:
    assert isinstance(error_of("overloaded_error", "busy"), ProviderOverloadedError)
    assert isinstance(error_of("rate_limit_error", "slow down"), ProviderRateLimitedError)
    overflow = error_of(
        "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"
    )
    assert isinstance(overflow, ContextOverflowError) and overflow.window == 200000
    assert type(error_of("invalid_request_error", "bad")) is ProviderRejectedError
    body = orjson.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    failed = status_error(529, body, retry_after=2.0)
    assert isinstance(failed, ProviderOverloadedError) and failed.transient
    assert failed.retry_after == 2.0 and "busy" in failed.message


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("") is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date long past


def test_the_benchmarks_stand_in_speaks_anthropics_events() -> None:
    """bench/upstream_standin.py's Messages answer: each event valid for the `anthropic` SDK's
    stream types, and the provider's parser reads the 16 words from it."""
    from anthropic.types import RawMessageStreamEvent
    from pydantic import TypeAdapter

    from bench.upstream_standin import ANTHROPIC_STREAM_BODY, CHUNKS

    event_type: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
    for frame in ANTHROPIC_STREAM_BODY.split(b"\n\n")[:-1]:
        kind, data = frame.split(b"\n")
        event = orjson.loads(data.removeprefix(b"data: "))
        assert kind == b"event: " + event["type"].encode()
        event_type.validate_python(event)
    stream = MessagesStream()
    text = "".join(event.text for event in stream.feed(ANTHROPIC_STREAM_BODY))  # type: ignore[union-attr]
    assert text == "".join(f"w{index} " for index in range(CHUNKS)) and stream.done


@pytest.mark.parametrize(
    "model", ["said-back", "thinking-tools", "long", "refusal", "break-after-1"]
)
def test_the_test_stand_ins_events_are_anthropics(model: str) -> None:
    from anthropic.types import RawMessageStreamEvent
    from pydantic import TypeAdapter

    from devkit.anthropic_standin import AnthropicStandIn

    event_type: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
    body = provider().body(request([ChatMessage("user", "hi")]))
    body["model"] = model
    frames = AnthropicStandIn()._frames(body, model)  # not started: its frames alone
    for frame in frames:
        if frame is None:
            continue
        event = orjson.loads(frame.split(b"\ndata: ")[1])
        if event["type"] not in ("error", "ping"):  # the SDK raises on one, skips the other
            event_type.validate_python(event)


@pytest.mark.parametrize("choice", [ToolChoice("required"), ToolChoice("function", "get_weather")])
def test_no_thinking_when_a_tool_call_is_forced(choice: ToolChoice) -> None:
    thinking = provider(**{"claude-x": {"reasoning": True, "maxTokens": 4096}})
    body = thinking.body(request([ChatMessage("user", "q")], choice))
    check_body(body)  # Anthropic refuses thinking with tool_choice any or tool
    assert "thinking" not in body and body["tool_choice"]["type"] in ("any", "tool")


def test_the_stand_in_refuses_thinking_with_a_forced_tool_choice() -> None:
    thinking = provider(**{"claude-x": {"reasoning": True, "maxTokens": 4096}})
    body = thinking.body(request([ChatMessage("user", "q")], ToolChoice()))
    with pytest.raises(Refused, match="tool_choice"):
        check_body({**body, "tool_choice": {"type": "any"}})


# Tools as MCP servers offer them (`<server>__<tool>`), in the order the worker offers them.
MCP_TOOLS = (
    Tool("time__get_current_time", "The time in a timezone.", '{"type": "object"}'),
    Tool("git__git_status", "The working tree's status.", '{"type": "object"}'),
)


def cached_request(messages: list[ChatMessage], retention: str | None) -> ProviderRequest:
    return ProviderRequest(
        "claude-x", tuple(messages), Sampling(), MCP_TOOLS, cache_retention=retention
    )


def markers(body: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """Where the body's cache breakpoints are, and what they say."""
    found = [
        ("tools", tool["cache_control"])
        for tool in body.get("tools", ())
        if "cache_control" in tool
    ]
    system = body.get("system")
    if isinstance(system, list):
        found += [
            ("system", block["cache_control"]) for block in system if "cache_control" in block
        ]
    for index, turn in enumerate(body["messages"]):
        for block in turn["content"]:
            if "cache_control" in block:
                found.append((f"messages.{index}.{block['type']}", block["cache_control"]))
    return found


TURN_ONE = [ChatMessage("system", "You are careful."), ChatMessage("user", "What time is it?")]
CALLED = ToolCall("toolu_9", "time__get_current_time", '{"timezone": "UTC"}')
TURN_ONE_STEP_TWO = [
    *TURN_ONE,
    ChatMessage("assistant", "Let me check.", tool_calls=(CALLED,)),
    ChatMessage("tool", "12:00", tool_call_id="toolu_9", name="time__get_current_time"),
]
TURN_TWO = [
    *TURN_ONE_STEP_TWO,
    ChatMessage("assistant", "It is noon."),
    ChatMessage("user", "And in Tokyo?"),
]


@pytest.mark.parametrize(
    ("retention", "marker"),
    [("short", {"type": "ephemeral"}), ("long", {"type": "ephemeral", "ttl": "1h"})],
)
def test_breakpoints_after_the_tools_the_system_and_the_latest_input(
    retention: str, marker: dict[str, str]
) -> None:
    for messages, latest in (
        (TURN_ONE, "messages.0.text"),
        (TURN_ONE_STEP_TWO, "messages.2.tool_result"),  # it moves along the tool loop
        (TURN_TWO, "messages.4.text"),
    ):
        body = provider().body(cached_request(messages, retention))
        check_body(body)  # the SDK's types take the markers where they are
        assert markers(body) == [("tools", marker), ("system", marker), (latest, marker)]


@pytest.mark.parametrize("retention", ["none", None])
def test_no_breakpoint_when_caching_is_off(retention: str | None) -> None:
    body = provider().body(cached_request(TURN_TWO, retention))
    assert markers(body) == [] and body["system"] == "You are careful."


def test_each_request_repeats_the_previous_ones_prefix_byte_for_byte() -> None:
    """Turn one, its second tool-loop step, and turn two: each request begins with exactly the
    previous request's bytes up to its last breakpoint, so the cache written is read."""
    bodies = [
        provider().body(cached_request(messages, "short"))
        for messages in (TURN_ONE, TURN_ONE_STEP_TWO, TURN_TWO)
    ]
    for earlier, later in zip(bodies, bodies[1:], strict=False):
        turns = len(earlier["messages"])
        assert prefix_bytes(later, turns) == prefix_bytes(earlier, turns)
