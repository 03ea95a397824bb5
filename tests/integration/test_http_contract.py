"""The edge's HTTP basics over a real edge + worker: 404/405/413/400/401, health, request ids."""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import (
    REPO_ROOT,
    TOKEN,
    Stack,
    clawgate,
    free_port,
    start_edge,
    write_config,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}
URL = "/v1/chat/completions"


def assert_error(response: httpx.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type and error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_unknown_path_is_404(echo_stack: Stack) -> None:
    assert_error(httpx.get(f"{echo_stack.base_url}/v1/nothing-here"), 404, "not_found_error")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_before_auth(echo_stack: Stack, method: str) -> None:
    response = httpx.request(method, f"{echo_stack.base_url}{URL}")
    assert_error(response, 405, "invalid_request_error")
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
def test_missing_or_wrong_secret_is_401(echo_stack: Stack, headers: dict[str, str]) -> None:
    response = httpx.post(f"{echo_stack.base_url}{URL}", headers=headers, json={"messages": []})
    error = assert_error(response, 401, "unauthorized")
    assert error["message"] == "Unauthorized"


def test_body_limit_declared_and_streamed(tmp_path: Path, echo_stack: Stack) -> None:
    config = copy.deepcopy(echo_stack.config)
    config["gateway"]["port"] = free_port()
    config["gateway"]["http"]["endpoints"]["chatCompletions"]["maxBodyBytes"] = 1000
    base_url = f"http://127.0.0.1:{config['gateway']['port']}"
    edge = start_edge(write_config(tmp_path, config), base_url, tmp_path / "edge.log")
    try:
        big = b'{"messages":[{"role":"user","content":"' + b"x" * 2000 + b'"}]}'
        assert_error(
            httpx.post(f"{base_url}{URL}", headers=AUTH, content=big), 413, "invalid_request_error"
        )

        def chunked() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
            yield big[:500]
            yield big[500:]

        assert_error(
            httpx.post(f"{base_url}{URL}", headers=AUTH, content=chunked()),
            413,
            "invalid_request_error",
        )
        small = httpx.post(
            f"{base_url}{URL}", headers=AUTH, json={"messages": [{"role": "user", "content": "ok"}]}
        )
        assert small.status_code == 200
    finally:
        edge.stop()


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe", b"[1,2]", b'"text"', b"null"])
def test_bad_bodies_are_400(echo_stack: Stack, body: bytes) -> None:
    response = httpx.post(f"{echo_stack.base_url}{URL}", headers=AUTH, content=body)
    assert_error(response, 400, "invalid_request_error")


def test_no_user_message_is_400(echo_stack: Stack) -> None:
    response = httpx.post(
        f"{echo_stack.base_url}{URL}",
        headers=AUTH,
        json={"messages": [{"role": "system", "content": "x"}]},
    )
    assert (
        assert_error(response, 400, "invalid_request_error")["message"]
        == "Missing user message in messages."
    )


def test_health_and_readiness_need_no_auth(echo_stack: Stack) -> None:
    assert httpx.get(f"{echo_stack.base_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{echo_stack.base_url}/readyz").status_code == 200


def test_request_id_is_echoed_or_made(echo_stack: Stack) -> None:
    given = httpx.get(f"{echo_stack.base_url}/healthz", headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = httpx.get(f"{echo_stack.base_url}/healthz")
    assert len(made.headers["x-request-id"]) == 32


def test_disabled_endpoint_is_404(tmp_path: Path, echo_stack: Stack) -> None:
    config = copy.deepcopy(echo_stack.config)
    config["gateway"]["port"] = free_port()
    config["gateway"]["http"]["endpoints"]["chatCompletions"]["enabled"] = False
    base_url = f"http://127.0.0.1:{config['gateway']['port']}"
    edge = start_edge(write_config(tmp_path, config), base_url, tmp_path / "edge.log")
    try:
        response = httpx.post(
            f"{base_url}{URL}", headers=AUTH, json={"messages": [{"role": "user", "content": "x"}]}
        )
        assert_error(response, 404, "not_found_error")
        assert httpx.get(f"{base_url}{URL}").status_code == 404
    finally:
        edge.stop()


def test_edge_refuses_to_start_without_a_secret(tmp_path: Path, echo_stack: Stack) -> None:
    config = copy.deepcopy(echo_stack.config)
    config["gateway"]["auth"] = {"mode": "token"}
    path = write_config(tmp_path, config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_GATEWAY_")}
    result = subprocess.run(
        clawgate(path, "edge"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 2
    assert "OPENCLAW_GATEWAY_TOKEN" in result.stderr and "Traceback" not in result.stderr
