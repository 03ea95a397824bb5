"""What a span is, on or off: the `Span` the code calls, the do-nothing one used while tracing
is off, and the settings an exporter starts with. Imported by services/tracing.py and by the
tracer (services/otlp_tracer.py) alike, so that neither imports the other's module at load."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Protocol

SpanKind = Literal["internal", "server", "client"]
AttributeValue = str | bool | int | float | list[str]
Attributes = Mapping[str, AttributeValue]


class Span(Protocol):
    live: bool  # False for the do-nothing span while tracing is off

    def set(self, key: str, value: AttributeValue) -> None: ...

    def rename(self, name: str) -> None: ...

    def fail(self, message: str, error_type: str) -> None:
        """Marks the span as failed (status ERROR, `error.type`); the first failure stays."""

    def end(self) -> None: ...

    def current(self) -> _Current:
        """A context manager that makes this span the current one, without ending it."""

    def traceparent(self) -> str:
        """The W3C `traceparent` of this span ('' when tracing is off)."""

    def __enter__(self) -> Span: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


class _Current(Protocol):
    def __enter__(self) -> object: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


class _NoSpan:
    """Every span while tracing is off: one object, every method does nothing."""

    __slots__ = ()
    live = False

    def set(self, key: str, value: AttributeValue) -> None:
        pass

    def rename(self, name: str) -> None:
        pass

    def fail(self, message: str, error_type: str) -> None:
        pass

    def end(self) -> None:
        pass

    def current(self) -> _NoSpan:
        return self

    def traceparent(self) -> str:
        return ""

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        pass


NO_SPAN = _NoSpan()


@dataclass(frozen=True, slots=True)
class TraceSettings:
    endpoint: str  # the full traces URL (OTLP/HTTP) or the collector's address (gRPC)
    protocol: str
    service_name: str
    headers: dict[str, str] | None = None  # None: the exporter reads OTEL_EXPORTER_OTLP_HEADERS
    sample_rate: float | None = None  # None: OTEL_TRACES_SAMPLER(_ARG) say
    capture_content: bool = False
    resource: dict[str, str] = field(default_factory=dict)
