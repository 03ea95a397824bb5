"""Generated-input testing of the edge: thousands of requests with wrong types, huge, deep or
odd JSON, invalid UTF-8, odd headers and methods, against real edge + worker processes.

No request may get a 5xx, and neither process may log a traceback. Every 200 must be a valid
completion. The counts are printed at the end of the run (see tests/conftest.py).
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit.processes import TOKEN, Stack, echo_config, start_stack
from tests.support.raw_http import raw_post
from tests.support.schemas import assert_valid

EXAMPLES = 1000
STATS = {"requests": 0, "5xx": 0, "tracebacks": 0}
_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
HEADER_TEXT = st.text(
    alphabet=string.ascii_letters + string.digits + string.punctuation + " ", max_size=80
).map(str.strip)

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
roles = (
    st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"])
    | st.text(max_size=10)
    | json_values
)
parts = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "input_text", "image_url", "audio"]) | json_values},
    optional={
        "text": st.text(max_size=40) | json_values,
        "image_url": json_values | st.fixed_dictionaries({"url": st.text(max_size=60)}),
    },
)
contents = st.text(max_size=60) | st.lists(parts, max_size=3) | json_values
messages = (
    st.lists(
        st.fixed_dictionaries({"role": roles}, optional={"content": contents, "name": json_values}),
        max_size=4,
    )
    | json_values
)
models = (
    st.sampled_from(["openclaw", "openclaw/default", "openclaw:beta", "agent:main", "agent:ghost"])
    | st.text(max_size=30)
    | json_values
)
chat_bodies = st.fixed_dictionaries(
    {"messages": messages},
    optional={
        "model": models,
        "stream": st.booleans() | json_values,
        "user": st.text(max_size=30) | json_values,
        "temperature": json_values,
        "top_p": json_values,
        "max_tokens": st.integers(-5, 50) | json_values,
        "max_completion_tokens": json_values,
        "stop": json_values,
        "seed": json_values,
        "n": st.integers(-2, 3) | json_values,
        "presence_penalty": json_values,
        "frequency_penalty": json_values,
        "response_format": json_values,
        "stream_options": json_values,
    },
)


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path: Path = tmp_path_factory.mktemp("fuzz")
    config = echo_config(tmp_path)
    config["agents"]["list"] = [{"id": "main", "default": True}, {"id": "beta"}]
    stack = start_stack(tmp_path, config)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def http(fuzz_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_stack.base_url, timeout=30) as client:
        yield client


def send(
    http: httpx.Client, method: str, path: str, headers: dict[str, str], content: bytes
) -> httpx.Response:
    response = http.request(method, path, headers=headers, content=content)
    STATS["requests"] += 1
    if response.status_code >= 500:
        STATS["5xx"] += 1
    if "Traceback" in response.text:
        STATS["tracebacks"] += 1
    assert response.status_code < 500, (method, path, headers, content[:300], response.text)
    assert "Traceback" not in response.text
    return response


def check_success(response: httpx.Response) -> None:
    if response.status_code != 200:
        assert response.json()["error"]["message"]
        return
    if response.headers["content-type"].startswith("text/event-stream"):
        lines = [line for line in response.text.splitlines() if line and not line.startswith(":")]
        assert lines[-1] == "data: [DONE]"
        for line in lines[:-1]:
            assert_valid(
                "CreateChatCompletionStreamResponse", json.loads(line.removeprefix("data: "))
            )
    else:
        assert_valid("CreateChatCompletionResponse", response.json())


@_SETTINGS
@given(body=chat_bodies)
def test_chat_like_bodies(http: httpx.Client, body: dict[str, Any]) -> None:
    content = json.dumps(body, allow_nan=True).encode()
    check_success(
        send(http, "POST", "/v1/chat/completions", {"Authorization": f"Bearer {TOKEN}"}, content)
    )


@_SETTINGS
@given(content=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bytes_and_json(http: httpx.Client, content: bytes) -> None:
    check_success(
        send(http, "POST", "/v1/chat/completions", {"Authorization": f"Bearer {TOKEN}"}, content)
    )


@_SETTINGS
@given(
    headers=st.dictionaries(
        st.sampled_from(
            [
                "authorization",
                "x-openclaw-agent-id",
                "x-openclaw-agent",
                "x-openclaw-session-key",
                "x-request-id",
                "content-type",
                "content-encoding",
                "x-other",
            ]
        ),
        HEADER_TEXT,
        max_size=5,
    ),
    valid_auth=st.booleans(),
)
def test_odd_headers(http: httpx.Client, headers: dict[str, str], valid_auth: bool) -> None:
    if valid_auth:
        headers["authorization"] = f"Bearer {TOKEN}"
    body = json.dumps(
        {"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    check_success(send(http, "POST", "/v1/chat/completions", headers, body))


@_SETTINGS
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
    path=st.sampled_from(
        ["/v1/chat/completions", "/v1/models", "/v1/models/openclaw", "/healthz", "/readyz", "/"]
    )
    | st.text(alphabet=string.ascii_letters + string.digits + "/-_.~%:", max_size=40).map(
        lambda p: "/" + p
    ),
)
def test_methods_and_paths(http: httpx.Client, method: str, path: str) -> None:
    send(http, method, path, {"Authorization": f"Bearer {TOKEN}"}, b"")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    name=st.sampled_from(
        [b"Authorization", b"x-openclaw-session-key", b"x-openclaw-agent-id", b"x-request-id"]
    ),
    value=st.binary(max_size=60).map(
        lambda raw: raw.replace(b"\r", b"").replace(b"\n", b"").strip()
    ),
)
def test_raw_header_bytes(fuzz_stack: Stack, name: bytes, value: bytes) -> None:
    """Bytes no polite client sends (invalid UTF-8, control characters) straight on the wire."""
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    headers = [(b"Authorization", f"Bearer {TOKEN}".encode()), (name, value)]
    status, payload = raw_post(fuzz_stack.base_url, "/v1/chat/completions", headers, body)
    STATS["requests"] += 1
    STATS["5xx"] += status >= 500
    STATS["tracebacks"] += b"Traceback" in payload
    assert status < 500 and b"Traceback" not in payload, (name, value, payload[:300])


@pytest.mark.parametrize("depth", [100, 1_000, 100_000])
def test_deep_json(http: httpx.Client, depth: int) -> None:
    deep_array = b"[" * depth + b"]" * depth
    deep_content = b'{"messages":[{"role":"user","content":' + deep_array + b"}]}"
    for content in (deep_array, deep_content):
        response = send(
            http, "POST", "/v1/chat/completions", {"Authorization": f"Bearer {TOKEN}"}, content
        )
        assert response.status_code == 400


def test_huge_inputs(http: httpx.Client) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    many = json.dumps({"messages": [{"role": "user", "content": "x"}] * 50_000}).encode()
    long_text = json.dumps(
        {"messages": [{"role": "user", "content": "word " * 500_000}], "max_tokens": 3}
    ).encode()
    too_big = b'{"messages":[{"role":"user","content":"' + b"x" * (21 * 1024 * 1024) + b'"}]}'
    refused = send(http, "POST", "/v1/chat/completions", auth, many)  # over maxMessages
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "array_above_max_length"
    assert send(http, "POST", "/v1/chat/completions", auth, long_text).status_code == 200
    assert send(http, "POST", "/v1/chat/completions", auth, too_big).status_code == 413


def test_no_traceback_in_either_log(fuzz_stack: Stack) -> None:
    for process in (fuzz_stack.edge, fuzz_stack.worker):
        log = process.log()
        if "Traceback" in log:
            STATS["tracebacks"] += 1
        assert "Traceback" not in log, log[-3000:]
    assert STATS["requests"] >= 4 * EXAMPLES and STATS["5xx"] == 0
