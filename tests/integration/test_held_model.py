"""No request holds the embedded model (issue 31): a client that leaves a long generation frees
it at once, on either API, and a request of the largest size admitted costs seconds, not
minutes. Before, one `/v1/responses` request with 400,000 items kept the worker's CPU busy for
over five minutes, and "hi" on the same agent got no answer within 120 s."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from devkit.processes import TOKEN, Stack, echo_config, start_stack, wait_until

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_TURN_MESSAGES = 10_000
# Greedy, this prompt runs to the 1,500-token limit (about 24 s here): were the left turn to run
# on, the next one would wait far past the bound.
LONG_STORY = "Write a very long story about a dragon and a knight, in twenty chapters."
LONG_ANSWER_TOKENS = 1500
NEXT_FIRST_TOKEN_SECONDS = 15


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path: Path = tmp_path_factory.mktemp("held-model")
    config = echo_config(tmp_path)
    config["models"]["providers"]["local"] = {"api": "llama-cpp"}
    config["agents"]["list"] = [{"id": "main", "default": True, "model": "local/smollm2-135m"}]
    config["agents"]["defaults"]["systemPrompt"] = "You are a helpful assistant."
    config["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True}
    running = start_stack(tmp_path, config)
    yield running
    running.stop()


def chat_body(text: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": "openclaw",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "stream": True,
        **extra,
    }


def responses_body(text: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": "openclaw",
        "input": text,
        "max_output_tokens": max_tokens,
        "stream": True,
        **extra,
    }


BODIES = {"/v1/chat/completions": chat_body, "/v1/responses": responses_body}


def first_text_seconds(client: httpx.Client, path: str, body: dict[str, Any]) -> float:
    """Seconds from sending a streamed request to its first text; the stream is then left."""
    started = time.monotonic()
    with client.stream("POST", path, json=body, headers=AUTH) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = orjson.loads(line.removeprefix("data: "))
            choices = event.get("choices") or [{}]
            if choices[0].get("delta", {}).get("content") or event.get("type") == (
                "response.output_text.delta"
            ):
                return time.monotonic() - started
    raise AssertionError("the stream ended without text")


@pytest.mark.parametrize("path", list(BODIES))
def test_a_client_leaving_a_long_generation_frees_the_model(stack: Stack, path: str) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=120) as client:
        long_one = BODIES[path](LONG_STORY, LONG_ANSWER_TOKENS, temperature=0)
        first_text_seconds(client, path, long_one)
        # Left after its first text: its turn is cancelled and the model is free for this one.
        waited = first_text_seconds(client, path, BODIES[path]("hi", 8))
    assert waited < NEXT_FIRST_TOKEN_SECONDS, f"the next turn waited {waited:.1f} s"
    wait_until(lambda: "turn cancelled" in stack.worker.log(), 5, "the worker logs the cancel")


def test_a_request_at_the_message_limit_answers_within_a_minute(stack: Stack) -> None:
    messages = [
        {"role": "user" if n % 2 == 0 else "assistant", "content": f"Note {n}: the sky is blue."}
        for n in range(MAX_TURN_MESSAGES - 1)
    ]
    messages.append({"role": "user", "content": "What colour is the sky?"})
    body = {"model": "openclaw", "messages": messages, "max_tokens": 16}
    started = time.monotonic()
    response = httpx.post(
        f"{stack.base_url}/v1/chat/completions", json=body, headers=AUTH, timeout=120
    )
    took = time.monotonic() - started
    assert response.status_code in (200, 400), response.text
    assert took < 60, f"{len(messages)} messages took {took:.1f} s"
    with httpx.Client(base_url=stack.base_url, timeout=120) as client:
        waited = first_text_seconds(client, "/v1/chat/completions", chat_body("hi", 8))
    assert waited < NEXT_FIRST_TOKEN_SECONDS, f"the next turn waited {waited:.1f} s"


def test_the_worker_refuses_a_turn_over_max_turn_messages_for_grpc_callers(stack: Stack) -> None:
    """The edge's `maxMessages` does not guard the worker's public gRPC contract."""
    note = pb.Message(role=pb.ROLE_USER, text="note")
    request = pb.RunTurnRequest(
        agent_id="main",
        session_key="too-many-messages",
        input=pb.Message(role=pb.ROLE_USER, text="hi"),
        context=[note] * MAX_TURN_MESSAGES,
    )
    with grpc.insecure_channel(stack.worker_address) as channel:
        stub = pb_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            for _ in stub.RunTurn(request, timeout=30):
                pass
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "worker.maxTurnMessages" in (refused.value.details() or "")
    with grpc.insecure_channel(stack.worker_address) as channel:
        stub = pb_grpc.AgentServiceStub(channel)
        request.ClearField("context")
        request.session_key = "just-enough"
        events = [event for reply in stub.RunTurn(request, timeout=60) for event in reply.events]
    assert events[-1].WhichOneof("event") == "finished"
