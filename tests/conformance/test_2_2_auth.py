"""Auth: bearer secret in token/password mode, env fallbacks, `none`, refusals, lockout."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

from devkit.processes import REPO_ROOT, TOKEN, Stack, clawgate, extra_edge, write_config
from tests.conformance.helpers import CHAT, assert_error, post_chat, user

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_GATEWAY_")}


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
    response = httpx.post(
        f"{echo_stack.base_url}{CHAT}", headers=headers, json={"messages": user("x")}
    )
    assert assert_error(response, 401, "unauthorized")["message"] == "Unauthorized"


def test_scheme_is_case_insensitive_and_value_trimmed(echo_stack: Stack) -> None:
    response = httpx.post(
        f"{echo_stack.base_url}{CHAT}",
        headers={"Authorization": f"bEaReR    {TOKEN}"},
        json={"messages": user("x")},
    )
    assert response.status_code == 200


def test_sdk_raises_authentication_error(echo_stack: Stack) -> None:
    sdk = openai.OpenAI(base_url=f"{echo_stack.base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        sdk.chat.completions.create(model="openclaw", messages=user("x"))  # type: ignore[arg-type]


def test_password_mode_from_the_environment(tmp_path: Path, echo_stack: Stack) -> None:
    def password_mode(config: dict) -> None:
        config["gateway"]["auth"] = {"mode": "password"}

    env = {"OPENCLAW_GATEWAY_PASSWORD": "pw-from-env"}
    with extra_edge(tmp_path, echo_stack.config, password_mode, env) as base_url:
        ok = httpx.post(
            f"{base_url}{CHAT}",
            headers={"Authorization": "Bearer pw-from-env"},
            json={"messages": user("x")},
        )
        assert ok.status_code == 200
        assert_error(post_chat(base_url, {"messages": user("x")}), 401, "unauthorized")  # the token


def test_mode_none_on_loopback_needs_no_header(tmp_path: Path, echo_stack: Stack) -> None:
    def open_mode(config: dict) -> None:
        config["gateway"]["auth"] = {"mode": "none"}

    with extra_edge(tmp_path, echo_stack.config, open_mode) as base_url:
        assert httpx.post(f"{base_url}{CHAT}", json={"messages": user("x")}).status_code == 200


@pytest.mark.parametrize(
    ("auth", "bind", "says"),
    [
        ({"mode": "token"}, "127.0.0.1", "OPENCLAW_GATEWAY_TOKEN"),
        ({"mode": "password"}, "127.0.0.1", "OPENCLAW_GATEWAY_PASSWORD"),
        ({}, "127.0.0.1", "OPENCLAW_GATEWAY_TOKEN"),
        ({"mode": "none"}, "0.0.0.0", "allowUnauthenticatedNonLoopback"),
    ],
)
def test_refuses_to_start_open_by_accident(
    tmp_path: Path, echo_stack: Stack, auth: dict, bind: str, says: str
) -> None:
    config = {
        **echo_stack.config,
        "gateway": {**echo_stack.config["gateway"], "auth": auth, "bind": bind},
    }
    path = write_config(tmp_path, config)
    result = subprocess.run(
        clawgate(path, "edge"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env=CLEAN_ENV,
    )
    assert result.returncode == 2
    assert says in result.stderr and "Traceback" not in result.stderr


def test_failed_attempts_lock_the_client_out(tmp_path: Path, echo_stack: Stack) -> None:
    def strict(config: dict) -> None:
        config["gateway"]["auth"]["rateLimit"] = {
            "maxAttempts": 3,
            "windowMs": 60_000,
            "lockoutMs": 2_000,
            "exemptLoopback": False,
        }

    with extra_edge(tmp_path, echo_stack.config, strict) as base_url:
        wrong = {"Authorization": "Bearer wrong"}
        # A missing header is not a failed attempt; a success resets the count.
        for _ in range(5):
            assert httpx.post(f"{base_url}{CHAT}", json={"messages": user("x")}).status_code == 401
        for _ in range(2):
            assert httpx.post(f"{base_url}{CHAT}", headers=wrong, json={}).status_code == 401
        assert post_chat(base_url, {"messages": user("x")}).status_code == 200
        for _ in range(3):
            assert httpx.post(f"{base_url}{CHAT}", headers=wrong, json={}).status_code == 401
        locked = httpx.post(f"{base_url}{CHAT}", headers=wrong, json={})
        error = assert_error(locked, 429, "rate_limited")
        assert 1 <= int(locked.headers["retry-after"]) <= 2 and "retry" in error["message"]
        sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.RateLimitError):
            sdk.models.list()
        # The right secret is never refused by the lockout (issue 17.1): it would let anyone
        # who can send ten bad requests as you lock you out.
        assert post_chat(base_url, {"messages": user("x")}).status_code == 200
        for _ in range(3):
            assert httpx.post(f"{base_url}{CHAT}", headers=wrong, json={}).status_code == 401
        time.sleep(2.1)
        assert httpx.post(f"{base_url}{CHAT}", headers=wrong, json={}).status_code == 401


def test_loopback_is_exempt_by_default(echo_stack: Stack) -> None:
    for _ in range(15):
        httpx.post(
            f"{echo_stack.base_url}{CHAT}", headers={"Authorization": "Bearer wrong"}, json={}
        )
    assert post_chat(echo_stack.base_url, {"messages": user("x")}).status_code == 200
