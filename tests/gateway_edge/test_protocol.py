from __future__ import annotations

import pytest

from gateway_edge.dialects.chat_request import parse_chat_request
from gateway_edge.errors import ApiError

USER = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER, "temperature": 2.5}, "temperature"),
        ({"messages": USER, "temperature": "1"}, "temperature"),
        ({"messages": USER, "top_p": -0.1}, "top_p"),
        ({"messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"messages": USER, "max_completion_tokens": True}, "max_completion_tokens"),
        ({"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": USER, "seed": 1.5}, "seed"),
        ({"messages": USER, "presence_penalty": 3}, "presence_penalty"),
        ({"messages": USER, "frequency_penalty": -2.1}, "frequency_penalty"),
        ({"messages": USER, "response_format": {"type": "yaml"}}, "response_format.type"),
        ({"messages": USER, "n": 2}, "n"),
        ({"messages": USER, "stream": "yes"}, "stream"),
        ({"messages": USER, "model": 5}, "model"),
        ({"messages": USER, "user": 5}, "user"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "audio"}]}]},
            "messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
            "messages[0].content[0].text",
        ),
    ],
)
def test_bad_fields_name_their_param(body: dict, param: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_chat_request(body)
    assert (caught.value.status, caught.value.type, caught.value.param) == (
        400,
        "invalid_request_error",
        param,
    )
    assert param in caught.value.message


@pytest.mark.parametrize("document", [[], "x", 1, None])
def test_non_object_bodies(document: object) -> None:
    with pytest.raises(ApiError, match="JSON object"):
        parse_chat_request(document)


def test_unknown_fields_are_ignored_and_n_1_is_fine() -> None:
    request = parse_chat_request(
        {"messages": USER, "n": 1, "tools": [], "logit_bias": {}, "temperature": 0}
    )
    assert request.temperature == 0
