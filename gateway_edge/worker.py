"""One worker as the edge sees it: its channel, its Exchange stream, its health and its load."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2_grpc

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from gateway_edge.worker_link import WorkerLink


@dataclass(eq=False)
class Worker:
    address: str
    channel: grpc.aio.Channel
    agents: pb_grpc.AgentServiceStub
    health: health_pb2_grpc.HealthStub
    link: WorkerLink
    serving: bool | None = None  # None until its health is known
    answering: bool = True  # it answered its last health check in time
    listing: pb.ListAgentsResponse | None = None  # its agents, read when it turned SERVING
    in_flight: int = 0  # turns holding a slot on it (see Turn)
    watchers: tuple[asyncio.Task[None], ...] = field(default=(), repr=False)

    @property
    def usable(self) -> bool:
        return self.serving is not False and self.answering
