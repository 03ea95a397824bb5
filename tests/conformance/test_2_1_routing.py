"""Endpoint switch and routing: 404 when disabled or unknown, 405 before auth, 413, 400."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devkit.processes import Stack, extra_edge
from tests.conformance.helpers import AUTH, CHAT, assert_error, post_chat, user


def test_unknown_path_is_404(echo_stack: Stack) -> None:
    assert_error(httpx.get(f"{echo_stack.base_url}/v1/nothing-here"), 404, "not_found_error")


def test_disabled_endpoint_is_404(tmp_path: Path, echo_stack: Stack) -> None:
    def disable(config: dict) -> None:
        config["gateway"]["http"]["endpoints"]["chatCompletions"]["enabled"] = False

    with extra_edge(tmp_path, echo_stack.config, disable) as base_url:
        assert_error(post_chat(base_url, {"messages": user("x")}), 404, "not_found_error")
        assert_error(httpx.get(f"{base_url}{CHAT}"), 404, "not_found_error")
        assert_error(httpx.get(f"{base_url}/v1/models", headers=AUTH), 404, "not_found_error")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_before_auth(echo_stack: Stack, method: str) -> None:
    response = httpx.request(method, f"{echo_stack.base_url}{CHAT}")
    assert_error(response, 405, "invalid_request_error")
    assert response.headers["allow"] == "POST"


def test_body_limit_declared_and_streamed(tmp_path: Path, echo_stack: Stack) -> None:
    def limit(config: dict) -> None:
        config["gateway"]["http"]["endpoints"]["chatCompletions"]["maxBodyBytes"] = 1000

    with extra_edge(tmp_path, echo_stack.config, limit) as base_url:
        big = b'{"messages":[{"role":"user","content":"' + b"x" * 2000 + b'"}]}'
        response = httpx.post(f"{base_url}{CHAT}", headers=AUTH, content=big)
        assert_error(response, 413, "invalid_request_error")

        def chunked() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
            yield big[:500]
            yield big[500:]

        response = httpx.post(f"{base_url}{CHAT}", headers=AUTH, content=chunked())
        assert_error(response, 413, "invalid_request_error")
        assert post_chat(base_url, {"messages": user("ok")}).status_code == 200


@pytest.mark.parametrize(
    "body", [b"{not json", b"", b"\xff\xfe", b"[1,2]", b'"text"', b"null", b"{}", b"1e999999"]
)
def test_invalid_json_or_non_object_is_400(echo_stack: Stack, body: bytes) -> None:
    response = httpx.post(f"{echo_stack.base_url}{CHAT}", headers=AUTH, content=body)
    assert_error(response, 400, "invalid_request_error")
