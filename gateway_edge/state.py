"""What the edge builds once at start and every request reads."""

from __future__ import annotations

from dataclasses import dataclass

from gateway_edge.auth import Authenticator
from gateway_edge.worker_pool import WorkerPool
from services.config import ClawgateConfig


@dataclass(frozen=True, slots=True)
class EdgeState:
    config: ClawgateConfig
    authenticator: Authenticator
    agent_ids: frozenset[str]
    workers: WorkerPool
