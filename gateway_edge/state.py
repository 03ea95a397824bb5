"""What the edge builds once at start and every request reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from fastapi import Request

from gateway_edge.asgi import request_headers
from gateway_edge.auth import AccessGuard
from gateway_edge.limits import Limits
from gateway_edge.metrics import EdgeMetrics
from gateway_edge.principal import READ, WRITE, Principal
from gateway_edge.worker_pool import WorkerPool
from services.config import ClawgateConfig
from services.off_loop import OffLoop


@dataclass(frozen=True, slots=True)
class EdgeState:
    config: ClawgateConfig
    access: AccessGuard
    workers: WorkerPool  # also what it knows of the agents (workers.agents)
    started_at: int
    metrics: EdgeMetrics
    off_loop: OffLoop  # large request bodies are parsed here
    limits: Limits  # gateway.limits: who may start how many turns


class Admitted(NamedTuple):
    state: EdgeState
    principal: Principal
    headers: dict[bytes, bytes]


def admitted(request: Request) -> Admitted:
    """The framework routes' auth, as a dependency: the edge's state and who the caller is,
    once they are let in (the turn endpoints make the same `access.admit`)."""
    state: EdgeState = request.app.state.edge
    headers = request_headers(request.scope)
    return Admitted(state, state.access.admit(request.scope.get("client"), headers), headers)


def authorized(request: Request) -> EdgeState:
    """`admitted` for routes that only read what the gateway serves (models, status): any
    operator who may read or write."""
    state, principal, _ = admitted(request)
    principal.require_any(READ, WRITE)
    return state
