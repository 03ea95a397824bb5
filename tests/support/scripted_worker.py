"""A gRPC worker scripted by a test: its `AgentServiceServicer` on a real grpc.aio server, with
the health service saying SERVING (what an edge checks before it sends turns)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc


async def serve_scripted(
    servicer: pb_grpc.AgentServiceServicer, options: tuple[tuple[str, int], ...] = ()
) -> tuple[grpc.aio.Server, int]:
    """The started server and its port on 127.0.0.1."""
    server = grpc.aio.server(options=options)
    pb_grpc.add_AgentServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, port
