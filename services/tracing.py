"""Distributed traces, for both processes: what the code calls, and nothing more while off.

Tracing is on only when an OTLP endpoint is configured (`diagnostics.otel` or the standard
`OTEL_EXPORTER_OTLP_*` variables, see `trace_settings`). While off, `span()` hands back one
shared do-nothing span and nothing of OpenTelemetry is imported; `start()` imports the tracer
(services/otlp_tracer.py) and from then on `span()` makes real ones.

A `Span` is started by `span()` and ended once: `with span:` makes it the current span (its
children's parent, the context sent upstream) and ends it, marking an escaping exception as its
error; `span.current()` makes it current without ending it, for a span that outlives one block
(a model call that is read event by event).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from services.diagnostics_config import OTLP_PROTOCOLS, OtelConfig
from services.spans import NO_SPAN, Attributes, AttributeValue, Span, SpanKind, TraceSettings

# The contract's service as span names and `rpc.service` say it (OpenTelemetry's RPC names);
# a turn is a RunTurn on either side, whichever stream carries it.
AGENT_SERVICE = "clawgate.agent.v1.AgentService"
RUN_TURN_SPAN = f"{AGENT_SERVICE}/RunTurn"
DEFAULT_ENDPOINTS = {"http/protobuf": "http://localhost:4318", "grpc": "http://localhost:4317"}


class Tracer(Protocol):
    """What services/otlp_tracer.py provides once tracing is on."""

    capture_content: bool

    def span(self, name: str, kind: SpanKind, attributes: Attributes | None, parent: str) -> Span:
        """A started span: a child of `parent` (a traceparent) when it is valid, else of the
        current span, else the root of a new trace."""

    def traceparent(self) -> str:
        """The current span's traceparent ('' when there is none)."""

    def ids(self) -> tuple[str, str] | None:
        """The current span's trace and span ids in hex, for log lines."""

    def fail_current(self, message: str, error_type: str) -> None:
        """Marks the current span as failed, as `Span.fail`."""

    def set_current(self, key: str, value: AttributeValue) -> None:
        """Sets an attribute of the current span."""

    def shutdown(self) -> None:
        """Sends what is still queued and stops the exporter."""


_tracer: Tracer | None = None


def span(
    name: str,
    kind: SpanKind = "internal",
    attributes: Attributes | None = None,
    parent: str = "",
) -> Span:
    tracer = _tracer
    if tracer is None:
        return NO_SPAN
    return tracer.span(name, kind, attributes, parent)


def active() -> bool:
    return _tracer is not None


def capture_content() -> bool:
    """Whether message content may be recorded (diagnostics.otel.captureContent)."""
    return _tracer is not None and _tracer.capture_content


def traceparent() -> str:
    """The current span's traceparent, for a call that leaves the process ('' when off)."""
    tracer = _tracer
    return "" if tracer is None else tracer.traceparent()


def traceparent_header() -> bytes:
    """The header line an HTTP upstream gets (b'' when off or outside any span)."""
    tracer = _tracer
    if tracer is None:
        return b""
    value = tracer.traceparent()
    return b"traceparent: %s\r\n" % value.encode() if value else b""


def fail_current(message: str, error_type: str) -> None:
    """Marks the current span failed: where an error is mapped to its answer, which does not
    hold the span (the edge's error responses)."""
    tracer = _tracer
    if tracer is not None:
        tracer.fail_current(message, error_type)


def set_current(key: str, value: AttributeValue) -> None:
    """Sets an attribute of the current span: for what is worth saying but not a span's cost."""
    tracer = _tracer
    if tracer is not None:
        tracer.set_current(key, value)


def trace_ids() -> tuple[str, str] | None:
    tracer = _tracer
    return None if tracer is None else tracer.ids()


class TracingSetupError(Exception):
    """The tracing settings cannot work (an unknown protocol); the message says which key."""


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def trace_settings(
    config: OtelConfig,
    default_service: str,
    environ: Mapping[str, str] = os.environ,
) -> TraceSettings | None:
    """The settings when tracing is on, else None. The config's keys come before the
    environment's; `enabled: false` (or OTEL_SDK_DISABLED=true) turns it off whatever is set."""
    if config.enabled is False or _is_true(environ.get("OTEL_SDK_DISABLED")):
        return None
    protocol = (
        config.protocol
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol not in OTLP_PROTOCOLS:
        raise TracingSetupError(
            f"diagnostics.otel.protocol (or OTEL_EXPORTER_OTLP_PROTOCOL) {protocol!r} is not"
            f" supported: use {' or '.join(OTLP_PROTOCOLS)}"
        )
    if config.endpoint:
        endpoint = _traces_url(config.endpoint, protocol)
    elif traces_endpoint := environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        endpoint = traces_endpoint
    elif base := environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = _traces_url(base, protocol)
    elif config.enabled:
        endpoint = _traces_url(DEFAULT_ENDPOINTS[protocol], protocol)
    else:
        return None
    return TraceSettings(
        endpoint=endpoint,
        protocol=protocol,
        service_name=config.service_name or environ.get("OTEL_SERVICE_NAME") or default_service,
        headers=dict(config.headers) if config.headers else None,
        sample_rate=config.sample_rate,
        capture_content=config.capture_content,
    )


def _traces_url(base: str, protocol: str) -> str:
    """A base endpoint as the standard says: OTLP/HTTP traces go to `<base>/v1/traces`."""
    if protocol == "grpc" or base.rstrip("/").endswith("/v1/traces"):
        return base
    return base.rstrip("/") + "/v1/traces"


def start(settings: TraceSettings) -> None:
    """Turns tracing on for this process (imports the exporter and its protobuf classes)."""
    global _tracer
    from services.otlp_tracer import OtlpTracer  # only now: off costs no import

    _tracer = OtlpTracer(settings)


def shutdown() -> None:
    global _tracer
    tracer, _tracer = _tracer, None
    if tracer is not None:
        tracer.shutdown()
