"""The app factory's error mapping, in process: the one row no real request can produce on
purpose (an unexpected failure inside the edge) becomes a 500 without a stack trace."""

from __future__ import annotations

import httpx
import pytest

from gateway_edge.app import create_app
from gateway_edge.dialects import chat
from services.config import parse_config

CONFIG = parse_config(
    "{ gateway: { auth: { token: 't' }, "
    "http: { endpoints: { chatCompletions: { enabled: true } } } } }"
)


async def test_unexpected_errors_are_a_500_without_a_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(chat, "parse_chat_request", broken)
    transport = httpx.ASGITransport(app=create_app(CONFIG), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        response = await client.post(
            "/v1/chat/completions",
            headers={"Authorization": "Bearer t"},
            json={"messages": [{"role": "user", "content": "x"}]},
        )
    assert response.status_code == 500
    assert response.json() == {
        "error": {"message": "Internal error.", "type": "api_error", "param": None, "code": None}
    }
    assert "secret internals" not in response.text and "Traceback" not in response.text


@pytest.mark.parametrize(
    ("responses", "status"), [("", 404), (", responses: { enabled: true }", 401)]
)
async def test_responses_is_served_only_when_enabled(responses: str, status: int) -> None:
    config = parse_config(
        "{ gateway: { auth: { token: 't' }, "
        f"http: {{ endpoints: {{ chatCompletions: {{ enabled: true }}{responses} }} }} }} }}"
    )
    transport = httpx.ASGITransport(app=create_app(config))
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        response = await client.post("/v1/responses", json={"input": "x"})  # no bearer
    assert response.status_code == status
