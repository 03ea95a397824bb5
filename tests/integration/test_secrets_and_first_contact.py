"""Secrets, least privilege and first contact (issue 17): what a new user and an attacker on the
same host meet first. Real edge and worker processes; each test is named after its item."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from devkit.processes import (
    REPO_ROOT,
    TOKEN,
    Process,
    Stack,
    clawgate,
    echo_config,
    extra_edge,
    free_port,
    wait_until,
    worker_serving,
    write_config,
)
from tests.support.schemas import assert_valid

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHAT = "/v1/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "hi"}]}


def strict_limit(config: dict[str, Any], **extra: Any) -> None:
    config["gateway"]["auth"]["rateLimit"] = {
        "maxAttempts": 3,
        "windowMs": 60_000,
        "lockoutMs": 60_000,
        **extra,
    }


# 1. The lockout cannot be aimed at others


def test_17_1_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(
    tmp_path: Path, echo_stack: Stack
) -> None:
    victim = {"X-Forwarded-For": "203.0.113.5"}
    with extra_edge(tmp_path, echo_stack.config, strict_limit) as base_url:
        for _ in range(5):  # from loopback, which is exempt: the header names nobody
            wrong = {"Authorization": "Bearer wrong", **victim}
            assert httpx.post(f"{base_url}{CHAT}", headers=wrong, json=HELLO).status_code == 401
        right = httpx.post(f"{base_url}{CHAT}", headers={**AUTH, **victim}, json=HELLO)
        assert right.status_code == 200

    def behind_proxy(config: dict[str, Any]) -> None:
        strict_limit(config)
        config["gateway"]["trustedProxies"] = ["127.0.0.1"]

    with extra_edge(tmp_path, echo_stack.config, behind_proxy) as base_url:
        for _ in range(3):
            wrong = {"Authorization": "Bearer wrong", **victim}
            assert httpx.post(f"{base_url}{CHAT}", headers=wrong, json=HELLO).status_code == 401
        locked = httpx.post(
            f"{base_url}{CHAT}", headers={"Authorization": "Bearer wrong", **victim}, json=HELLO
        )
        assert locked.status_code == 429  # the address the trusted proxy named is locked out
        other = {"Authorization": "Bearer wrong", "X-Forwarded-For": "203.0.113.6"}
        assert httpx.post(f"{base_url}{CHAT}", headers=other, json=HELLO).status_code == 401


def test_17_1_the_right_secret_is_never_refused_by_the_lockout(
    tmp_path: Path, echo_stack: Stack
) -> None:
    def strict(config: dict[str, Any]) -> None:
        strict_limit(config, exemptLoopback=False)

    with extra_edge(tmp_path, echo_stack.config, strict) as base_url:
        wrong = {"Authorization": "Bearer wrong"}
        for _ in range(3):
            assert httpx.post(f"{base_url}{CHAT}", headers=wrong, json=HELLO).status_code == 401
        assert httpx.post(f"{base_url}{CHAT}", headers=wrong, json=HELLO).status_code == 429
        assert httpx.post(f"{base_url}{CHAT}", headers=AUTH, json=HELLO).status_code == 200


# 2. Workers on a network address need a shared secret


def test_17_2_a_worker_on_a_network_address_refuses_to_start_without_a_secret(
    tmp_path: Path,
) -> None:
    config = echo_config(tmp_path)
    address = f"0.0.0.0:{free_port()}"
    config["worker"]["listen"] = address
    path = write_config(tmp_path, config)
    refused = subprocess.run(clawgate(path, "worker"), capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "worker.sharedSecret" in refused.stderr and "Traceback" not in refused.stderr

    config["worker"]["allowUnauthenticatedNonLoopback"] = True
    path = write_config(tmp_path, config, "open.json5")
    worker = Process(clawgate(path, "worker"), tmp_path / "worker.log").start()
    try:
        local = f"127.0.0.1:{address.rpartition(':')[2]}"
        wait_until(lambda: worker_serving(local), 60, "explicitly open worker", worker)
    finally:
        worker.stop()


# 3. `clawgate up` names where the token is, and prints it only when it made it


def test_17_3_up_does_not_print_a_configured_token(tmp_path: Path) -> None:
    config = echo_config(tmp_path)
    config["gateway"]["workers"] = [config["worker"]["listen"]]
    path = write_config(tmp_path, config)
    up = Process(clawgate(path, "up"), tmp_path / "up.log").start()
    try:
        wait_until(lambda: "ready at" in up.log(), 60, "clawgate up", up)
    finally:
        up.stop(signal.SIGTERM)
    output = up.log()
    assert TOKEN not in output
    assert f"gateway.auth.token in {path}" in output


# 4. Secrets that could never match, and the 401's challenge


def test_17_4_a_secret_no_client_can_send_refuses_to_start(tmp_path: Path) -> None:
    for secret, says in (("pässword", "non-ASCII"), ("token-with-newline\n", "whitespace")):
        config = echo_config(tmp_path)
        config["gateway"]["auth"] = {"mode": "token", "token": secret}
        path = write_config(tmp_path, config, f"bad-{abs(hash(secret))}.json5")
        result = subprocess.run(clawgate(path, "edge"), capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert says in result.stderr and "gateway.auth.token" in result.stderr
        assert secret.strip() not in result.stderr  # the secret itself is never printed


def test_17_4_a_401_carries_a_bearer_challenge(echo_stack: Stack) -> None:
    response = httpx.post(f"{echo_stack.base_url}{CHAT}", json=HELLO)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


# 6. What API clients may read


def test_17_6_errors_do_not_leak_addresses_or_echo_long_values(echo_stack: Stack) -> None:
    long_model = "openclaw:" + "x" * 10_000
    bad_model = httpx.post(
        f"{echo_stack.base_url}{CHAT}", headers=AUTH, json={**HELLO, "model": long_model}
    )
    assert bad_model.status_code in (400, 404)
    assert len(bad_model.json()["error"]["message"]) < 300
    assert httpx.get(f"{echo_stack.base_url}/openapi.json").status_code == 404


# 7. Transcripts only for their owner


def test_17_7_the_session_file_and_its_folder_are_private(tmp_path: Path) -> None:
    config = echo_config(tmp_path)
    folder = tmp_path / "private-home" / ".clawgate"
    config["sessions"]["store"] = f"sqlite:///{folder / 'sessions.db'}"
    path = write_config(tmp_path, config)
    worker = Process(clawgate(path, "worker"), tmp_path / "worker.log").start()
    try:
        wait_until(lambda: worker_serving(config["worker"]["listen"]), 60, "worker", worker)
    finally:
        worker.stop()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for file in folder.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


# 8. Global options on either side of the command


def test_17_8_global_options_work_after_the_command(tmp_path: Path) -> None:
    config = echo_config(tmp_path)
    path = write_config(tmp_path, config)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clawgate.cli",
            "status",
            "--config",
            str(path),
            "--log-level",
            "warning",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert "unrecognized arguments" not in result.stderr
    assert "cannot reach the edge" in result.stderr  # it read the config: nobody runs there


# 9. A second `clawgate up` on a taken port


def test_17_9_up_on_a_taken_port_says_so_and_never_ready(tmp_path: Path) -> None:
    config = echo_config(tmp_path)
    config["gateway"]["workers"] = [config["worker"]["listen"]]
    path = write_config(tmp_path, config)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", config["gateway"]["port"]))
        taken.listen()
        result = subprocess.run(
            clawgate(path, "up"), capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
        )
    assert result.returncode != 0
    assert "ready" not in result.stdout
    assert "gateway.port" in result.stderr and "in use" in result.stderr


# 10. A disabled endpoint says so


def test_17_10_a_disabled_endpoint_is_named_at_start(tmp_path: Path, echo_stack: Stack) -> None:
    def disabled(config: dict[str, Any]) -> None:
        config["gateway"]["http"]["endpoints"]["chatCompletions"]["enabled"] = False

    with extra_edge(tmp_path, echo_stack.config, disabled, ready_path="/healthz") as base_url:
        assert httpx.post(f"{base_url}{CHAT}", headers=AUTH, json=HELLO).status_code == 404
    port = base_url.rpartition(":")[2]
    log = (tmp_path / f"edge-{port}.log").read_text()
    assert "gateway.http.endpoints.chatCompletions.enabled" in log


# 12. A trailing assistant message is not dropped


def test_17_12_a_trailing_assistant_message_is_refused_by_name(echo_stack: Stack) -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Write a haiku"},
            {"role": "assistant", "content": "Autumn moon"},
        ]
    }
    response = httpx.post(f"{echo_stack.base_url}{CHAT}", headers=AUTH, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"


# 15. Fields that cannot be honoured are named


def test_17_15_stream_options_without_stream_is_a_400(echo_stack: Stack) -> None:
    body = {**HELLO, "stream_options": {"include_usage": True}}
    response = httpx.post(f"{echo_stack.base_url}{CHAT}", headers=AUTH, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stream_options"
    assert json.loads(response.text)["error"]["type"] == "invalid_request_error"


# 5. The edge needs only its own settings


def test_17_5_the_edge_learns_its_agents_from_the_workers(tmp_path: Path) -> None:
    worker_config = echo_config(tmp_path)
    worker_config["agents"]["list"] = [{"id": "alpha", "default": True}, {"id": "beta"}]
    worker_config["sessions"]["store"] = f"sqlite:///{tmp_path / 'worker-only.db'}"
    address = worker_config["worker"]["listen"]
    edge_config = {  # gateway settings only: no agents, no models, no store
        "gateway": {**worker_config["gateway"], "workers": [address]},
    }
    worker_path = write_config(tmp_path, worker_config, "worker.json5")
    edge_path = write_config(tmp_path, edge_config, "edge.json5")
    worker = Process(clawgate(worker_path, "worker"), tmp_path / "worker.log").start()
    edge: Process | None = None
    try:
        wait_until(lambda: worker_serving(address), 60, "worker", worker)
        base_url = f"http://127.0.0.1:{edge_config['gateway']['port']}"
        edge = Process(clawgate(edge_path, "edge"), tmp_path / "edge.log").start()
        wait_until(lambda: _ready(base_url), 30, "edge", edge)
        models = httpx.get(f"{base_url}/v1/models", headers=AUTH).json()
        ids = [card["id"] for card in models["data"]]
        default = httpx.post(f"{base_url}{CHAT}", headers=AUTH, json=HELLO)
        beta = httpx.post(f"{base_url}{CHAT}", headers=AUTH, json={**HELLO, "model": "agent:beta"})
        main = httpx.post(f"{base_url}{CHAT}", headers=AUTH, json={**HELLO, "model": "agent:main"})
    finally:
        if edge is not None:
            edge.stop()
        worker.stop()
    assert ids == ["openclaw", "openclaw/default", "openclaw/alpha", "openclaw/beta"]
    assert default.status_code == 200 and beta.status_code == 200
    assert default.headers["x-openclaw-session-key"].startswith("agent:alpha:")
    assert main.status_code == 400 and main.json()["error"]["param"] == "model"


def _ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# 14. The reflected file name is the proto's own


def test_17_14_reflection_names_the_proto_file_as_in_protos(echo_stack: Stack) -> None:
    import grpc
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="clawgate.agent.v1.AgentService"
    )
    with grpc.insecure_channel(echo_stack.worker_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    (serialized,) = reply.file_descriptor_response.file_descriptor_proto
    names = descriptor_pb2.FileDescriptorProto.FromString(serialized).name
    assert names == "clawgate/agent/v1/agent_service.proto"
    assert (REPO_ROOT / "protos" / names).is_file()


# 15. logprobs are forwarded where the provider gives them, refused by name where not


def test_17_15_logprobs_come_back_from_a_provider_that_gives_them(echo_stack: Stack) -> None:
    import openai

    client: Any = openai.OpenAI(base_url=f"{echo_stack.base_url}/v1", api_key=TOKEN, max_retries=0)
    messages = [{"role": "user", "content": "hi"}]
    reply = client.chat.completions.create(
        model="openclaw:vision", messages=messages, logprobs=True, top_logprobs=2
    )
    content = reply.choices[0].logprobs.content
    assert [entry.token for entry in content] == ["one ", "two ", "three"]
    assert all(entry.logprob == -0.5 and len(entry.top_logprobs) == 2 for entry in content)
    assert content[0].bytes == list(b"one ")
    stream = client.chat.completions.create(
        model="openclaw:vision", messages=messages, logprobs=True, stream=True
    )
    tokens = [
        entry.token
        for chunk in stream
        if chunk.choices and chunk.choices[0].logprobs
        for entry in chunk.choices[0].logprobs.content or []
    ]
    assert tokens == ["one ", "two ", "three"]
    plain = client.chat.completions.create(model="openclaw:vision", messages=messages)
    assert plain.choices[0].logprobs is None
    raw = httpx.post(
        f"{echo_stack.base_url}{CHAT}",
        headers=AUTH,
        json={
            "model": "openclaw:vision",
            "messages": messages,
            "logprobs": True,
            "top_logprobs": 1,
        },
    )
    assert_valid("CreateChatCompletionResponse", raw.json())

    refused = httpx.post(
        f"{echo_stack.base_url}{CHAT}", headers=AUTH, json={**HELLO, "logprobs": True}
    )  # the echo agent's model has none
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "logprobs"
    lonely = httpx.post(
        f"{echo_stack.base_url}{CHAT}", headers=AUTH, json={**HELLO, "top_logprobs": 2}
    )
    assert lonely.status_code == 400 and lonely.json()["error"]["param"] == "top_logprobs"
