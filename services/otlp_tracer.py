"""Spans as OpenTelemetry defines them, made here: imported by services/tracing.py only once
tracing is on.

A span is a slotted object with its ids, times and attributes; the current one is a context
variable (each asyncio task has its own). Sampling is OpenTelemetry's: parent-based with a
trace-id ratio (`diagnostics.otel.sampleRate`), else what `OTEL_TRACES_SAMPLER(_ARG)` says;
`traceparent` is W3C Trace Context. Ended spans go to the batch exporter (otlp_export.py). Why
not the SDK: its spans cost 28 µs each to make and end here, these about 3 µs.
"""

from __future__ import annotations

import os
import random
import re
import time
import urllib.parse
from contextvars import ContextVar, Token
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Self

from services.otlp_export import BatchExporter, GrpcTransport, HttpTransport, env_headers
from services.spans import NO_SPAN, Attributes, AttributeValue, Span, SpanKind, TraceSettings

_KINDS = {"internal": 1, "server": 2, "client": 3}  # OTLP's SpanKind numbers
_STATUS_ERROR = 2
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_current: ContextVar[LiveSpan | None] = ContextVar("clawgate_current_span", default=None)


def _clawgate_version() -> str:
    try:
        return version("clawgate")
    except PackageNotFoundError:
        return "0"


def _remote_parent(traceparent: str) -> tuple[int, int, bool] | None:
    """(trace id, span id, sampled) of a W3C traceparent, None when it is not usable."""
    match = _TRACEPARENT.fullmatch(traceparent.strip().lower())
    if match is None:
        return None
    version_, trace_hex, span_hex, flags, rest = match.groups()
    if version_ == "ff" or (version_ == "00" and rest):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


class RootSampler:
    """Whether a trace is kept: OpenTelemetry's samplers, parent-based or not."""

    def __init__(self, rate: float | None) -> None:
        self.parent_based = True
        if rate is None:
            name = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
            self.parent_based = name.startswith("parentbased_")
            name = name.removeprefix("parentbased_")
            if name == "always_off":
                rate = 0.0
            elif name == "traceidratio":
                try:
                    rate = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
                except ValueError:
                    rate = 1.0
            else:
                rate = 1.0
        # TraceIdRatioBased: the trace id's low 64 bits under rate × 2^64.
        self._bound = round(min(max(rate, 0.0), 1.0) * (1 << 64))

    def keeps(self, trace_id: int, parent_sampled: bool | None) -> bool:
        if parent_sampled is not None and self.parent_based:
            return parent_sampled
        return (trace_id & 0xFFFFFFFFFFFFFFFF) < self._bound


class _Current:
    """Makes a span the current one for a block, without ending it."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: LiveSpan) -> None:
        self._span = span
        self._token: Token[LiveSpan | None] | None = None

    def __enter__(self) -> Self:
        self._token = _current.set(self._span)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)


class LiveSpan:
    """A span of a trace: recorded when `sampled`, else only its context travels."""

    __slots__ = (
        "name",
        "kind",
        "trace_id",
        "span_id",
        "parent_id",
        "sampled",
        "attributes",
        "_exporter",
        "_start",
        "_code",
        "_message",
        "_token",
        "_ended",
    )
    live = True

    def __init__(
        self,
        exporter: BatchExporter,
        name: str,
        kind: int,
        ids: tuple[int, int, int],
        sampled: bool,
        attributes: Attributes | None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.trace_id, self.span_id, self.parent_id = ids
        self.sampled = sampled
        self.attributes: dict[str, AttributeValue] = dict(attributes or ()) if sampled else {}
        self._exporter = exporter
        self._start = time.time_ns()
        self._code = 0
        self._message = ""
        self._token: Token[LiveSpan | None] | None = None
        self._ended = False

    def set(self, key: str, value: AttributeValue) -> None:
        if self.sampled and not self._ended:  # once ended, the exporter's thread reads them
            self.attributes[key] = value

    def rename(self, name: str) -> None:
        self.name = name

    def fail(self, message: str, error_type: str) -> None:
        if self.sampled and not self._code and not self._ended:  # the first one says it
            self._code, self._message = _STATUS_ERROR, message
            self.attributes["error.type"] = error_type

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self.sampled:
            parent = self.parent_id.to_bytes(8, "big") if self.parent_id else b""
            self._exporter.add(
                (
                    self.name,
                    self.trace_id.to_bytes(16, "big"),
                    self.span_id.to_bytes(8, "big"),
                    parent,
                    self.kind,
                    self._start,
                    time.time_ns(),
                    self.attributes,
                    self._code,
                    self._message,
                )
            )

    def current(self) -> _Current:
        return _Current(self)

    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{'01' if self.sampled else '00'}"

    def __enter__(self) -> Self:
        self._token = _current.set(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is not None and not issubclass(kind, GeneratorExit):
            self.fail(str(error) or kind.__name__, kind.__name__)
        if self._token is not None:
            _current.reset(self._token)
        self.end()


def _resource(settings: TraceSettings) -> dict[str, AttributeValue]:
    resource: dict[str, AttributeValue] = {}
    for pair in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, equals, value = pair.partition("=")
        if equals and key.strip():
            resource[key.strip()] = urllib.parse.unquote(value.strip())
    return {
        **resource,
        **settings.resource,
        "service.name": settings.service_name,
        "service.version": _clawgate_version(),
        "telemetry.sdk.name": "clawgate",
        "telemetry.sdk.language": "python",
    }


class OtlpTracer:
    def __init__(self, settings: TraceSettings) -> None:
        self.capture_content = settings.capture_content
        self._sampler = RootSampler(settings.sample_rate)
        headers = env_headers() if settings.headers is None else settings.headers
        transport = (GrpcTransport if settings.protocol == "grpc" else HttpTransport)(
            settings.endpoint, headers
        )
        scope = ("clawgate", _clawgate_version())
        self._exporter = BatchExporter(transport, _resource(settings), scope)

    def span(self, name: str, kind: SpanKind, attributes: Attributes | None, parent: str) -> Span:
        remote = _remote_parent(parent) if parent else None
        parent_sampled: bool | None = None
        if remote is not None:
            trace_id, parent_id, parent_sampled = remote
        elif not parent and (current := _current.get()) is not None:
            if not current.sampled:
                # A trace not kept: its children would be recorded by nobody either, and each
                # would still cost its making. The current span's context travels on.
                return NO_SPAN
            trace_id, parent_id, parent_sampled = current.trace_id, current.span_id, True
        else:
            trace_id, parent_id = random.getrandbits(128) or 1, 0
        sampled = self._sampler.keeps(trace_id, parent_sampled)
        ids = (trace_id, random.getrandbits(64) or 1, parent_id)
        return LiveSpan(self._exporter, name, _KINDS[kind], ids, sampled, attributes)

    def traceparent(self) -> str:
        current = _current.get()
        return "" if current is None else current.traceparent()

    def ids(self) -> tuple[str, str] | None:
        current = _current.get()
        if current is None:
            return None
        return f"{current.trace_id:032x}", f"{current.span_id:016x}"

    def fail_current(self, message: str, error_type: str) -> None:
        current = _current.get()
        if current is not None:
            current.fail(message, error_type)

    def set_current(self, key: str, value: AttributeValue) -> None:
        current = _current.get()
        if current is not None:
            current.set(key, value)

    def shutdown(self) -> None:
        self._exporter.shutdown()
