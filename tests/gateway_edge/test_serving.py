"""The turn driver's reading of a turn, over a real edge process in front of a scripted gRPC
worker in this test: event orders a real worker sends only when timing makes it so, and an event
of a kind the edge does not know (a newer worker's), which must fail the turn, naming it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from devkit.processes import TOKEN, echo_config, start_edge, write_config
from tests.support.newer_events import event_of_unknown_kind
from tests.support.scripted_worker import serve_scripted

BROKE_OFF = pb.RunTurnEvent(
    error=pb.TurnError(status=pb.ERROR_CODE_UNAVAILABLE, message="the provider broke off")
)
BROKE_OFF_MESSAGE = "the provider broke off"


# A newer worker's event kind: field 99 of RunTurnEvent, a message this edge cannot read.
NEWER_KIND = event_of_unknown_kind(99)
NEWER_KIND_MESSAGE = (
    "The worker broke the turn protocol: an event of a kind this build does not know (field 99)."
)


class TextThenFailureTogether(pb_grpc.AgentServiceServicer):
    """Sends each turn's first text and its ending (a failure, or an event the edge cannot
    read) in one message: after its `started`, or with it (a turn that fails at once)."""

    def __init__(self, started_alone: bool, ending: pb.RunTurnEvent) -> None:
        self.started_alone = started_alone
        self.ending = ending

    async def Exchange(  # noqa: N802
        self, requests: AsyncIterator[pb.ExchangeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExchangeResponse]:
        async for request in requests:
            for opened in request.opens:
                started = pb.RunTurnEvent(started=pb.TurnStarted(run_id="r", model="m"))
                events = [
                    pb.RunTurnEvent(delta=pb.TextDelta(text="one ")),
                    self.ending,
                ]
                batches = [[started], events] if self.started_alone else [[started, *events]]
                for batch in batches:
                    yield pb.ExchangeResponse(
                        turns=[pb.TurnEvents(turn_id=opened.turn_id, events=batch)]
                    )

    async def ListAgents(  # noqa: N802 - the edge learns its agents here
        self, request: pb.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAgentsResponse:
        return pb.ListAgentsResponse(agents=[pb.Agent(id="main", is_default=True)])


@pytest.fixture(
    params=[
        (True, BROKE_OFF, BROKE_OFF_MESSAGE),
        (False, BROKE_OFF, BROKE_OFF_MESSAGE),
        (True, NEWER_KIND, NEWER_KIND_MESSAGE),
    ],
    ids=["started-alone", "started-with-them", "unknown-kind"],
)
async def edge(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    started_alone, ending, message = request.param
    server, port = await serve_scripted(TextThenFailureTogether(started_alone, ending))
    config = echo_config(tmp_path)
    config["gateway"]["workers"] = [f"127.0.0.1:{port}"]
    config["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True}
    base_url = f"http://127.0.0.1:{config['gateway']['port']}"
    # The edge checks this loop's server while it starts: wait for it off the loop.
    process = await asyncio.to_thread(
        start_edge, write_config(tmp_path, config), base_url, tmp_path / "edge.log"
    )
    try:
        yield base_url, message
    finally:
        process.stop()
        await server.stop(None)


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_a_failure_that_came_with_text_ends_the_stream_after_that_text(
    edge: tuple[str, str],
) -> None:
    base_url, message = edge
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        async with client.stream(
            "POST",
            "/v1/chat/completions",
            headers=AUTH,
            json={"stream": True, "messages": [{"role": "user", "content": "x"}]},
        ) as response:
            assert response.status_code == 200
            lines = [line async for line in response.aiter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert [chunk["choices"][0]["delta"] for chunk in chunks[:-1]] == [
        {"role": "assistant", "content": ""},
        {"content": "one "},
    ]
    assert chunks[-1]["error"]["message"] == message


async def test_a_failure_that_came_with_text_fails_a_responses_stream_after_that_text(
    edge: tuple[str, str],
) -> None:
    base_url, message = edge
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        async with client.stream(
            "POST", "/v1/responses", headers=AUTH, json={"stream": True, "input": "x"}
        ) as response:
            assert response.status_code == 200
            data = [
                json.loads(line.removeprefix("data: "))
                for line in [line async for line in response.aiter_lines()]
                if line.startswith("data: {")
            ]
    deltas = [event["delta"] for event in data if event["type"] == "response.output_text.delta"]
    assert deltas == ["one "]
    assert data[-1]["type"] == "response.failed"
    assert data[-1]["response"]["error"]["message"] == message


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
        ("/v1/responses", {"input": "x"}),
    ],
)
async def test_a_failure_that_came_with_text_fails_a_whole_answer(
    edge: tuple[str, str], path: str, body: dict[str, object]
) -> None:
    base_url, message = edge
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.post(path, headers=AUTH, json=body)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["message"] == message
