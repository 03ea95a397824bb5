"""Small helpers shared by the conformance tests."""

from __future__ import annotations

from typing import Any

import httpx

from devkit.processes import TOKEN, Stack

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHAT = "/v1/chat/completions"


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def post_chat(base_url: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{base_url}{CHAT}", headers={**AUTH, **(headers or {})}, json=body, timeout=60
    )


def chat(stack: Stack, **body: Any) -> httpx.Response:
    return post_chat(stack.base_url, body)


def assert_error(response: httpx.Response, status: int, error_type: str | None) -> dict[str, Any]:
    """The OpenAI error shape, with a readable message and no stack trace."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if error_type is not None:
        assert error["type"] == error_type
    assert isinstance(error["message"], str) and len(error["message"]) > 5
    assert "Traceback" not in response.text
    return dict(error)
