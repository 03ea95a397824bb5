"""From `messages` to a turn: instructions, parts, images, sampling fields forwarded."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from devkit.processes import Stack, extra_edge
from devkit.upstream import UpstreamStandIn
from tests.conformance.helpers import assert_error, chat, post_chat, user

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n0000").decode()


def image_message(url: str = PNG, text: str = "what is this?") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


def test_instructions_context_and_sampling_reach_the_provider(
    echo_stack: Stack, upstream: UpstreamStandIn
) -> None:
    response = chat(
        echo_stack,
        model="openclaw:vision",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "q2"}, {"type": "input_text", "text": "more"}],
            },
        ],
        temperature=0.1,
        top_p=0.5,
        max_completion_tokens=20,
        max_tokens=99,
        stop=["\n\n"],
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        response_format={"type": "json_object"},
    )
    assert response.status_code == 200, response.text
    sent = upstream.requests[-1]
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert sent["messages"][0]["content"] == "You are an echo.\n\nBe brief.\n\nAnswer in French."
    assert sent["messages"][-1]["content"] == "q2\nmore"
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"], sent["stop"], sent["seed"]) == (
        0.1,
        0.5,
        20,
        ["\n\n"],
        7,
    )
    assert (sent["presence_penalty"], sent["frequency_penalty"]) == (0.5, -0.5)
    assert sent["response_format"] == {"type": "json_object"}


def test_images_go_to_providers_that_take_them(
    echo_stack: Stack, upstream: UpstreamStandIn
) -> None:
    assert chat(echo_stack, model="openclaw:vision", messages=image_message()).status_code == 200
    parts = upstream.requests[-1]["messages"][-1]["content"]
    assert parts[1] == {"type": "image_url", "image_url": {"url": PNG}}


def test_images_to_a_text_only_model_are_400(echo_stack: Stack) -> None:
    error = assert_error(
        chat(echo_stack, model="openclaw:main", messages=image_message()),
        400,
        "invalid_request_error",
    )
    assert "image" in error["message"]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://example.com/cat.png", "images.allowUrl is off"),
        ("data:image/svg+xml;base64,PHN2Zz4=", "Unsupported image type"),
        ("data:image/png;base64,%%%", "invalid"),
    ],
)
def test_bad_images_are_400(echo_stack: Stack, url: str, says: str) -> None:
    error = assert_error(
        chat(echo_stack, model="openclaw:vision", messages=image_message(url)),
        400,
        "invalid_request_error",
    )
    assert says in error["message"]
    assert error["param"] == "messages[0].content[1].image_url.url"


def test_image_count_and_size_limits(echo_stack: Stack) -> None:
    nine = [{"type": "image_url", "image_url": {"url": PNG}}] * 9
    error = assert_error(
        chat(echo_stack, model="openclaw:vision", messages=[{"role": "user", "content": nine}]),
        400,
        None,
    )
    assert "At most 8 images" in error["message"]


def test_images_may_total_20_mib(tmp_path: Path, echo_stack: Stack) -> None:
    # Under the default 20 MiB body limit base64 cannot carry 20 MiB of images; raise it.
    def roomy(config: dict) -> None:
        chat = config["gateway"]["http"]["endpoints"]["chatCompletions"]
        chat["maxBodyBytes"] = 40 * 1024 * 1024
        chat["images"] = {"maxBytes": 15 * 1024 * 1024}  # each may pass; together they may not

    huge = "data:image/png;base64," + base64.b64encode(b"0" * (11 * 1024 * 1024)).decode()
    two = [{"type": "image_url", "image_url": {"url": huge}}] * 2
    with extra_edge(tmp_path, echo_stack.config, roomy) as base_url:
        response = post_chat(
            base_url, {"model": "openclaw:vision", "messages": [{"role": "user", "content": two}]}
        )
    assert "20 MiB" in assert_error(response, 400, "invalid_request_error")["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 2.01),
        ("temperature", "hot"),
        ("top_p", 1.5),
        ("max_tokens", 0),
        ("max_completion_tokens", -3),
        ("stop", ["a", "b", "c", "d", "e"]),
        ("stop", 5),
        ("seed", "1"),
        ("presence_penalty", -2.5),
        ("frequency_penalty", 9),
        ("response_format", {"type": "xml"}),
        ("n", 2),
        ("n", 0),
        ("stream", "true"),
    ],
)
def test_bad_sampling_fields_name_their_param(echo_stack: Stack, field: str, value: object) -> None:
    response = chat(echo_stack, messages=user("x"), **{field: value})
    error = assert_error(response, 400, "invalid_request_error")
    assert error["param"].split(".")[0] == field


def test_missing_user_message(echo_stack: Stack) -> None:
    for messages in (
        [{"role": "system", "content": "x"}],
        [{"role": "user", "content": "  "}],
        user(""),
    ):
        error = assert_error(chat(echo_stack, messages=messages), 400, "invalid_request_error")
        assert error["message"] == "Missing user message in messages."


def test_unknown_fields_are_ignored(echo_stack: Stack) -> None:
    response = chat(
        echo_stack, messages=user("x"), tools=[], logit_bias={"1": 2}, metadata={"a": "b"}, n=1
    )
    assert response.status_code == 200
