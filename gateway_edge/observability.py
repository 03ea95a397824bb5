"""Pure ASGI middleware around every request: its id, its trace span, one access-log line
and its metrics.

The request id comes from `x-request-id` (when sane) or is made here; it is echoed in the
response and set for every log line written while the request runs. With tracing on, each
API request is a server span that continues the client's `traceparent`, and the response's
`traceresponse` header names it. Handlers add what only they know (agent, session, time to
first token) to the request's `RequestRecord`.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway_edge.asgi import CLIENT_CLOSED_REQUEST
from gateway_edge.metrics import EdgeMetrics, route_label
from services import tracing
from services.ids import random_hex
from services.logging import fingerprint, request_id_var
from services.tracing import NO_SPAN, Span

log = logging.getLogger("clawgate.edge.access")
RECORD_KEY = "clawgate.record"
_ACCEPTABLE_ID = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")
# Probes and scrapes come every few seconds: spans of them would drown the requests', and
# their access lines (a 503 while workers start, at every start) are written at debug only.
UNTRACED_PATHS = frozenset(("/healthz", "/readyz", "/metrics", "/favicon.ico"))
PROBE_PATHS = frozenset(("/healthz", "/readyz"))


@dataclass(slots=True)
class RequestRecord:
    started: float
    agent: str | None = None
    session_key: str | None = None
    first_token_at: float | None = None

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()


def record_of(scope: Scope) -> RequestRecord:
    record: RequestRecord = scope[RECORD_KEY]
    return record


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, metrics: EdgeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == b"x-request-id"), b"")
        request_id = given if _ACCEPTABLE_ID.fullmatch(given) else random_hex().encode()
        request_id_var.set(request_id.decode())
        record = scope[RECORD_KEY] = RequestRecord(time.monotonic())
        status = 500
        span: Span = NO_SPAN
        added_headers = [(b"x-request-id", request_id)]
        if tracing.active() and scope["path"] not in UNTRACED_PATHS:
            span = _server_span(scope)
            added_headers.append((b"traceresponse", span.traceparent().encode()))

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *added_headers]
            await send(message)

        with span:
            try:
                await self.app(scope, receive, send_observed)
            finally:
                self._observe(scope, record, status, span)

    def _observe(self, scope: Scope, record: RequestRecord, status: int, span: Span) -> None:
        ended = time.monotonic()
        route = route_label(scope)
        if span.live:
            _close_server_span(span, scope, route, record, status)
        self.metrics.requests_by(route, scope["method"], str(status)).inc()
        self.metrics.request_seconds_by(route).observe(ended - record.started)
        first_token = None
        if record.first_token_at is not None:
            first_token = record.first_token_at - record.started
            self.metrics.first_token_seconds_by(route).observe(first_token)
        level = logging.DEBUG if scope["path"] in PROBE_PATHS else logging.INFO
        if not log.isEnabledFor(level):
            return  # the line below is built only when it is written
        fields: dict[str, object] = {
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_ms": round((ended - record.started) * 1000, 1),
        }
        if record.agent is not None:
            fields["agent"] = record.agent
        if record.session_key is not None:
            fields["session"] = fingerprint(record.session_key)
        if first_token is not None:
            fields["ttft_ms"] = round(first_token * 1000, 1)
        log.log(level, "%s %s %s", scope["method"], scope["path"], status, extra={"fields": fields})


def _server_span(scope: Scope) -> Span:
    headers = scope["headers"]
    parent = next((value for name, value in headers if name == b"traceparent"), b"")
    method = scope["method"]
    # Named by the route once it is known: a path may hold a session key.
    return tracing.span(
        method,
        "server",
        {"http.request.method": method, "url.scheme": scope.get("scheme", "http")},
        parent=parent.decode("latin-1"),
    )


def _close_server_span(
    span: Span, scope: Scope, route: str, record: RequestRecord, status: int
) -> None:
    span.rename(f"{scope['method']} {route}")
    span.set("http.route", route)
    span.set("http.response.status_code", status)
    if record.agent is not None:
        span.set("clawgate.agent.id", record.agent)
    if record.session_key is not None:
        span.set("clawgate.session", fingerprint(record.session_key))
    if status >= 400 and status != CLIENT_CLOSED_REQUEST:
        span.fail(f"HTTP {status}", str(status))
