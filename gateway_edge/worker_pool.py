"""The edge's view of its workers: one long-lived gRPC channel each (turns share its `Exchange`
stream, see worker_link.py), health from `grpc.health.v1` Watch streams, session affinity by
rendezvous hashing.

Targets are `host:port` or `dns:///host:port`; a host name is resolved to all of its addresses
and re-resolved periodically (compose replicas, a Kubernetes headless service). Turns of a named
session go to the first usable worker in rendezvous order for its key, so every edge picks the
same worker without sharing state; fresh sessions go to the worker with the fewest turns in
flight. A worker that is not serving leaves the candidates until its health says it is back.
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

from gateway_edge.errors import ApiError, api_error_from_call, api_error_from_turn_error
from gateway_edge.worker_link import LinkFailure, TurnInbox, WorkerLink
from services.grpc_gen.clawgate.agent.v1 import agent_service_pb2 as pb
from services.grpc_gen.clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from services.grpc_status import STATUS_BY_NUMBER

log = logging.getLogger("clawgate.edge.workers")
HEALTH_RETRY_SECONDS = 1.0
_SERVING = health_pb2.HealthCheckResponse.SERVING
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
    in_flight: int = 0
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def usable(self) -> bool:
        return self.serving is not False


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
                    self._end(failure.code.name.lower())
                    raise api_error_from_call(failure.code, failure.details) from None
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
                    self._failure = api_error_from_turn_error(event.error.code, event.error.message)
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
        *,
        shared_secret: str | None = None,
        resolve_seconds: float = 5.0,
        on_outcome: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self._on_outcome = on_outcome
        self._targets = [split_target(target) for target in targets]
        self._resolve_seconds = resolve_seconds
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {shared_secret}"),) if shared_secret else ()
        )
        self._workers: dict[str, Worker] = {}
        self._resolver: asyncio.Task[None] | None = None

    @property
    def workers(self) -> list[Worker]:
        return list(self._workers.values())

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
            await asyncio.sleep(self._resolve_seconds)
            await self._refresh()

    def _add(self, address: str) -> None:
        channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
        agents = pb_grpc.AgentServiceStub(channel)
        worker = Worker(
            address,
            channel,
            agents,
            health_pb2_grpc.HealthStub(channel),
            WorkerLink(agents, self._metadata),
        )
        worker.watcher = asyncio.create_task(self._watch(worker))
        self._workers[address] = worker
        log.info("worker %s joined the pool", address)

    async def _remove(self, address: str) -> None:
        worker = self._workers.pop(address)
        if worker.watcher is not None:
            worker.watcher.cancel()
        await worker.link.close()
        await worker.channel.close()
        log.info("worker %s left the pool", address)

    async def _watch(self, worker: Worker) -> None:
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                async for reply in worker.health.Watch(health_pb2.HealthCheckRequest()):
                    self._set_serving(worker, reply.status == _SERVING)
            self._set_serving(worker, False)
            await asyncio.sleep(HEALTH_RETRY_SECONDS)

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
        last_failure: tuple[grpc.StatusCode, str | None] | None = None
        for worker in self.candidates(request.session_key, sticky):
            inbox = worker.link.open_turn(request)
            worker.in_flight += 1
            try:
                first = await inbox.next_events()
            except LinkFailure as failure:
                worker.in_flight -= 1
                code, details = failure.code, failure.details
            except BaseException:
                worker.in_flight -= 1
                inbox.cancel()
                raise
            else:
                head = first[0] if first else None
                if head is not None and head.HasField("started"):
                    return TurnCall(inbox, head.started, worker, self._on_outcome, first[1:])
                worker.in_flight -= 1
                if head is None or not head.HasField("error"):
                    inbox.cancel()
                    raise ApiError(
                        502, "The worker did not start the turn.", "api_error", code="worker_error"
                    )
                code = STATUS_BY_NUMBER.get(head.error.code, grpc.StatusCode.UNKNOWN)
                details = head.error.message
            self._on_outcome(code.name.lower())
            if code not in _RETRY_ELSEWHERE:
                raise api_error_from_call(code, details)
            log.info("worker %s: %s, trying the next one", worker.address, code.name)
            if code is grpc.StatusCode.UNAVAILABLE:
                self._set_serving(worker, False)
            last_failure = (code, details)
        if last_failure is None:
            raise api_error_from_call(grpc.StatusCode.UNAVAILABLE, None)
        raise api_error_from_call(*last_failure)

    def any_serving(self) -> bool:
        return any(worker.serving for worker in self._workers.values())
