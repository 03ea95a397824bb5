"""`POST /tools/invoke` over real processes: the edge, a worker, and real MCP servers
(`mcp-server-time` from the registry, and the suite's own stdio server for a hanging tool)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devkit.processes import (
    TOKEN,
    Stack,
    echo_config,
    extra_edge,
    free_port,
    start_stack,
    wait_until,
)

SUPPORT = Path(__file__).resolve().parents[1] / "support"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("tools-invoke")
    config = echo_config(tmp_path)
    config["worker"]["metricsListen"] = f"127.0.0.1:{free_port()}"
    local = [str(SUPPORT / "mcp_test_server.py"), "--stdio"]
    config["mcp"] = {
        "servers": {
            "time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]},
            "local": {"command": sys.executable, "args": local, "requestTimeoutMs": 1500},
        }
    }
    config["gateway"]["tools"] = {"deny": ["local__big"]}
    config["agents"]["list"] += [
        {"id": "timed", "tools": {"allow": ["time__*", "local__*"], "deny": ["local__fail"]}},
    ]
    running = start_stack(tmp_path, config)
    yield running
    running.stop()


def invoke(
    stack: Stack, body: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{stack.base_url}/tools/invoke",
        json=body,
        headers=AUTH if headers is None else headers,
        timeout=60,
    )


def calls_counted(stack: Stack, server: str, tool: str) -> float:
    """The worker's count of the tool's calls, whatever their outcome (counted before each
    call answers, unlike its log line, which may reach the file later)."""
    text = httpx.get(f"http://{stack.config['worker']['metricsListen']}/metrics", timeout=10).text
    prefix = 'clawgate_worker_tool_calls_total{outcome="'
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix) and f'server="{server}",tool="{tool}"' in line
    )


def test_an_allowed_tool_answers_ok_with_its_result(stack: Stack) -> None:
    response = invoke(
        stack,
        {
            "tool": "time__get_current_time",
            "args": {"timezone": "Europe/Paris"},
            "agentId": "timed",
            "idempotencyKey": "first",
        },
        {**AUTH, "x-openclaw-message-channel": "slack"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True
    assert body["result"]["timezone"] == "Europe/Paris" and "datetime" in body["result"]


def test_each_invocation_is_a_usage_record_of_its_own(stack: Stack) -> None:
    def tool_rows() -> list[dict[str, Any]]:
        answer = httpx.get(
            f"{stack.base_url}/v1/usage", params={"group_by": "agent,model"}, headers=AUTH
        )
        rows: list[dict[str, Any]] = answer.json()["data"]
        return [row for row in rows if row["model"] == "tool/time__get_current_time"]

    before = sum(row["requests"] for row in tool_rows())
    body = {"tool": "time__get_current_time", "args": {"timezone": "UTC"}, "agentId": "timed"}
    for _ in range(2):
        assert invoke(stack, body).status_code == 200
    (row,) = tool_rows()
    assert row["agent"] == "timed" and row["requests"] == before + 2
    assert row["input_tokens"] == row["output_tokens"] == 0 and row["cost_usd"] == 0


def test_the_agent_comes_from_the_session_key_and_name_wins_over_tool(stack: Stack) -> None:
    response = invoke(
        stack,
        {
            "tool": "nothing",
            "name": "local__add",
            "args": {"a": 2, "b": 3},
            "sessionKey": "agent:timed:main",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "result": 5}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"tool": "time__get_current_time", "args": {"timezone": "UTC"}}, "the default agent"),
        ({"tool": "local__fail", "agentId": "timed"}, "the agent's tools.deny"),
        ({"tool": "local__big", "agentId": "timed", "args": {"size": 1}}, "gateway.tools.deny"),
        ({"tool": "exec", "agentId": "timed"}, "the built-in HTTP deny list"),
        ({"tool": "time__no_such_tool", "agentId": "timed"}, "no server offers it"),
    ],
)
def test_a_tool_the_agent_may_not_use_is_404(stack: Stack, body: dict[str, Any], why: str) -> None:
    response = invoke(stack, body)
    assert response.status_code == 404, why
    assert response.json()["ok"] is False and response.json()["error"]["type"] == "not_found"


def test_arguments_of_the_wrong_type_are_400_before_the_server_is_called(stack: Stack) -> None:
    before = calls_counted(stack, "time", "get_current_time")
    response = invoke(
        stack,
        {"tool": "time__get_current_time", "args": {"timezone": 5}, "agentId": "timed"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert response.json()["ok"] is False and "args.timezone" in error["message"]
    assert calls_counted(stack, "time", "get_current_time") == before  # never called
    good = {"tool": "time__get_current_time", "args": {"timezone": "UTC"}, "agentId": "timed"}
    assert invoke(stack, good).status_code == 200
    assert calls_counted(stack, "time", "get_current_time") == before + 1  # the count counts


@pytest.mark.parametrize(
    "body",
    [
        {"args": {}},
        {"tool": 5},
        {"tool": "local__add", "args": [1, 2]},
        {"tool": "local__add", "agentId": "nobody"},
        {"tool": "local__add", "agentId": "beta", "sessionKey": "agent:timed:main"},
    ],
)
def test_bad_requests_are_400_with_the_tools_error_shape(
    stack: Stack, body: dict[str, Any]
) -> None:
    response = invoke(stack, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert response.json()["ok"] is False and error["type"] == "invalid_request_error"
    assert error["message"]


def test_a_hanging_tool_times_out_as_in_a_turn(stack: Stack) -> None:
    response = invoke(stack, {"tool": "local__hang", "agentId": "timed", "args": {"seconds": 60}})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "timeout" and "1.5s" in error["message"]
    wait_until(lambda: "tool local__hang: timeout" in stack.worker.log(), 10, "the call's line")


def test_without_a_token_it_is_401(stack: Stack) -> None:
    response = invoke(stack, {"tool": "local__add"}, {})
    assert response.status_code == 401


def test_an_identity_without_operator_admin_is_403(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An operator surface: on a private ingress (`auth.mode: none`) the scopes come from
    `x-openclaw-scopes`, and write alone does not reach it."""

    def open_ingress(config: dict[str, Any]) -> None:
        config["gateway"]["auth"] = {"mode": "none"}

    body = {"tool": "local__add", "args": {"a": 1, "b": 1}, "agentId": "timed"}
    with extra_edge(tmp_path_factory.mktemp("ingress"), stack.config, open_ingress) as url:
        narrow = httpx.post(
            f"{url}/tools/invoke", json=body, headers={"x-openclaw-scopes": "operator.write"}
        )
        assert narrow.status_code == 403
        assert narrow.json()["ok"] is False and narrow.json()["error"]["type"] == "forbidden"
        admin = httpx.post(
            f"{url}/tools/invoke", json=body, headers={"x-openclaw-scopes": "operator.admin"}
        )
        assert admin.status_code == 200 and admin.json() == {"ok": True, "result": 2}


def test_a_body_over_two_mebibytes_is_413(stack: Stack) -> None:
    body = {"tool": "local__add", "agentId": "timed", "args": {"pad": "x" * (2 << 20)}}
    response = invoke(stack, body)
    assert response.status_code == 413
    assert response.json()["ok"] is False and "2097152" in response.json()["error"]["message"]
