"""The edge's view of its workers: one long-lived gRPC channel each (turns share its `Exchange`
stream, see worker_link.py), found through worker_targets.py, health from `grpc.health.v1`
Watch streams plus bounded Checks, and starting turns on them (placement.py picks the order).

A worker that is not serving, or that does not answer a health check in time (frozen,
overloaded, cut off), leaves the candidates until it answers again.

A turn moves to the next worker only while it has not started there, and only when that cannot
run it twice: its worker is unreachable, frozen or draining, or it is busy and the session is
fresh or the store locks sessions across processes (PostgreSQL). Once a turn has started, a
broken stream ends it with an error that names the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from gateway_edge.agent_directory import AgentDirectory
from gateway_edge.errors import ApiError, api_error_from_call, refused, too_large
from gateway_edge.placement import candidates
from gateway_edge.remote_turn import REFUSED_STREAM, NotStarted, RemoteTurn
from gateway_edge.worker import Worker
from gateway_edge.worker_link import (
    DEFAULT_MAX_MESSAGE_BYTES,
    OPEN_OVERHEAD_BYTES,
    WorkerLink,
)
from gateway_edge.worker_targets import addresses_of, needs_resolving, split_target
from services import tracing
from services.grpc_options import Options

log = logging.getLogger("clawgate.edge.workers")
HEALTH_RETRY_SECONDS = 1.0
_SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass(frozen=True, slots=True)
class PoolSettings:
    shared_secret: str | None = None
    resolve_seconds: float = 5.0
    channel_options: Options = ()
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # A turn not started by then makes the edge check that its worker still answers.
    start_check_seconds: float = 3.0
    health_timeout_seconds: float = 2.0


class WorkerPool:
    def __init__(
        self,
        targets: list[str],
        settings: PoolSettings | None = None,
        *,
        on_outcome: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self._settings = settings = settings or PoolSettings()
        self._on_outcome = on_outcome
        self._targets = [split_target(target) for target in targets]
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {settings.shared_secret}"),)
            if settings.shared_secret
            else ()
        )
        self._workers: dict[str, Worker] = {}
        self._resolver: asyncio.Task[None] | None = None
        self.agents = AgentDirectory()
        self._listing_refused: ApiError | None = None  # a worker refused ListAgents (secret)

    @property
    def workers(self) -> list[Worker]:
        return list(self._workers.values())

    @property
    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        """What every call to a worker carries (its shared secret)."""
        return self._metadata

    @property
    def call_timeout(self) -> float:
        """The bound for one short call (health, listings) to a worker."""
        return self._settings.health_timeout_seconds

    def known_agents(self) -> AgentDirectory:
        """The agents the workers serve; raises ApiError while no worker has listed any."""
        if self.agents.ids:
            return self.agents
        raise self._listing_refused or api_error_from_call(grpc.StatusCode.UNAVAILABLE, None)

    async def open(self) -> None:
        await self._refresh()
        if needs_resolving(self._targets):
            self._resolver = asyncio.create_task(self._keep_resolving())

    async def close(self) -> None:
        if self._resolver is not None:
            self._resolver.cancel()
        for address in list(self._workers):
            await self._remove(address)

    async def _refresh(self) -> None:
        addresses = await addresses_of(self._targets)
        for address in addresses - self._workers.keys():
            self._add(address)
        for address in self._workers.keys() - addresses:
            if self._workers[address].in_flight == 0:
                await self._remove(address)

    async def _keep_resolving(self) -> None:
        while True:
            await asyncio.sleep(self._settings.resolve_seconds)
            await self._refresh()

    def _add(self, address: str) -> None:
        settings = self._settings
        channel = grpc.aio.insecure_channel(address, options=settings.channel_options)
        agents = pb_grpc.AgentServiceStub(channel)
        worker = Worker(
            address,
            channel,
            agents,
            health_pb2_grpc.HealthStub(channel),
            WorkerLink(agents, self._metadata, settings.max_message_bytes),
        )
        worker.watchers = (
            asyncio.create_task(self._watch(worker)),
            asyncio.create_task(self._keep_checking(worker)),
        )
        self._workers[address] = worker
        log.info("worker %s joined the pool", address)

    async def _remove(self, address: str) -> None:
        worker = self._workers.pop(address)
        for watcher in worker.watchers:
            watcher.cancel()
        await worker.link.close()
        await worker.channel.close()
        self._list_agents()
        log.info("worker %s left the pool", address)

    async def _watch(self, worker: Worker) -> None:
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                async for reply in worker.health.Watch(health_pb2.HealthCheckRequest()):
                    serving = reply.status == _SERVING
                    if serving and not worker.serving:  # (again): its agents may have changed
                        await self._read_agents(worker)
                    worker.set_serving(serving)
            worker.set_serving(False)
            await asyncio.sleep(HEALTH_RETRY_SECONDS)

    async def _read_agents(self, worker: Worker) -> None:
        if (listing := await self.listing_of(worker)) is not None:
            worker.listing = listing
            self._list_agents()

    async def listing_of(self, worker: Worker) -> pb.ListAgentsResponse | None:
        """The worker's agents and tool servers as it reports them now (None: no answer)."""
        try:
            return await worker.agents.ListAgents(  # type: ignore[no-any-return]
                pb.ListAgentsRequest(),
                metadata=self._metadata,
                timeout=self._settings.health_timeout_seconds,
            )
        except grpc.aio.AioRpcError as error:
            log.warning("worker %s did not list its agents: %s", worker.address, error.code().name)
            if error.code() in REFUSED_STREAM:
                self._listing_refused = api_error_from_call(error.code(), error.details())
            return None

    def _list_agents(self) -> None:
        listings = [w.listing for w in self._workers.values() if w.listing is not None]
        agents = AgentDirectory.of(listings)
        if agents != self.agents:
            log.info(
                "agents: %s (default %s)",
                ", ".join(sorted(agents.ids)) or "none",
                agents.default_id,
            )
        self.agents = agents

    async def _keep_checking(self, worker: Worker) -> None:
        """A frozen worker keeps its Watch stream open and says nothing: ask it, with a bound."""
        while True:
            await asyncio.sleep(self._settings.health_timeout_seconds)
            await worker.answers(self._settings.health_timeout_seconds)

    async def start_turn(
        self, request: pb.RunTurnRequest, sticky: bool, whole_answer: bool = False
    ) -> RemoteTurn:
        """Sends the turn to the session's worker (or the next one that can take it).
        `whole_answer`: the caller reads the answer only once it is complete."""
        size = request.ByteSize()
        limit = self._settings.max_message_bytes - OPEN_OVERHEAD_BYTES
        if size > limit:
            raise too_large(
                f"The turn is {size} bytes, more than a worker accepts ({limit} bytes,"
                " worker.maxMessageBytes)."
            )
        refusal: NotStarted | None = None
        # Each worker tried is a call span of its own (a refused one says why): the placement.
        for worker in candidates(self._workers.values(), request.session_key, sticky):
            call = tracing.span(tracing.RUN_TURN_SPAN, "client", worker.span_attributes)
            call.set("clawgate.session.sticky", sticky)
            if tracing.active():  # a trace not sampled has no call span: its context goes
                request.traceparent = call.traceparent() or tracing.traceparent()
            inbox = worker.link.open_turn(request, size, whole_answer)
            turn = RemoteTurn(worker, inbox, self._on_outcome, call)
            try:
                await turn.wait_started(
                    self._settings.start_check_seconds, self._settings.health_timeout_seconds
                )
                return turn
            except NotStarted as not_started:
                refusal = not_started
                turn.close(refusal.outcome, refusal.error.message)
            except ApiError as error:  # the worker answered something other than started/error
                turn.close("worker_error", error.message)
                raise
            except BaseException:
                turn.close()
                raise
            may_move = refusal.movable and (
                refusal.status != pb.ERROR_CODE_RESOURCE_EXHAUSTED
                or not sticky
                or self.agents.sessions_shared
            )
            if not may_move:
                raise refusal.error
            log.info("worker %s: %s, trying the next one", worker.address, refusal.error.message)
        if refusal is None:
            raise refused(pb.ERROR_CODE_UNAVAILABLE, None)
        raise refusal.error

    def any_serving(self) -> bool:
        """Ready: a worker serves, answers, and has listed its agents."""
        return any(
            worker.serving and worker.answering and worker.listing is not None
            for worker in self._workers.values()
        )
