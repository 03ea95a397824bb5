"""`diagnostics`: traces over OTLP and the prompt-cache trace."""

from __future__ import annotations

from pydantic import Field, field_validator

from services.config_section import Section

OTLP_PROTOCOLS = ("http/protobuf", "grpc")


class OtelConfig(Section):
    """`diagnostics.otel`: traces over OTLP. Unset keys fall back to the standard OTEL_*
    environment variables; on when an endpoint is set here or there (services/tracing.py)."""

    # None: on exactly when an endpoint is configured; false: off whatever the environment says.
    enabled: bool | None = None
    endpoint: str | None = None  # the collector's base URL (OTLP/HTTP traces: <base>/v1/traces)
    protocol: str | None = None  # "http/protobuf" (the default) or "grpc"
    headers: dict[str, str] = Field(default_factory=dict)
    service_name: str | None = Field(None, alias="serviceName")
    # The share of new traces kept (0..1); a caller's sampled flag is followed.
    sample_rate: float | None = Field(None, alias="sampleRate", ge=0, le=1)
    # Message content (prompts, answers, tool arguments and results) is personal data: only
    # recorded in spans when this is true.
    capture_content: bool = Field(False, alias="captureContent")

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, protocol: str | None) -> str | None:
        if protocol is not None and protocol not in OTLP_PROTOCOLS:
            raise ValueError(f"{protocol!r} is not supported: use {' or '.join(OTLP_PROTOCOLS)}")
        return protocol


class DiagnosticsConfig(Section):
    otel: OtelConfig = Field(default_factory=OtelConfig)
    # A log line per model call on its prompt's cached prefix (agent_worker/cache_trace.py).
    cache_trace: bool = Field(False, alias="cacheTrace")
