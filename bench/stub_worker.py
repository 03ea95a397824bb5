"""A stub AgentService for benchmarks: answers every turn (RunTurn or Exchange) at once with
pre-built events (started, 16 deltas, finished, in one message as a worker batches them), so
the edge can be measured without a real worker.

    python -m bench.stub_worker --listen 127.0.0.1:50151
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc

EVENTS = [
    pb.RunTurnEvent(started=pb.TurnStarted(run_id="stub", model="stub/stub")),
    *(pb.RunTurnEvent(delta=pb.TextDelta(text=f"w{index} ")) for index in range(16)),
    pb.RunTurnEvent(
        finished=pb.TurnFinished(
            finish_reason=pb.FINISH_REASON_STOP,
            usage=pb.Usage(prompt_tokens=8, completion_tokens=16, total_tokens=24),
        )
    ),
]


RESPONSE = pb.RunTurnResponse(events=EVENTS)


class StubAgentService(pb_grpc.AgentServiceServicer):
    async def RunTurn(  # noqa: N802
        self, request: pb.RunTurnRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RunTurnResponse]:
        yield RESPONSE

    async def Exchange(  # noqa: N802
        self, requests: AsyncIterator[pb.ExchangeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExchangeResponse]:
        async for request in requests:
            if request.opens:
                yield pb.ExchangeResponse(
                    turns=[pb.TurnEvents(turn_id=o.turn_id, events=EVENTS) for o in request.opens]
                )

    async def ListAgents(  # noqa: N802 - the edge learns its agents here
        self, request: pb.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAgentsResponse:
        return pb.ListAgentsResponse(agents=[pb.Agent(id="main", is_default=True)])


async def serve(listen: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_AgentServiceServicer_to_server(StubAgentService(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(listen)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:50151")
    asyncio.run(serve(parser.parse_args().listen))
