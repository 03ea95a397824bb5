"""Tracing on the OpenTelemetry SDK: imported by services/tracing.py only once tracing is on.

Spans go through a BatchSpanProcessor (a thread sends them in batches; the standard
`OTEL_BSP_*` variables tune it) to an OTLP exporter over HTTP (protobuf) or gRPC. The tracer
provider is this module's own, not the global one: libraries that trace on their own stay
silent rather than mixing their spans into ours.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Self

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.spans import NO_SPAN, Attributes, AttributeValue, Span, SpanKind, TraceSettings

_KINDS = {
    "internal": trace.SpanKind.INTERNAL,
    "server": trace.SpanKind.SERVER,
    "client": trace.SpanKind.CLIENT,
}
_PROPAGATOR = TraceContextTextMapPropagator()


def _fail(span: trace.Span, message: str, error_type: str) -> None:
    status = getattr(span, "status", None)  # a span not sampled has none
    if status is None or status.status_code is StatusCode.ERROR:
        return  # the first failure is the one that says what went wrong
    span.set_status(Status(StatusCode.ERROR, message))
    span.set_attribute("error.type", error_type)


def _traceparent_of(span: trace.Span) -> str:
    context = span.get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


class _Current:
    """Makes a span the current one for a block, without ending it."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self._token: object = None

    def __enter__(self) -> Self:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]


class LiveSpan(_Current):
    """A recorded span; `with span:` makes it current (as `_Current`) and ends it."""

    __slots__ = ()
    live = True

    def set(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def rename(self, name: str) -> None:
        self._span.update_name(name)

    def fail(self, message: str, error_type: str) -> None:
        _fail(self._span, message, error_type)

    def end(self) -> None:
        self._span.end()

    def current(self) -> _Current:
        return _Current(self._span)

    def traceparent(self) -> str:
        return _traceparent_of(self._span)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is not None and not issubclass(kind, GeneratorExit):
            self.fail(str(error) or kind.__name__, kind.__name__)
        super().__exit__(kind, error, traceback)
        self._span.end()


def _exporter(settings: TraceSettings) -> SpanExporter:
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=settings.endpoint, headers=settings.headers)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.endpoint, headers=settings.headers)


def _clawgate_version() -> str:
    try:
        return version("clawgate")
    except PackageNotFoundError:
        return "0"


class OtelTracer:
    def __init__(self, settings: TraceSettings) -> None:
        self.capture_content = settings.capture_content
        sampler: Sampler | None = None
        if settings.sample_rate is not None:
            sampler = ParentBased(TraceIdRatioBased(settings.sample_rate))
        resource = Resource.create(
            {
                **settings.resource,
                "service.name": settings.service_name,
                "service.version": _clawgate_version(),
            }
        )
        self._provider = TracerProvider(resource=resource, sampler=sampler)
        self._provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
        self._tracer = self._provider.get_tracer("clawgate", _clawgate_version())

    def span(self, name: str, kind: SpanKind, attributes: Attributes | None, parent: str) -> Span:
        if parent:
            context = _PROPAGATOR.extract({"traceparent": parent})
        else:
            current = trace.get_current_span()
            if current.get_span_context().is_valid and not current.is_recording():
                # A trace not sampled: its children would be recorded by nobody either, and
                # each would still cost its making. The current span's context travels on.
                return NO_SPAN
            context = None
        return LiveSpan(self._tracer.start_span(name, context, _KINDS[kind], attributes=attributes))

    def traceparent(self) -> str:
        return _traceparent_of(trace.get_current_span())

    def ids(self) -> tuple[str, str] | None:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return f"{context.trace_id:032x}", f"{context.span_id:016x}"

    def fail_current(self, message: str, error_type: str) -> None:
        _fail(trace.get_current_span(), message, error_type)

    def shutdown(self) -> None:
        self._provider.shutdown()
