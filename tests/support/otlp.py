"""An OTLP trace receiver for tests: what a collector does with an export, and no more.

Over HTTP it takes `POST /v1/traces` with a protobuf `ExportTraceServiceRequest` (gzip or not),
refusing other content types (415) and bodies that do not decode (400) as the OTLP/HTTP spec
says a server does; over gRPC it serves `TraceService/Export`. Either way the spans are kept,
decoded, in `spans`.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1 import trace_pb2

from devkit.processes import free_port
from devkit.upstream import ThreadedServer

KINDS = {
    trace_pb2.Span.SPAN_KIND_INTERNAL: "internal",
    trace_pb2.Span.SPAN_KIND_SERVER: "server",
    trace_pb2.Span.SPAN_KIND_CLIENT: "client",
}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str  # '' for a root
    attributes: dict[str, Any]
    error: bool
    status_message: str
    resource: dict[str, Any] = field(default_factory=dict)


def decode(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = {item.key: _value(item.value) for item in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        service=str(resource.get("service.name", "")),
                        name=span.name,
                        kind=KINDS.get(span.kind, "other"),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        attributes={item.key: _value(item.value) for item in span.attributes},
                        error=span.status.code == trace_pb2.Status.STATUS_CODE_ERROR,
                        status_message=span.status.message,
                        resource=resource,
                    )
                )
    return spans


class SpanStore:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.refused = 0
        self._lock = threading.Lock()

    def keep(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self.spans.extend(spans)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def wait_for_trace(
        self,
        trace_id: str,
        complete: Callable[[list[ReceivedSpan]], bool],
        timeout: float = 20,
    ) -> list[ReceivedSpan]:
        """The trace's spans once `complete` says they all came (the exporters send in
        batches); after `timeout`, what came."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.trace(trace_id)
            if complete(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)


class OtlpHttpReceiver(ThreadedServer, SpanStore):
    path_prefix = ""

    def __init__(self) -> None:
        SpanStore.__init__(self)
        ThreadedServer.__init__(self)

    async def _answer(self, send: Any, status: int, body: bytes, content_type: bytes) -> None:
        headers = [(b"content-type", content_type)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] != "POST" or scope["path"] != "/v1/traces":
            await self._answer(send, 404, b"not found", b"text/plain")
            return
        headers = dict(scope["headers"])
        if headers.get(b"content-type") != b"application/x-protobuf":
            self.refused += 1
            await self._answer(send, 415, b"content-type must be protobuf", b"text/plain")
            return
        try:
            if headers.get(b"content-encoding") == b"gzip":
                body = gzip.decompress(body)
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        except (DecodeError, OSError):
            self.refused += 1
            await self._answer(send, 400, b"not an ExportTraceServiceRequest", b"text/plain")
            return
        self.keep(decode(request))
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        await self._answer(send, 200, answer, b"application/x-protobuf")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: SpanStore) -> None:
        self._store = store

    def Export(  # noqa: N802 - gRPC method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._store.keep(decode(request))
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpGrpcReceiver(SpanStore):
    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OtlpGrpcReceiver:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(1)
