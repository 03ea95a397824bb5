"""The tracer's own parts: sampling, traceparent reading, the export encoding (read back with
OTLP's protobuf classes) and the HTTP export's retries, against a real local HTTP server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from services.otlp_export import (
    BatchExporter,
    FinishedSpan,
    HttpTransport,
    _timeout_seconds,
    env_headers,
)
from services.otlp_tracer import OtlpTracer, RootSampler, _remote_parent
from services.spans import NO_SPAN, TraceSettings

LOW_HALF = 1 << 63  # a trace id whose low 64 bits sit at half of their range


def test_a_ratio_keeps_the_trace_ids_under_its_share() -> None:
    sampler = RootSampler(0.5)
    assert sampler.keeps(LOW_HALF - 1, None)
    assert not sampler.keeps(LOW_HALF, None)
    assert not sampler.keeps((1 << 64) - 1, None)
    # The high 64 bits do not count.
    assert sampler.keeps((0xFFFF << 64) | 5, None)


def test_a_caller_s_decision_is_followed_either_way() -> None:
    assert RootSampler(0.0).keeps(5, True)
    assert not RootSampler(1.0).keeps(5, False)


@pytest.mark.parametrize(
    ("sampler", "argument", "kept", "follows_parent"),
    [
        ("always_off", "", False, False),
        ("parentbased_always_off", "", False, True),
        ("traceidratio", "0.5", True, False),
        ("parentbased_traceidratio", "0.0", False, True),
    ],
)
def test_the_standard_sampler_variables(
    monkeypatch: pytest.MonkeyPatch, sampler: str, argument: str, kept: bool, follows_parent: bool
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", argument)
    chosen = RootSampler(None)
    assert chosen.keeps(1, None) is kept
    assert chosen.keeps(LOW_HALF, True) is follows_parent  # LOW_HALF is past any ratio here


def test_a_traceparent_is_read_as_w3c_says() -> None:
    trace_hex, span_hex = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    assert _remote_parent(f"00-{trace_hex}-{span_hex}-01") == (
        int(trace_hex, 16),
        int(span_hex, 16),
        True,
    )
    assert _remote_parent(f"00-{trace_hex}-{span_hex}-00")[2] is False  # type: ignore[index]
    assert _remote_parent(f"01-{trace_hex}-{span_hex}-01-future") is not None
    for unusable in (
        f"ff-{trace_hex}-{span_hex}-01",
        f"00-{trace_hex}-{span_hex}-01-more",
        f"00-{'0' * 32}-{span_hex}-01",
        f"00-{trace_hex}-{'0' * 16}-01",
        f"00-{trace_hex[:-1]}-{span_hex}-01",
        "not a traceparent",
    ):
        assert _remote_parent(unusable) is None, unusable


def test_the_headers_variable_is_read_as_the_sdk_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b, X-Team=red,broken")
    assert env_headers() == {"api-key": "a b", "x-team": "red"}


class Recorder:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def send(self, body: bytes, deadline: float) -> bool:
        self.bodies.append(body)
        return True

    def close(self) -> None:
        pass


def _span(name: str, attributes: dict[str, object], code: int = 0) -> FinishedSpan:
    return (name, b"\x01" * 16, b"\x02" * 8, b"", 2, 10, 20, attributes, code, "why")  # type: ignore[return-value]


def test_the_encoding_reads_back_as_otlp() -> None:
    exporter = BatchExporter(Recorder(), {"service.name": "edge"}, ("clawgate", "9"))
    try:
        attributes = {"s": "x", "b": True, "i": 7, "f": 0.5, "l": ["a", "b"]}
        body = exporter.encode([_span("one", attributes), _span("two", {}, code=2)])
    finally:
        exporter.shutdown()
    request = ExportTraceServiceRequest.FromString(body)
    resource_spans = request.resource_spans[0]
    assert resource_spans.resource.attributes[0].key == "service.name"
    scope_spans = resource_spans.scope_spans[0]
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("clawgate", "9")
    one, two = scope_spans.spans
    assert (one.name, one.kind, one.start_time_unix_nano, one.end_time_unix_nano) == (
        "one",
        2,
        10,
        20,
    )
    assert one.trace_id == b"\x01" * 16 and one.parent_span_id == b""
    values = {item.key: item.value for item in one.attributes}
    assert values["s"].string_value == "x" and values["b"].bool_value is True
    assert values["i"].int_value == 7 and values["f"].double_value == 0.5
    assert [value.string_value for value in values["l"].array_value.values] == ["a", "b"]
    assert one.status.code == 0 and (two.status.code, two.status.message) == (2, "why")


def test_a_full_queue_drops_new_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "3")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    recorder = Recorder()
    exporter = BatchExporter(recorder, {}, ("clawgate", "9"))
    for index in range(5):
        exporter.add(_span(f"s{index}", {}))
    exporter.shutdown()  # sends what is queued
    names = [
        span.name
        for body in recorder.bodies
        for span in ExportTraceServiceRequest.FromString(body)
        .resource_spans[0]
        .scope_spans[0]
        .spans
    ]
    assert names == ["s0", "s1", "s2"]


def test_an_unsampled_trace_makes_no_children_and_exports_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    settings = TraceSettings("http://127.0.0.1:9/v1/traces", "http/protobuf", "t", {}, 0.0)
    tracer = OtlpTracer(settings)
    try:
        root = tracer.span("root", "server", None, "")
        with root:
            assert root.traceparent().endswith("-00")
            assert tracer.span("child", "internal", None, "") is NO_SPAN
            assert tracer.traceparent() == root.traceparent()
        assert not tracer._exporter._queue
    finally:
        tracer._exporter._queue.clear()
        tracer.shutdown()


class _Collector(BaseHTTPRequestHandler):
    answers: list[int] = []
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = self.answers.pop(0) if self.answers else 200
        if status == 200:
            self.bodies.append(body)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Collector.answers, _Collector.bodies = [], []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()


def test_a_busy_collector_is_tried_again(collector: str) -> None:
    _Collector.answers = [503, 429]
    assert HttpTransport(collector, {}).send(b"spans", deadline=_in(10))
    assert _Collector.bodies == [b"spans"]


def test_a_refusal_is_not_tried_again(collector: str) -> None:
    _Collector.answers = [400, 200]
    assert not HttpTransport(collector, {}).send(b"spans", deadline=_in(10))
    assert _Collector.answers == [200]  # asked once


def _in(seconds: float) -> float:
    return time.monotonic() + seconds


def test_an_ended_span_keeps_what_it_had(monkeypatch: pytest.MonkeyPatch) -> None:
    # Its attributes are the exporter thread's to read once it ended.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    settings = TraceSettings("http://127.0.0.1:9/v1/traces", "http/protobuf", "t", {}, 1.0)
    tracer = OtlpTracer(settings)
    try:
        span = tracer.span("turn", "server", {"kept": 1}, "")
        span.end()
        span.set("late", 2)
        span.fail("too late", "late")
        [queued] = tracer._exporter._queue
        assert queued[7] == {"kept": 1} and queued[8] == 0
    finally:
        tracer._exporter._queue.clear()
        tracer.shutdown()


def test_a_failing_export_leaves_the_exporter_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")

    class Broken(Recorder):
        calls = 0

        def send(self, body: bytes, deadline: float) -> bool:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("a bug in a transport")
            return super().send(body, deadline)

    transport = Broken()
    exporter = BatchExporter(transport, {}, ("clawgate", "9"))
    try:
        exporter.add(_span("first", {}))
        for _ in range(200):
            if transport.calls:
                break
            time.sleep(0.01)
        exporter.add(_span("second", {}))
        for _ in range(200):
            if transport.bodies:
                break
            time.sleep(0.01)
        assert transport.bodies, "the exporter's thread died with the first failure"
    finally:
        exporter.shutdown()


def test_the_timeout_is_in_seconds_as_the_python_exporters_read_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TIMEOUT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", raising=False)
    assert _timeout_seconds() == 10.0
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2.5")
    assert _timeout_seconds() == 2.5
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "4")  # the traces' own comes first
    assert _timeout_seconds() == 4.0
