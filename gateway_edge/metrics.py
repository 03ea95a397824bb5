"""The edge's Prometheus metrics (a registry of its own) and the GET /metrics route."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import Scope

from services.metric_labels import children_of

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_FIRST_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
OTHER_ROUTE = "other"


def route_label(scope: Scope) -> str:
    """A bounded label: the template of the route that served the request (the app's routes
    and the turn endpoints set `scope["route"]`), else 'other' (a 404, say)."""
    route = scope.get("route")
    path: str | None = getattr(route, "path_format", None)
    return path if path is not None else OTHER_ROUTE


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "clawgate_edge_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "clawgate_edge_request_duration_seconds",
            "Time from a request's arrival to the end of its response.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.first_token_seconds = Histogram(
            "clawgate_edge_time_to_first_token_seconds",
            "Time from a streamed turn request's arrival to its first content token, by route"
            " (streams only: a whole answer's first token is its last).",
            ["route"],
            buckets=_FIRST_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.streams_open = Gauge(
            "clawgate_edge_streams_open",
            "SSE responses being streamed now, by route.",
            ["route"],
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "clawgate_edge_completion_tokens",
            "Completion tokens sent to clients (as the providers counted them), by route.",
            ["route"],
            registry=self.registry,
        )
        self.worker_calls = Counter(
            "clawgate_edge_worker_calls",
            "Turns sent to workers by outcome"
            " (ok, cancelled, turn_error, worker_lost or a gRPC code).",
            ["outcome"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "clawgate_edge_auth_failures",
            "Requests refused by auth (missing, invalid or locked_out).",
            ["reason"],
            registry=self.registry,
        )
        self.requests_by = children_of(self.requests)
        self.request_seconds_by = children_of(self.request_seconds)
        self.first_token_seconds_by = children_of(self.first_token_seconds)
        self.streams_open_by = children_of(self.streams_open)
        self.completion_tokens_by = children_of(self.completion_tokens)
        self.worker_calls_by = children_of(self.worker_calls)
        self.limit_store_failures = Counter(
            "clawgate_edge_limit_store_failures",
            "Turns whose limits the limit store (gateway.limits.store) did not answer for.",
            registry=self.registry,
        )
        self.auth_failures_by = children_of(self.auth_failures)

    def render(self) -> bytes:
        return generate_latest(self.registry)


router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    edge_metrics: EdgeMetrics = request.app.state.edge.metrics
    return Response(edge_metrics.render(), media_type=CONTENT_TYPE_LATEST)
