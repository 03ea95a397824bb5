"""`gateway`: the edge's section of the config: its address, auth, HTTP endpoints, workers,
metrics, trusted proxies and limits."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from services.config_section import Section
from services.input_sources_config import ChatInputSourcesSection, InputSourcesSection
from services.limits_config import LimitsConfig


class RateLimitConfig(Section):
    max_attempts: int = Field(10, alias="maxAttempts", ge=1)
    window_ms: int = Field(60_000, alias="windowMs", ge=1)
    lockout_ms: int = Field(300_000, alias="lockoutMs", ge=0)
    exempt_loopback: bool = Field(True, alias="exemptLoopback")


# Whom usage and limits count for when the caller bears no identity (token or password mode).
OPERATOR_IDENTITY = "operator"
OPERATOR_SCOPES = (
    "operator.admin",
    "operator.approvals",
    "operator.pairing",
    "operator.read",
    "operator.talk.secrets",
    "operator.write",
)


class TrustedProxyConfig(Section):
    """`gateway.auth.trustedProxy`: who a request is for, as an identity-aware proxy says."""

    user_header: str | None = Field(None, alias="userHeader")
    # Headers the proxy always sets (e.g. x-forwarded-proto): a request without one is refused.
    required_headers: list[str] = Field(default_factory=list, alias="requiredHeaders")
    # Empty: anyone the proxy lets through.
    allow_users: list[str] = Field(default_factory=list, alias="allowUsers")
    # A proxy on this host (a loopback address in gateway.trustedProxies) must be opted into:
    # every local process could otherwise claim to be anyone.
    allow_loopback: bool = Field(False, alias="allowLoopback")
    # The scopes of a request without x-openclaw-scopes; unset: operator.read and
    # operator.write (a person's own sessions; OpenClaw's unset default is the full set).
    default_scopes: list[str] | None = Field(None, alias="defaultScopes")


class AuthConfig(Section):
    mode: Literal["token", "password", "none", "trusted-proxy"] | None = None
    token: str | None = None
    password: str | None = None
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig, alias="rateLimit")
    allow_unauthenticated_non_loopback: bool = Field(False, alias="allowUnauthenticatedNonLoopback")
    trusted_proxy: TrustedProxyConfig = Field(
        default_factory=TrustedProxyConfig, alias="trustedProxy"
    )


class ChatCompletionsEndpointConfig(ChatInputSourcesSection):
    enabled: bool = False
    max_body_bytes: int = Field(20 * 1024 * 1024, alias="maxBodyBytes", ge=1)
    # A request with more messages is refused before it is validated or sent on.
    max_messages: int = Field(10_000, alias="maxMessages", ge=1)


class ResponsesEndpointConfig(InputSourcesSection):
    enabled: bool = False
    max_body_bytes: int = Field(20 * 1024 * 1024, alias="maxBodyBytes", ge=1)
    # A request with more `input` items is refused before it is validated or sent on.
    max_messages: int = Field(10_000, alias="maxMessages", ge=1)


class SessionsEndpointConfig(Section):
    # Unset: on exactly when chat completions are.
    enabled: bool | None = None


class EndpointsConfig(Section):
    chat_completions: ChatCompletionsEndpointConfig = Field(
        default_factory=ChatCompletionsEndpointConfig, alias="chatCompletions"
    )
    responses: ResponsesEndpointConfig = Field(default_factory=ResponsesEndpointConfig)
    sessions: SessionsEndpointConfig = Field(default_factory=SessionsEndpointConfig)

    @property
    def sessions_enabled(self) -> bool:
        enabled = self.sessions.enabled
        return self.chat_completions.enabled if enabled is None else enabled


class HttpConfig(Section):
    endpoints: EndpointsConfig = Field(default_factory=EndpointsConfig)


class MetricsConfig(Section):
    enabled: bool = True
    # Serve /metrics on its own "host:port" instead of the gateway's port.
    listen: str | None = None


class GatewayToolsConfig(Section):
    """`gateway.tools`: what `POST /tools/invoke` may reach beyond each agent's own policy."""

    deny: list[str] = Field(default_factory=list)  # more tools to refuse over HTTP (globs)
    allow: list[str] = Field(default_factory=list)  # lifted from the built-in deny list


class GatewayConfig(Section):
    tools: GatewayToolsConfig = Field(default_factory=GatewayToolsConfig)
    port: int = Field(18789, ge=0, le=65535)
    bind: str = "127.0.0.1"
    auth: AuthConfig = Field(default_factory=AuthConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    workers: list[str] = Field(default_factory=lambda: ["127.0.0.1:50051"], min_length=1)
    keep_alive_seconds: float = Field(15.0, alias="keepAliveSeconds", gt=0)
    worker_resolve_seconds: float = Field(5.0, alias="workerResolveSeconds", gt=0)
    # HTTP/2 pings to each worker; a worker that does not answer one within the timeout is
    # dropped with its streams.
    worker_keepalive_seconds: float = Field(20.0, alias="workerKeepaliveSeconds", ge=1)
    # A turn a worker has not started by then is checked on: when the worker does not answer
    # a health check within workerHealthTimeoutMs, the turn moves to the next worker.
    turn_start_timeout_ms: int = Field(3_000, alias="turnStartTimeoutMs", ge=1)
    # Workers are health-checked this often, with this timeout; one that does not answer
    # leaves the pool until it does.
    worker_health_timeout_ms: int = Field(2_000, alias="workerHealthTimeoutMs", ge=1)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    # Reverse proxies (addresses or networks) whose X-Forwarded-For names the client, and, in
    # auth mode "trusted-proxy", the only ones whose identity headers are believed; nobody's
    # by default, so that no client can name another one.
    trusted_proxies: list[str] = Field(default_factory=list, alias="trustedProxies")
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses_or_networks(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry.strip().strip("[]"), strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is neither an IP address nor a network (such as 10.0.0.1 or"
                    " 10.0.0.0/8)"
                ) from None
        return entries

    @property
    def local_url(self) -> str:
        """The edge's base URL from this machine (a wildcard bind is reached on loopback)."""
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "::", "") else self.bind
        return f"http://{host}:{self.port}"
