"""The edge's app factory: routes, error mapping, and the worker pool's lifetime."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway_edge import (
    embeddings,
    health,
    models,
    runs_api,
    sessions_api,
    status,
    tools_invoke,
    ui_routes,
    usage_api,
    whoami,
)
from gateway_edge import metrics as metrics_route
from gateway_edge.auth import AccessGuard, Authenticator
from gateway_edge.dialects.chat import ChatCompletions
from gateway_edge.dialects.responses import Responses
from gateway_edge.errors import ApiError, bad_request, internal_error
from gateway_edge.hooks import HookEndpoint
from gateway_edge.json_responses import error_response
from gateway_edge.limit_stores import counts_for
from gateway_edge.limits import Limits
from gateway_edge.metrics import EdgeMetrics
from gateway_edge.observability import ObservabilityMiddleware
from gateway_edge.proxies import TrustedProxies
from gateway_edge.rate_limit import AuthFailureLimiter
from gateway_edge.serving import TurnEndpoint
from gateway_edge.state import EdgeState
from gateway_edge.worker_pool import PoolSettings, WorkerPool
from services import tracing
from services.config import ClawgateConfig
from services.grpc_options import edge_channel_options
from services.logging import flush_logs
from services.metrics_http import serve_metrics
from services.off_loop import OffLoop
from services.tracing import trace_settings

log = logging.getLogger("clawgate.edge")
_HTTP_ERROR_TYPES = {404: "not_found_error", 405: "invalid_request_error"}


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    tracing.fail_current(error.message, error.code or error.type)
    return error_response(error)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    message = {404: f"Not found: {request.url.path}", 405: "Method not allowed."}.get(
        error.status_code, str(error.detail)
    )
    response = error_response(
        ApiError(
            error.status_code,
            message,
            _HTTP_ERROR_TYPES.get(error.status_code, "invalid_request_error"),
        )
    )
    response.headers.update(error.headers or {})
    return response


async def _validation_error(request: Request, error: Exception) -> Response:
    return error_response(bad_request("The request is invalid."))


async def _unexpected_error(request: Request, error: Exception) -> Response:
    log.exception("unexpected error", exc_info=error)
    return error_response(internal_error())


class HotPath:
    """Hands the turn endpoints' paths straight to them and everything else to `app`: the
    framework's routing, dependencies and middleware cost every turn more than the turn's own
    work at the edge."""

    def __init__(
        self, app: ASGIApp, endpoints: list[TurnEndpoint], hooks: HookEndpoint | None = None
    ) -> None:
        self._app = app
        self._endpoints = {endpoint.path: endpoint for endpoint in endpoints}
        self._hooks = hooks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        endpoint = self._endpoints.get(scope["path"])
        if endpoint is not None:
            await endpoint(scope, receive, send)
        elif self._hooks is not None and self._hooks.serves(scope["path"]):
            await self._hooks(scope, receive, send)
        else:
            await self._app(scope, receive, send)


def pool_settings(config: ClawgateConfig) -> PoolSettings:
    gateway = config.gateway
    return PoolSettings(
        shared_secret=config.worker.shared_secret,
        resolve_seconds=gateway.worker_resolve_seconds,
        channel_options=edge_channel_options(config),
        max_message_bytes=config.worker.max_message_bytes,
        start_check_seconds=gateway.turn_start_timeout_ms / 1000,
        health_timeout_seconds=gateway.worker_health_timeout_ms / 1000,
    )


def create_app(config: ClawgateConfig) -> ASGIApp:
    """Builds the edge; raises AuthSetupError when auth would run open by accident."""
    auth = config.gateway.auth
    metrics = EdgeMetrics()
    proxies = TrustedProxies(config.gateway.trusted_proxies)
    access = AccessGuard(
        Authenticator.from_config(auth, config.gateway.bind, proxies=proxies),
        AuthFailureLimiter(auth.rate_limit),
        proxies,
        on_failure=lambda reason: metrics.auth_failures_by(reason).inc(),
    )
    workers = WorkerPool(
        config.gateway.workers,
        pool_settings(config),
        on_outcome=lambda outcome: metrics.worker_calls_by(outcome).inc(),
    )
    limits_config = config.gateway.limits
    counts = counts_for(limits_config.store, config.sessions.store)
    limits = Limits(limits_config, counts, metrics.limit_store_failures.inc)
    state = EdgeState(
        config, access, workers, int(time.time()), metrics, OffLoop(name="requests"), limits
    )
    metrics_config = config.gateway.metrics
    traces = trace_settings(config.diagnostics.otel, "clawgate-edge")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if traces is not None:
            tracing.start(traces)
            log.info("traces go to %s (%s)", traces.endpoint, traces.protocol)
        await workers.open()
        stop_metrics = (
            serve_metrics(metrics_config.listen, metrics.registry)
            if metrics_config.enabled and metrics_config.listen
            else None
        )
        try:
            yield
        finally:
            log.info("edge stopping")
            if stop_metrics is not None:
                stop_metrics()
            await workers.close()
            await limits.close()
            tracing.shutdown()
            log.info("edge stopped")
            flush_logs()

    app = FastAPI(
        title="clawgate", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.edge = state
    app.include_router(health.router)
    app.include_router(status.router)
    if metrics_config.enabled and not metrics_config.listen:
        app.include_router(metrics_route.router)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
    endpoints_config = config.gateway.http.endpoints
    if endpoints_config.sessions_enabled:
        app.include_router(sessions_api.router)
    app.include_router(whoami.router)
    app.include_router(runs_api.router)
    app.include_router(usage_api.router)
    app.include_router(tools_invoke.router)  # always served, as OpenClaw does
    if endpoints_config.chat_completions.enabled or endpoints_config.responses.enabled:
        app.include_router(embeddings.router)  # served with either, as OpenClaw does
    if endpoints_config.chat_completions.enabled:
        app.include_router(ui_routes.router)  # the chat page talks to chat completions
    endpoints = [
        TurnEndpoint(state, dialect)
        for enabled, dialect in (
            (endpoints_config.chat_completions.enabled, ChatCompletions(config)),
            (endpoints_config.responses.enabled, Responses(config)),
        )
        if enabled
    ]
    if not endpoints_config.chat_completions.enabled:
        log.warning(
            "POST /v1/chat/completions is off (404): set"
            " gateway.http.endpoints.chatCompletions.enabled to true to serve it"
        )
    hooks = HookEndpoint(state) if config.hooks.enabled else None
    if endpoints:
        app.include_router(models.router)
    elif hooks is None:
        return ObservabilityMiddleware(app, metrics)
    return ObservabilityMiddleware(HotPath(app, endpoints, hooks), metrics)
