"""The agent's own tools (MCP, issue 20) over a real worker and edge: `mcp-server-time` (PyPI,
stdio) and a test server built on the `mcp` SDK over streamable HTTP and over stdio. The echo
provider's scripted tool mode plays the model: `call NAME {json}` calls a tool, and after the
results it answers `tool NAME said: RESULT`."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from devkit.processes import TOKEN, Process, Stack, echo_config, free_port, start_stack, wait_until
from tests.support.schemas import assert_valid

SUPPORT = Path(__file__).resolve().parents[1] / "support"
SECRET_IN_ENV = "sk-secret-in-env"
CHAT = "/v1/chat/completions"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mcp-events")
    return {"web": folder / "web.log", "local": folder / "local.log"}


@pytest.fixture(scope="module")
def web_server(events: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, str(SUPPORT / "mcp_test_server.py"), "--http", str(port)]
    log = tmp_path_factory.mktemp("mcp-web") / "server.log"
    process = Process([*argv, "--events", str(events["web"])], log).start()
    url = f"http://127.0.0.1:{port}/mcp"

    def listening() -> bool:
        try:
            httpx.get(url, timeout=1)
        except httpx.HTTPError:
            return False
        return True

    wait_until(listening, 30, "mcp test server", process)
    yield url
    process.stop()


@pytest.fixture(scope="module")
def stack(
    web_server: str, events: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("mcp")
    config = echo_config(tmp_path)
    local = [str(SUPPORT / "mcp_test_server.py"), "--stdio", "--events", str(events["local"])]
    config["mcp"] = {
        "maxResultBytes": 50_000,
        "servers": {
            "time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]},
            "web": {
                "url": web_server,
                "requestTimeoutMs": 2000,
                "toolFilter": {"exclude": ["crash"]},
                "headers": {"X-Test": "${MCP_TEST_HEADER}"},
            },
            "local": {"command": sys.executable, "args": local, "env": {"SECRET": "${MCP_ENV}"}},
            "broken": {"command": str(tmp_path / "no-such-program")},
            "off": {"command": "true", "enabled": False},
        },
    }
    config["agents"]["list"] += [
        {
            "id": "tooled",
            "tools": {
                "allow": ["time__*", "web__*", "local__*", "broken__*"],
                "deny": ["web__big"],
                "maxSteps": 3,
            },
        },
        {"id": "webonly", "tools": {"allow": ["web__*"]}},
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MCP_ENV", SECRET_IN_ENV)
        patch.setenv("MCP_TEST_HEADER", "header-value")
        running = start_stack(tmp_path, config)
    yield running
    running.stop()


def chat(
    stack: Stack, agent: str, text: str, headers: dict[str, str] | None = None, **extra: Any
) -> httpx.Response:
    body = {"model": f"openclaw:{agent}", "messages": [{"role": "user", "content": text}], **extra}
    headers = {**AUTH, **(headers or {})}
    return httpx.post(f"{stack.base_url}{CHAT}", json=body, headers=headers, timeout=60)


def run_turn(stack: Stack, agent: str, text: str, session: str) -> list[pb.RunTurnEvent]:
    request = pb.RunTurnRequest(
        agent_id=agent,
        session_key=session,
        input=pb.Message(role=pb.ROLE_USER, text=text),
    )
    with grpc.insecure_channel(stack.worker_address) as channel:
        stub = pb_grpc.AgentServiceStub(channel)
        return [event for reply in stub.RunTurn(request, timeout=60) for event in reply.events]


def stored(stack: Stack, session: str) -> list[pb.Message]:
    with grpc.insecure_channel(stack.worker_address) as channel:
        reply = pb_grpc.AgentServiceStub(channel).GetSession(
            pb.GetSessionRequest(session_key=session)
        )
    return list(reply.messages)


def test_time_server_over_stdio_answers_and_the_transcript_keeps_every_step(stack: Stack) -> None:
    session = {"x-openclaw-session-key": "mcp-time-1"}
    response = httpx.post(
        f"{stack.base_url}{CHAT}",
        json={
            "model": "openclaw:tooled",
            "messages": [
                {"role": "user", "content": 'call time__get_current_time {"timezone": "UTC"}'}
            ],
        },
        headers={**AUTH, **session},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert_valid("CreateChatCompletionResponse", body)
    message = body["choices"][0]["message"]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert "tool_calls" not in message  # the worker ran it: not the client's call
    said = message["content"].removeprefix("tool time__get_current_time said: ")
    assert said != message["content"]
    assert json.loads(said)["timezone"] == "UTC"  # the time server's own answer
    roles = [(m.role, m.name) for m in stored(stack, "mcp-time-1")]
    assert roles == [
        (pb.ROLE_USER, ""),
        (pb.ROLE_ASSISTANT, ""),
        (pb.ROLE_TOOL, "time__get_current_time"),
        (pb.ROLE_ASSISTANT, ""),
    ]
    steps = stored(stack, "mcp-time-1")
    assert steps[1].tool_calls[0].name == "time__get_current_time"
    assert steps[2].tool_call_id == steps[1].tool_calls[0].id
    assert '"UTC"' in steps[2].text
    # The session goes on with that context: the next turn's prompt holds all four messages.
    again = chat(stack, "main", "and now?", headers=session)
    assert again.json()["choices"][0]["message"]["content"] == "echo: and now? [turns=4]"


def test_streamable_http_server_through_the_openai_sdk_stream(
    stack: Stack, events: dict[str, Path]
) -> None:
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=TOKEN)
    stream = client.chat.completions.create(
        model="openclaw:tooled",
        messages=[{"role": "user", "content": 'Adding. call web__add {"a": 2, "b": 40}'}],
        stream=True,
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "Adding.\n\ntool web__add said: 42"
    assert not any(chunk.choices and chunk.choices[0].delta.tool_calls for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert "add 2 40" in events["web"].read_text()


def test_a_stream_sends_keep_alive_while_a_tool_runs(stack: Stack) -> None:
    body = {
        "model": "openclaw:tooled",
        "stream": True,
        "messages": [{"role": "user", "content": 'call web__hang {"seconds": 0.5}'}],
    }
    with httpx.stream("POST", f"{stack.base_url}{CHAT}", json=body, headers=AUTH) as response:
        lines = list(response.iter_lines())
    assert ": keep-alive" in lines
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert "tool web__hang said: done waiting" in "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
    )
    assert lines[-1] == "data: [DONE]" or lines[-2] == "data: [DONE]"


def test_grpc_stream_carries_tool_started_and_finished_and_a_failure_is_the_result(
    stack: Stack,
) -> None:
    events = run_turn(stack, "tooled", 'call web__fail {"reason": "no luck today"}', "mcp-grpc-1")
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds == ["started", "tool_started", "tool_finished", "delta", "finished"]
    started, finished = events[1].tool_started, events[2].tool_finished
    assert started.name == finished.name == "web__fail"
    assert json.loads(started.arguments) == {"reason": "no luck today"}
    assert finished.call_id == started.call_id
    assert finished.is_error
    assert "no luck today" in finished.summary
    assert "no luck today" in events[3].delta.text  # the model read the error
    assert events[4].finished.finish_reason == pb.FINISH_REASON_STOP
    assert not events[4].finished.tool_calls


def test_allow_deny_and_tool_filter_decide_what_an_agent_is_offered(
    stack: Stack, events: dict[str, Path]
) -> None:
    def tools_of() -> dict[str, set[str]]:
        with grpc.insecure_channel(stack.worker_address) as channel:
            listing = pb_grpc.AgentServiceStub(channel).ListAgents(pb.ListAgentsRequest())
        return {agent.id: set(agent.tools) for agent in listing.agents}

    wait_until(lambda: "time__get_current_time" in tools_of()["tooled"], 30, "servers listed")
    tools = tools_of()
    assert tools["main"] == set()  # nothing unless allowed
    assert {"web__add", "web__fail", "web__hang", "time__convert_time"} <= tools["tooled"]
    assert "web__big" not in tools["tooled"]  # denied
    assert "web__crash" not in tools["tooled"] | tools["webonly"]  # the server's toolFilter
    assert not any(name.startswith(("time__", "local__")) for name in tools["webonly"])
    assert "web__big" in tools["webonly"]
    # An agent without tools never runs one: echo just repeats the script.
    before = events["web"].read_text()
    reply = chat(stack, "main", 'call web__add {"a": 7, "b": 7}').json()
    assert reply["choices"][0]["message"]["content"].startswith("echo: call web__add")
    assert events["web"].read_text() == before


def test_a_tool_that_hangs_past_request_timeout_is_cancelled_and_the_turn_goes_on(
    stack: Stack, events: dict[str, Path]
) -> None:
    started = time.monotonic()
    response = chat(stack, "tooled", 'call web__hang {"seconds": 60}')
    assert response.status_code == 200
    assert time.monotonic() - started < 15
    content = response.json()["choices"][0]["message"]["content"]
    assert "did not answer within 2s" in content
    wait_until(lambda: "cancelled" in events["web"].read_text(), 10, "the server saw the cancel")


def test_a_server_that_exits_mid_turn_fails_that_call_and_is_started_again(
    stack: Stack, events: dict[str, Path]
) -> None:
    response = chat(stack, "tooled", "call local__crash {}")
    assert response.status_code == 200
    assert "unavailable" in response.json()["choices"][0]["message"]["content"]
    assert "crash" in events["local"].read_text()

    def adds() -> bool:
        reply = chat(stack, "tooled", 'call local__add {"a": 1, "b": 1}').json()
        return bool(reply["choices"][0]["message"]["content"] == "tool local__add said: 2")

    wait_until(adds, 20, "the stdio server is back")
    assert events["local"].read_text().count("server started") >= 2
    assert stack.worker.alive()


def test_max_steps_bounds_a_model_that_keeps_calling(stack: Stack, events: dict[str, Path]) -> None:
    before = events["web"].read_text().count("add 5 5")
    response = chat(stack, "tooled", 'loop call web__add {"a": 5, "b": 5}')
    assert response.status_code == 200
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert "tool_calls" not in choice["message"]
    assert events["web"].read_text().count("add 5 5") - before == 2  # steps 1 and 2 of 3
    # The third step is asked without the agent's tools: echo, offered none, echoes the last
    # result, having seen both steps (user, call, result, call; the last result is its input).
    assert choice["message"]["content"] == "echo: 10 [turns=4]"
    wait_until(lambda: "reached tools.maxSteps (3)" in stack.worker.log(), 5, "maxSteps logged")


def test_a_client_that_leaves_during_a_tool_call_cancels_it_at_the_server(
    stack: Stack, events: dict[str, Path]
) -> None:
    log = events["local"]
    cancelled, started = log.read_text().count("cancelled"), log.read_text().count("hang started")
    body = {
        "model": "openclaw:tooled",
        "stream": True,
        "messages": [{"role": "user", "content": 'call local__hang {"seconds": 120}'}],
    }
    with httpx.stream("POST", f"{stack.base_url}{CHAT}", json=body, headers=AUTH) as response:
        assert response.status_code == 200
        wait_until(lambda: log.read_text().count("hang started") > started, 20, "the tool runs")
    # The client is gone: the turn is cancelled, and with it the call at the server.
    wait_until(lambda: log.read_text().count("cancelled") > cancelled, 10, "cancel at server")


def test_mcp_and_client_tools_in_one_turn(stack: Stack) -> None:
    session = {"x-openclaw-session-key": "mcp-mixed-1"}
    script = 'call web__add {"a": 1, "b": 2} ; call get_weather {"city": "Paris"}'
    first = chat(stack, "tooled", script, tools=[WEATHER], headers=session).json()
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]  # only the client's; web__add ran on the worker
    assert call["function"]["name"] == "get_weather"
    follow_up = httpx.post(
        f"{stack.base_url}{CHAT}",
        json={
            "model": "openclaw:tooled",
            "tools": [WEATHER],
            "messages": [{"role": "tool", "tool_call_id": call["id"], "content": "sunny"}],
        },
        headers={**AUTH, **session},
        timeout=60,
    ).json()
    content = follow_up["choices"][0]["message"]["content"]
    assert content == f"tool web__add said: 3; tool {call['id']} said: sunny"


def test_a_long_result_is_truncated_with_a_note(stack: Stack) -> None:
    content = chat(stack, "webonly", 'call web__big {"size": 80000}').json()["choices"][0][
        "message"
    ]["content"]
    assert "[truncated: the result had 80000 bytes, 50000 shown]" in content
    assert content.count("x") == 50_000


def test_status_shows_each_tool_server_and_env_values_stay_out_of_logs(stack: Stack) -> None:
    status = httpx.get(f"{stack.base_url}/status", headers=AUTH, timeout=10).json()
    servers = {server["name"]: server for server in status["workers"][0]["tool_servers"]}
    assert set(servers) == {"time", "web", "local", "broken"}  # "off" is disabled
    assert servers["web"]["state"] == "ready"
    assert servers["broken"]["state"] == "unavailable"
    assert "starting" in servers["broken"]["problem"]
    assert "no-such-program" in servers["broken"]["problem"]
    assert SECRET_IN_ENV not in stack.worker.log()


@pytest.mark.slow
def test_the_embedded_smollm2_agent_answers_the_time_through_the_time_server(
    tmp_path: Path,
) -> None:
    config = echo_config(tmp_path)
    config["models"]["providers"]["local"] = {"api": "llama-cpp", "maxTokens": 48}
    config["mcp"] = {
        "servers": {"time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]}}
    }
    config["agents"]["list"] = [
        {
            "id": "main",
            "default": True,
            "model": "local/smollm2-135m",
            # Two steps: the call, then the answer (asked without tools: a small model would
            # call again).
            "tools": {"allow": ["time__get_current_time"], "maxSteps": 2},
        }
    ]
    running = start_stack(tmp_path, config)
    try:
        response = chat(
            running,
            "main",
            "What time is it in UTC?",
            headers={"x-openclaw-session-key": "llm-time-1"},
            temperature=0,
            seed=1,
        )
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        # The words answer follows the tool's result, which holds the current time: its length
        # varies from run to run, and a 135M model may run on to maxTokens.
        assert choice["finish_reason"] in ("stop", "length")
        assert "tool_calls" not in choice["message"]
        transcript = stored(running, "llm-time-1")
        calls = [call for message in transcript for call in message.tool_calls]
        assert [call.name for call in calls] == ["time__get_current_time"]
        assert "timezone" in json.loads(calls[0].arguments)  # its schema's required argument
        (result,) = [message for message in transcript if message.role == pb.ROLE_TOOL]
        assert result.tool_call_id == calls[0].id
        # The time server answered the call: the time, or its word on the model's timezone.
        assert "timezone" in result.text.lower()
        answer = transcript[-1]
        assert answer.role == pb.ROLE_ASSISTANT and answer.text.strip()  # then it answered
        assert choice["message"]["content"] == answer.text
    finally:
        running.stop()
