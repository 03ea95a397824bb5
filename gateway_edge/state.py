"""What the edge builds once at start and every request reads."""

from __future__ import annotations

from dataclasses import dataclass

from gateway_edge.auth import AccessGuard
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
