"""What the edge builds once at start and every request reads."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from gateway_edge.auth import AccessGuard, client_ip
from gateway_edge.metrics import EdgeMetrics
from gateway_edge.worker_pool import WorkerPool
from services.config import ClawgateConfig


@dataclass(frozen=True, slots=True)
class EdgeState:
    config: ClawgateConfig
    access: AccessGuard
    workers: WorkerPool  # also what it knows of the agents (workers.agents)
    started_at: int
    metrics: EdgeMetrics


def authorized(request: Request) -> EdgeState:
    """The framework routes' auth, as a dependency: the edge's state once the caller is let in
    (the chat completions hot path makes the same `access.check`)."""
    state: EdgeState = request.app.state.edge
    state.access.check(client_ip(request.client), request.headers.get("authorization"))
    return state
