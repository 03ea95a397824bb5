"""When tracing is on, and where its spans go (services/tracing.py's settings)."""

from __future__ import annotations

import pytest

from services import tracing
from services.config import ConfigError, parse_config
from services.diagnostics_config import OtelConfig
from services.spans import NO_SPAN, TraceSettings
from services.tracing import TracingSetupError, trace_settings


def settings(config: dict[str, object] | None = None, **environ: str) -> TraceSettings | None:
    return trace_settings(OtelConfig.model_validate(config or {}), "clawgate-edge", environ)


def test_off_without_an_endpoint() -> None:
    assert settings() is None
    assert not tracing.active()
    assert tracing.span("x") is NO_SPAN
    assert tracing.traceparent_header() == b""


def test_the_standard_variables_turn_it_on() -> None:
    on = settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318/")
    assert on is not None
    assert on.endpoint == "http://collector:4318/v1/traces"
    assert on.protocol == "http/protobuf"
    assert on.service_name == "clawgate-edge"
    traces = settings(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://c:4318/custom/path")
    assert traces is not None and traces.endpoint == "http://c:4318/custom/path"
    grpc = settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4317", OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    assert grpc is not None and (grpc.endpoint, grpc.protocol) == ("http://c:4317", "grpc")
    named = settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318", OTEL_SERVICE_NAME="gw")
    assert named is not None and named.service_name == "gw"


def test_the_config_comes_before_the_environment() -> None:
    config = {"endpoint": "http://mine:4318", "serviceName": "edge-a", "sampleRate": 0.25}
    on = settings(config, OTEL_EXPORTER_OTLP_ENDPOINT="http://theirs:4318", OTEL_SERVICE_NAME="x")
    assert on is not None
    assert (on.endpoint, on.service_name, on.sample_rate) == (
        "http://mine:4318/v1/traces",
        "edge-a",
        0.25,
    )
    assert settings({"enabled": False}, OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318") is None
    assert settings({"endpoint": "http://c:4318"}, OTEL_SDK_DISABLED="true") is None


def test_enabled_without_an_endpoint_uses_the_local_collector() -> None:
    on = settings({"enabled": True})
    assert on is not None and on.endpoint == "http://localhost:4318/v1/traces"
    grpc = settings({"enabled": True, "protocol": "grpc"})
    assert grpc is not None and grpc.endpoint == "http://localhost:4317"


def test_an_unknown_protocol_is_refused_by_name() -> None:
    with pytest.raises(TracingSetupError, match="http/json"):
        settings(
            OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318", OTEL_EXPORTER_OTLP_PROTOCOL="http/json"
        )
    with pytest.raises(ConfigError, match=r"diagnostics\.otel\.protocol"):
        parse_config('{diagnostics: {otel: {protocol: "http/json"}}}')
    with pytest.raises(ConfigError, match=r"diagnostics\.otel\.sampleRate"):
        parse_config("{diagnostics: {otel: {sampleRate: 2}}}")
