"""One worker as the edge sees it: its channel, its Exchange stream, its health and its load."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from gateway_edge.worker_link import WorkerLink
from services.tracing import AGENT_SERVICE

log = logging.getLogger("clawgate.edge.workers")
# Codes that mean the worker did not answer (rather than answered no).
NO_ANSWER = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
_NEW_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


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
    # What a trace says of a turn's call to it; built once, as a turn starts one per call.
    span_attributes: dict[str, str | int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        host, _, port = self.address.rpartition(":")
        self.span_attributes = {
            "rpc.system": "grpc",
            "rpc.service": AGENT_SERVICE,
            "rpc.method": "RunTurn",
            "server.address": host.strip("[]") or self.address,
        }
        if port.isdigit():
            self.span_attributes["server.port"] = int(port)

    @property
    def usable(self) -> bool:
        return self.serving is not False and self.answering

    async def answers(self, timeout_seconds: float) -> bool:
        """Whether it is alive: it answers a health check within the bound (any status is an
        answer) or, when it is too busy for that, its gRPC core still takes a new connection.
        The core answers connections and pings on threads of its own, so a busy event loop
        still connects; a frozen or vanished process does not."""
        try:
            await self.health.Check(health_pb2.HealthCheckRequest(), timeout=timeout_seconds)
        except grpc.aio.AioRpcError as error:
            answering = error.code() not in NO_ANSWER or await self.connects(timeout_seconds)
        else:
            answering = True
        self.set_answering(answering)
        return answering

    async def connects(self, timeout_seconds: float) -> bool:
        """Whether a new connection to it is set up (HTTP/2 settings exchanged) in time."""
        # A subchannel pool of its own: a new connection, never one shared with another channel.
        probe = grpc.aio.insecure_channel(self.address, options=_NEW_CONNECTION)
        try:
            await asyncio.wait_for(probe.channel_ready(), timeout_seconds)
        except TimeoutError:
            return False
        finally:
            await probe.close()
        return True

    def set_answering(self, answering: bool) -> None:
        """Out of the candidates until its next health check answers (within a few seconds)."""
        if self.answering != answering:
            log.warning(
                "worker %s %s",
                self.address,
                "answers again" if answering else "does not answer; it leaves the candidates",
            )
        self.answering = answering

    def set_serving(self, serving: bool) -> None:
        if self.serving != serving:
            log.info("worker %s is %s", self.address, "serving" if serving else "not serving")
        self.serving = serving
