"""The edge's view of its workers: one long-lived gRPC channel each (turns share its `Exchange`
stream, see worker_link.py), health from `grpc.health.v1` Watch streams, session affinity by
rendezvous hashing.

Targets are `host:port` or `dns:///host:port`; a host name is resolved to all of its addresses
and re-resolved periodically (compose replicas, a Kubernetes headless service). Turns of a named
session go to the first usable worker in rendezvous order for its key, so every edge picks the
same worker without sharing state; fresh sessions go to the worker with the fewest turns in
flight. A worker that is not serving, or that does not answer a health check in time (frozen,
overloaded, cut off), leaves the candidates until it answers again.

A turn moves to the next worker only while it has not started there, and only when that cannot
run it twice: its worker is unreachable, frozen or draining, or it is busy and the session is
fresh or the store locks sessions across processes (PostgreSQL). Once a turn has started, a
broken stream ends it with an error that names the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from gateway_edge.agent_directory import AgentDirectory
from gateway_edge.errors import (
    ApiError,
    api_error_from_call,
    api_error_from_turn_error,
    too_large,
    worker_lost,
)
from gateway_edge.worker_link import (
    DEFAULT_MAX_MESSAGE_BYTES,
    OPEN_OVERHEAD_BYTES,
    LinkFailure,
    TurnInbox,
    WorkerLink,
)
from services.grpc_options import Options
from services.grpc_status import STATUS_BY_NUMBER

log = logging.getLogger("clawgate.edge.workers")
HEALTH_RETRY_SECONDS = 1.0
_SERVING = health_pb2.HealthCheckResponse.SERVING
# Codes a broken stream ends with when the worker itself refused it (a wrong shared secret, an
# older worker): trying the same on another worker helps nobody. Any other code is a transport
# failure (UNAVAILABLE, or INTERNAL from gRPC core after a kill or a GOAWAY).
_NO_ANSWER = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
_REFUSED_STREAM = (
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
)


@dataclass(frozen=True, slots=True)
class PoolSettings:
    shared_secret: str | None = None
    resolve_seconds: float = 5.0
    channel_options: Options = ()
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # A turn not started by then makes the edge check that its worker still answers.
    start_check_seconds: float = 3.0
    health_timeout_seconds: float = 2.0


class _NotStarted(Exception):
    """The worker did not start the turn; `movable` says whether another worker may."""

    def __init__(self, error: ApiError, code: grpc.StatusCode, movable: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.code = code
        self.movable = movable


def rendezvous_weight(address: str, session_key: str) -> bytes:
    """A session goes to the usable worker with the highest weight for its key."""
    return hashlib.blake2b(f"{address}|{session_key}".encode(), digest_size=8).digest()


def split_target(target: str) -> tuple[str, int]:
    """'dns:///agent-worker:50051' or 'agent-worker:50051' → ('agent-worker', 50051)."""
    host, _, port = target.removeprefix("dns:///").rpartition(":")
    return host.strip("[]"), int(port)


def is_static(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
    in_flight: int = 0
    watchers: tuple[asyncio.Task[None], ...] = field(default=(), repr=False)

    @property
    def usable(self) -> bool:
        return self.serving is not False and self.answering


class TurnCall:
    """A turn a worker has accepted (its `started` event is in hand); read it with next_batch."""

    def __init__(
        self,
        inbox: TurnInbox,
        started: pb.TurnStarted,
        worker: Worker,
        on_outcome: Callable[[str], None],
        early_events: Sequence[pb.RunTurnEvent] = (),
    ) -> None:
        self._inbox = inbox
        self._early_events = early_events
        self.started = started
        self.worker = worker
        self._on_outcome = on_outcome
        self._outcome: str | None = None  # set when it ended: finished, failed or cancelled
        self._failure: ApiError | None = None
        self._released = False

    def _end(self, outcome: str) -> None:
        if self._outcome is None:
            self._outcome = outcome
            self._on_outcome(outcome)

    def cancel(self) -> None:
        """Ends the turn (a no-op once it ended) and gives its slot back."""
        self._inbox.cancel()
        self._end("cancelled")
        if not self._released:
            self._released = True
            self.worker.in_flight -= 1

    async def next_batch(
        self, wait_seconds: float | None = None
    ) -> list[pb.TextDelta | pb.TurnFinished] | None:
        """The text deltas that arrived together; the last batch ends with the finished event.
        None when `wait_seconds` pass without events. A failure raises ApiError, after the
        batch of events that came before it."""
        while self._outcome is None:
            events = self._early_events
            if events:
                self._early_events = ()
            else:
                try:
                    events = await self._inbox.next_events(wait_seconds)
                except LinkFailure as failure:
                    self._end("worker_lost")
                    raise worker_lost(self.worker.address, failure.code, failure.details) from None
                if not events:
                    return None
            batch: list[pb.TextDelta | pb.TurnFinished] = []
            for event in events:
                kind = event.WhichOneof("event")
                if kind == "delta":
                    batch.append(event.delta)
                elif kind == "finished":
                    self._end("ok")
                    batch.append(event.finished)
                    return batch
                elif kind == "error":
                    self._end("turn_error")
                    error = event.error
                    self._failure = api_error_from_turn_error(
                        error.code, error.message, error.source
                    )
                    break
            if batch:
                return batch
        if self._failure is not None:
            raise self._failure
        raise ApiError(
            502, "The worker ended the turn without finishing it.", "api_error", code="worker_error"
        )


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

    def known_agents(self) -> AgentDirectory:
        """The agents the workers serve; raises ApiError while no worker has listed any."""
        if self.agents.ids:
            return self.agents
        raise self._listing_refused or api_error_from_call(grpc.StatusCode.UNAVAILABLE, None)

    async def open(self) -> None:
        await self._refresh()
        if not all(is_static(host) for host, _ in self._targets):
            self._resolver = asyncio.create_task(self._keep_resolving())

    async def close(self) -> None:
        if self._resolver is not None:
            self._resolver.cancel()
        for address in list(self._workers):
            await self._remove(address)

    async def _addresses(self) -> set[str]:
        loop = asyncio.get_running_loop()
        found: set[str] = set()
        for host, port in self._targets:
            if is_static(host):
                found.add(join_address(host, port))
                continue
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as error:
                log.warning("cannot resolve workers at %s: %s", host, error)
                continue
            found.update(join_address(str(info[4][0]), port) for info in infos)
        return found

    async def _refresh(self) -> None:
        addresses = await self._addresses()
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
                    self._set_serving(worker, serving)
            self._set_serving(worker, False)
            await asyncio.sleep(HEALTH_RETRY_SECONDS)

    async def _read_agents(self, worker: Worker) -> None:
        try:
            worker.listing = await worker.agents.ListAgents(
                pb.ListAgentsRequest(),
                metadata=self._metadata,
                timeout=self._settings.health_timeout_seconds,
            )
        except grpc.aio.AioRpcError as error:
            log.warning("worker %s did not list its agents: %s", worker.address, error.code().name)
            if error.code() in _REFUSED_STREAM:
                self._listing_refused = api_error_from_call(error.code(), error.details())
            return
        self._list_agents()

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
            await self._answers(worker)

    async def _answers(self, worker: Worker) -> bool:
        try:
            await worker.health.Check(
                health_pb2.HealthCheckRequest(), timeout=self._settings.health_timeout_seconds
            )
        except grpc.aio.AioRpcError as error:  # any other code is still an answer
            answering = error.code() not in _NO_ANSWER
        else:
            answering = True
        self._set_answering(worker, answering)
        return answering

    @staticmethod
    def _set_answering(worker: Worker, answering: bool) -> None:
        """Out of the candidates until its next health check answers (within a few seconds)."""
        if worker.answering != answering:
            log.warning(
                "worker %s %s",
                worker.address,
                "answers again" if answering else "does not answer; it leaves the candidates",
            )
        worker.answering = answering

    @staticmethod
    def _set_serving(worker: Worker, serving: bool) -> None:
        if worker.serving != serving:
            log.info("worker %s is %s", worker.address, "serving" if serving else "not serving")
        worker.serving = serving

    def candidates(self, session_key: str, sticky: bool) -> list[Worker]:
        """Workers to try in order: usable ones first (all of them when none is)."""
        usable = [worker for worker in self._workers.values() if worker.usable] or self.workers
        usable.sort(key=lambda worker: rendezvous_weight(worker.address, session_key), reverse=True)
        if not sticky:
            usable.sort(key=lambda worker: worker.in_flight)  # stable: ties keep the hash order
        return usable

    async def start_turn(self, request: pb.RunTurnRequest, sticky: bool) -> TurnCall:
        """Sends the turn to the session's worker (or the next one that can take it)."""
        size = request.ByteSize()
        limit = self._settings.max_message_bytes - OPEN_OVERHEAD_BYTES
        if size > limit:
            raise too_large(
                f"The turn is {size} bytes, more than a worker accepts ({limit} bytes,"
                " worker.maxMessageBytes)."
            )
        refusal: _NotStarted | None = None
        for worker in self.candidates(request.session_key, sticky):
            try:
                return await self._start_on(worker, request, size)
            except _NotStarted as not_started:
                refusal = not_started
            self._on_outcome(refusal.code.name.lower())
            may_move = refusal.movable and (
                refusal.code is not grpc.StatusCode.RESOURCE_EXHAUSTED
                or not sticky
                or self.agents.sessions_shared
            )
            if not may_move:
                raise refusal.error
            log.info("worker %s: %s, trying the next one", worker.address, refusal.error.message)
        if refusal is None:
            raise api_error_from_call(grpc.StatusCode.UNAVAILABLE, None)
        raise refusal.error

    async def _start_on(self, worker: Worker, request: pb.RunTurnRequest, size: int) -> TurnCall:
        inbox = worker.link.open_turn(request, size)
        worker.in_flight += 1
        try:
            first = await self._first_events(worker, inbox)
        except BaseException:
            worker.in_flight -= 1
            inbox.cancel()
            raise
        head = first[0]
        if head.HasField("started"):
            return TurnCall(inbox, head.started, worker, self._on_outcome, first[1:])
        worker.in_flight -= 1
        if not head.HasField("error"):
            inbox.cancel()
            raise ApiError(
                502, "The worker did not start the turn.", "api_error", code="worker_error"
            )
        error = head.error
        code = STATUS_BY_NUMBER.get(error.code, grpc.StatusCode.UNKNOWN)
        if error.source == pb.ERROR_SOURCE_SESSION_STORE:
            failure = api_error_from_turn_error(error.code, error.message, error.source)
            raise _NotStarted(failure, code, movable=False)
        # UNAVAILABLE: the worker is draining (its health watch says so too).
        movable = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
        raise _NotStarted(api_error_from_call(code, error.message), code, movable)

    async def _first_events(self, worker: Worker, inbox: TurnInbox) -> Sequence[pb.RunTurnEvent]:
        """The turn's first events. Raises _NotStarted (movable) when the stream broke, or when
        the turn waited past the start bound and its worker did not answer a health check."""
        while True:
            try:
                events = await inbox.next_events(self._settings.start_check_seconds)
            except LinkFailure as failure:
                if failure.code in _REFUSED_STREAM:  # the worker answered, and said no
                    error = api_error_from_call(failure.code, failure.details)
                    raise _NotStarted(error, failure.code, movable=False) from None
                self._set_answering(worker, False)
                error = api_error_from_call(grpc.StatusCode.UNAVAILABLE, None)
                raise _NotStarted(error, failure.code, movable=True) from None
            if events:
                return events
            if not await self._answers(worker):  # else it is alive: the turn waits its turn
                log.warning(
                    "worker %s did not start a turn within %gs nor answer a health check",
                    worker.address,
                    self._settings.start_check_seconds,
                )
                error = api_error_from_call(grpc.StatusCode.UNAVAILABLE, None)
                raise _NotStarted(error, grpc.StatusCode.DEADLINE_EXCEEDED, movable=True)

    def any_serving(self) -> bool:
        """Ready: a worker serves, answers, and has listed its agents."""
        return any(
            worker.serving and worker.answering and worker.listing is not None
            for worker in self._workers.values()
        )
