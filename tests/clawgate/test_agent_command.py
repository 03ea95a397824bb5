"""`run_agent_turn` against a real grpc.aio server that records what it was asked."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from clawgate.agent_command import run_agent_turn


class RecordingWorker(pb_grpc.AgentServiceServicer):
    def __init__(self) -> None:
        self.requests: list[pb.RunTurnRequest] = []

    async def RunTurn(  # noqa: N802
        self, request: pb.RunTurnRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RunTurnResponse]:
        self.requests.append(request)
        yield pb.RunTurnResponse(
            events=[
                pb.RunTurnEvent(started=pb.TurnStarted(run_id="r")),
                pb.RunTurnEvent(delta=pb.TextDelta(text="hi there")),
                pb.RunTurnEvent(finished=pb.TurnFinished(finish_reason=pb.FINISH_REASON_STOP)),
            ]
        )


async def test_a_cli_turn_asks_for_its_text_as_it_comes(capsys: pytest.CaptureFixture[str]) -> None:
    worker = RecordingWorker()
    server = grpc.aio.server()
    pb_grpc.add_AgentServiceServicer_to_server(worker, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        code = await run_agent_turn(f"127.0.0.1:{port}", "main", "hello", "cli:k", None)
    finally:
        await server.stop(None)
    assert code == 0
    assert capsys.readouterr().out == "hi there\n"
    (request,) = worker.requests
    assert (request.agent_id, request.session_key, request.input.text) == ("main", "cli:k", "hello")
