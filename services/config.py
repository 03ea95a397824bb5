"""The clawgate config file: one JSON5 document, `${VAR}` expansion, validated with pydantic.

Keys follow the OpenClaw Gateway's names (camelCase). Unknown keys are reported as warnings so
that an OpenClaw config with more keys still loads.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

import json5
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from services.agent_config import AgentsConfig, model_refs
from services.config_section import Section
from services.limits_config import LimitsConfig
from services.mcp_config import McpConfig
from services.provider_config import ModelsConfig
from services.tracing import PROTOCOLS

log = logging.getLogger("clawgate.config")

DEFAULT_CONFIG_PATH = "~/.clawgate/clawgate.json5"
CONFIG_ENV_VAR = "CLAWGATE_CONFIG"
TOKEN_ENV = "OPENCLAW_GATEWAY_TOKEN"
PASSWORD_ENV = "OPENCLAW_GATEWAY_PASSWORD"
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """The config file is missing, unreadable or invalid; the message names the bad key."""


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


class ChatCompletionsEndpointConfig(Section):
    enabled: bool = False
    max_body_bytes: int = Field(20 * 1024 * 1024, alias="maxBodyBytes", ge=1)
    # A request with more messages is refused before it is validated or sent on.
    max_messages: int = Field(10_000, alias="maxMessages", ge=1)


class ResponsesEndpointConfig(Section):
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


class WorkerConfig(Section):
    listen: str = "127.0.0.1:50051"
    max_concurrent_turns: int = Field(64, alias="maxConcurrentTurns", ge=1)
    session_wait_timeout_ms: int = Field(120_000, alias="sessionWaitTimeoutMs", ge=0)
    shutdown_grace_seconds: float = Field(30.0, alias="shutdownGraceSeconds", ge=0)
    shared_secret: str | None = Field(None, alias="sharedSecret")
    # A worker on a non-loopback address refuses to start without sharedSecret unless this is
    # true (its RPCs hand out every transcript).
    allow_unauthenticated_non_loopback: bool = Field(False, alias="allowUnauthenticatedNonLoopback")
    # Prometheus metrics over HTTP on "host:port"; off when unset.
    metrics_listen: str | None = Field(None, alias="metricsListen")
    store_check_seconds: float = Field(5.0, alias="storeCheckSeconds", gt=0)
    # The largest gRPC message either side accepts (the edge's and the worker's); covers the
    # largest turn the edge admits (maxBodyBytes), whose proto is no larger than its JSON.
    max_message_bytes: int = Field(64 * 1024 * 1024, alias="maxMessageBytes", ge=1024)
    # Turns that wait for their session (another turn of it runs) do not take one of the
    # maxConcurrentTurns slots; at most this many wait at once.
    max_queued_turns: int = Field(256, alias="maxQueuedTurns", ge=0)
    # The most messages one turn may bring (its context and input), refused before they are
    # read: the edge's maxMessages, for gRPC clients that come without an edge.
    max_turn_messages: int = Field(10_000, alias="maxTurnMessages", ge=1)


POSTGRES_URL_PREFIXES = ("postgresql://", "postgres://")


class SessionsConfig(Section):
    store: str = "sqlite:///~/.clawgate/sessions.db"
    # PostgreSQL: connections per worker. A turn takes one only for each read and write (its
    # session lease holds none), so many more turns than connections run at once.
    pool_size: int = Field(20, alias="poolSize", ge=2)

    @property
    def locks_across_processes(self) -> bool:
        """Whether the store itself keeps two workers from running one session at once."""
        return self.store.startswith(POSTGRES_URL_PREFIXES)


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
        if protocol is not None and protocol not in PROTOCOLS:
            raise ValueError(f"{protocol!r} is not supported: use {' or '.join(PROTOCOLS)}")
        return protocol


class DiagnosticsConfig(Section):
    otel: OtelConfig = Field(default_factory=OtelConfig)
    # A log line per model call on its prompt's cached prefix (agent_worker/cache_trace.py).
    cache_trace: bool = Field(False, alias="cacheTrace")


class ClawgateConfig(Section):
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    sessions: SessionsConfig = Field(default_factory=SessionsConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    agents: AgentsConfig = Field(default_factory=AgentsConfig)
    mcp: McpConfig = Field(default_factory=McpConfig)

    @model_validator(mode="after")
    def _agent_models_exist(self) -> ClawgateConfig:
        for index, agent in enumerate(self.agents.entries):
            key = f"agents.list.{index}.model" if agent.model else "agents.defaults.model"
            refs = model_refs(agent.model or self.agents.defaults.model)
            for position, model_ref in enumerate(refs):
                provider, _, model = model_ref.partition("/")
                if provider not in self.models.providers or (position and not model):
                    raise ValueError(
                        f"{key}: provider {provider!r} of model {model_ref!r} is not in "
                        f"models.providers (have: {', '.join(sorted(self.models.providers))})"
                        if provider not in self.models.providers
                        else f"{key}: fallback {model_ref!r} is not provider/model"
                    )
        summary_models = [
            ("agents.defaults.compaction.model", self.agents.defaults.compaction.model)
        ]
        summary_models += [
            (f"agents.list.{index}.compaction.model", agent.compaction.model)
            for index, agent in enumerate(self.agents.entries)
            if agent.compaction is not None
        ]
        for key, summary_model in summary_models:
            provider, _, model = (summary_model or "").partition("/")
            if summary_model and (provider not in self.models.providers or not model):
                raise ValueError(
                    f"{key}: {summary_model!r} is not provider/model with a provider in "
                    f"models.providers (have: {', '.join(sorted(self.models.providers))})"
                )
        return self

    @property
    def default_agent_id(self) -> str:
        for agent in self.agents.entries:
            if agent.default:
                return agent.id
        return "main"


def expand_env(value: Any, environ: dict[str, str] | os._Environ[str] = os.environ) -> Any:
    """Replaces `${VAR}` in every string of a parsed JSON5 document; unset variables read as ''."""
    if isinstance(value, str):
        return _ENV_REFERENCE.sub(lambda match: environ.get(match.group(1), ""), value)
    if isinstance(value, list):
        return [expand_env(item, environ) for item in value]
    if isinstance(value, dict):
        return {key: expand_env(item, environ) for key, item in value.items()}
    return value


def unknown_keys(section: BaseModel, prefix: str = "") -> list[str]:
    """Dotted paths of keys the schema does not know, for warnings."""
    found = [f"{prefix}{key}" for key in (section.model_extra or {})]
    for name, field in type(section).model_fields.items():
        child = getattr(section, name)
        key = f"{prefix}{field.alias or name}"
        children = (
            child.items()
            if isinstance(child, dict)
            else enumerate(child)
            if isinstance(child, list)
            else [(None, child)]
        )
        for child_key, item in children:
            if isinstance(item, BaseModel):
                path = key if child_key is None else f"{key}.{child_key}"
                found.extend(unknown_keys(item, f"{path}."))
    return found


def parse_config(text: str, source: str = "<config>") -> ClawgateConfig:
    try:
        document = json5.loads(text)
    except ValueError as error:
        raise ConfigError(f"{source}: not valid JSON5: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: the top level must be an object")
    try:
        config = ClawgateConfig.model_validate(expand_env(document))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']) or '<root>'}: {issue['msg']}"
            for issue in error.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None
    for key in unknown_keys(config):
        log.warning("%s: unknown key %s (ignored)", source, key)
    return config


def config_path(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH).expanduser()


def load_config(path: Path) -> ClawgateConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (run `clawgate up` to write one)") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    return parse_config(text, str(path))
