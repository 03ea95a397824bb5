"""Every `model` form and the agent header pick the agent they name (the agent-selection rules)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from devkit.processes import TOKEN, Stack
from tests.support.schemas import assert_valid


def post(stack: Stack, body: dict, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{stack.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {TOKEN}", **(headers or {})},
        json=body,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("model", "agent"),
    [
        ("openclaw", "main"),
        ("openclaw/default", "main"),
        ("OpenClaw:beta", "beta"),
        ("openclaw/beta", "beta"),
        ("agent:beta", "beta"),
        ("AGENT:main", "main"),
        (None, "main"),
    ],
)
def test_model_forms(echo_stack: Stack, model: str | None, agent: str) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    if model is not None:
        body["model"] = model
    response = post(echo_stack, body)
    assert response.status_code == 200, response.text
    assert_valid("CreateChatCompletionResponse", response.json())
    assert response.json()["model"] == (model or "openclaw")
    assert response.headers["x-openclaw-session-key"].startswith(f"agent:{agent}:openai:")


@pytest.mark.parametrize("header", ["x-openclaw-agent-id", "x-openclaw-agent"])
def test_header_wins_over_model(echo_stack: Stack, header: str) -> None:
    response = post(
        echo_stack,
        {"model": "openclaw:main", "messages": [{"role": "user", "content": "hi"}]},
        {header: "beta"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-openclaw-session-key"].startswith("agent:beta:openai:")


@pytest.mark.parametrize("model", ["gpt-4o", "openclaw:Not Valid!", "agent:"])
def test_invalid_model_forms(echo_stack: Stack, model: str) -> None:
    response = post(echo_stack, {"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "model"
    assert "openclaw:<agentId>" in error["message"]


def test_unknown_agent_is_named(echo_stack: Stack) -> None:
    response = post(
        echo_stack, {"model": "openclaw:gamma", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 400
    assert "'gamma'" in response.json()["error"]["message"]
    assert response.json()["error"]["param"] == "model"
