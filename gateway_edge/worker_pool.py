"""The edge's view of its workers: one long-lived gRPC channel each, a session sticks to one.

Turns for a session key go to the first reachable worker in rendezvous-hash order, so every
edge picks the same worker for the same key without sharing state.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway_edge.errors import ApiError, api_error_from_call, api_error_from_turn_error
from services.grpc_gen.clawgate.agent.v1 import agent_service_pb2 as pb
from services.grpc_gen.clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc

log = logging.getLogger("clawgate.edge.workers")
HEALTH_CHECK_SECONDS = 1.0
_RETRY_ELSEWHERE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
_CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
)


def rendezvous_weight(address: str, session_key: str) -> bytes:
    """A session goes to the reachable worker with the highest weight for its key."""
    return hashlib.blake2b(f"{address}|{session_key}".encode(), digest_size=8).digest()


@dataclass(slots=True)
class Worker:
    address: str
    channel: grpc.aio.Channel
    agents: pb_grpc.AgentServiceStub
    health: health_pb2_grpc.HealthStub

    def weight_for(self, session_key: str) -> bytes:
        return rendezvous_weight(self.address, session_key)


class TurnCall:
    """A turn a worker has accepted (its `started` event is in hand); iterate for the rest."""

    def __init__(
        self, call: grpc.aio.UnaryStreamCall, started: pb.TurnStarted, worker: str
    ) -> None:
        self._call = call
        self.started = started
        self.worker = worker

    def cancel(self) -> None:
        self._call.cancel()

    async def events(self) -> AsyncIterator[pb.TextDelta | pb.TurnFinished]:
        """Text deltas, then the finished event; failures raise ApiError."""
        try:
            while (event := await self._call.read()) is not grpc.aio.EOF:
                kind = event.WhichOneof("event")
                if kind == "delta":
                    yield event.delta
                elif kind == "finished":
                    yield event.finished
                    return
                elif kind == "error":
                    raise api_error_from_turn_error(event.error.code, event.error.message)
        except grpc.aio.AioRpcError as error:
            raise api_error_from_call(error.code(), error.details()) from None
        raise ApiError(
            502, "The worker ended the turn without finishing it.", "api_error", code="worker_error"
        )


class WorkerPool:
    def __init__(self, addresses: list[str], *, shared_secret: str | None = None) -> None:
        self._addresses = addresses
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {shared_secret}"),) if shared_secret else ()
        )
        self.workers: list[Worker] = []

    async def open(self) -> None:
        for address in self._addresses:
            channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
            self.workers.append(
                Worker(
                    address,
                    channel,
                    pb_grpc.AgentServiceStub(channel),
                    health_pb2_grpc.HealthStub(channel),
                )
            )

    async def close(self) -> None:
        await asyncio.gather(*(worker.channel.close() for worker in self.workers))
        self.workers.clear()

    def workers_for(self, session_key: str) -> list[Worker]:
        return sorted(self.workers, key=lambda worker: worker.weight_for(session_key), reverse=True)

    async def start_turn(self, request: pb.RunTurnRequest) -> TurnCall:
        """Sends the turn to the session's worker (or the next one that can take it)."""
        last_error: grpc.aio.AioRpcError | None = None
        for worker in self.workers_for(request.session_key):
            metadata = (*self._metadata, ("x-request-id", request.request_id))
            call = worker.agents.RunTurn(request, metadata=metadata)
            try:
                first = await call.read()
            except grpc.aio.AioRpcError as error:
                if error.code() in _RETRY_ELSEWHERE:
                    log.info(
                        "worker %s: %s, trying the next one", worker.address, error.code().name
                    )
                    last_error = error
                    continue
                raise api_error_from_call(error.code(), error.details()) from None
            except BaseException:
                call.cancel()
                raise
            if first is grpc.aio.EOF or first.WhichOneof("event") != "started":
                call.cancel()
                raise ApiError(
                    502, "The worker did not start the turn.", "api_error", code="worker_error"
                )
            return TurnCall(call, first.started, worker.address)
        if last_error is None:
            raise api_error_from_call(grpc.StatusCode.UNAVAILABLE, None)
        raise api_error_from_call(last_error.code(), last_error.details())

    async def is_serving(self, worker: Worker) -> bool:
        try:
            response = await worker.health.Check(
                health_pb2.HealthCheckRequest(), timeout=HEALTH_CHECK_SECONDS
            )
        except grpc.aio.AioRpcError:
            return False
        return response.status == health_pb2.HealthCheckResponse.SERVING

    async def any_serving(self) -> bool:
        results = await asyncio.gather(*(self.is_serving(worker) for worker in self.workers))
        return any(results)
