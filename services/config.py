"""The clawgate config file: one JSON5 document, `${VAR}` expansion, validated with pydantic.

Keys follow the OpenClaw Gateway's names (camelCase). Unknown keys are reported as warnings so
that an OpenClaw config with more keys still loads.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import json5
from pydantic import BaseModel, Field, ValidationError, model_validator

from services.agent_config import AgentsConfig, model_refs
from services.auth_config import AuthConfig
from services.config_section import Section
from services.diagnostics_config import DiagnosticsConfig
from services.gateway_config import GatewayConfig
from services.hooks_config import HooksConfig
from services.mcp_config import McpConfig
from services.provider_config import HttpProviderSection, ModelsConfig

log = logging.getLogger("clawgate.config")

DEFAULT_CONFIG_PATH = "~/.clawgate/clawgate.json5"
CONFIG_ENV_VAR = "CLAWGATE_CONFIG"
TOKEN_ENV = "OPENCLAW_GATEWAY_TOKEN"
PASSWORD_ENV = "OPENCLAW_GATEWAY_PASSWORD"
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """The config file is missing, unreadable or invalid; the message names the bad key."""


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


class ClawgateConfig(Section):
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    sessions: SessionsConfig = Field(default_factory=SessionsConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    agents: AgentsConfig = Field(default_factory=AgentsConfig)
    mcp: McpConfig = Field(default_factory=McpConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    hooks: HooksConfig = Field(default_factory=HooksConfig)

    @model_validator(mode="after")
    def _hooks_have_their_own_token(self) -> ClawgateConfig:
        hooks, gateway_auth = self.hooks, self.gateway.auth
        if hooks.enabled and hooks.token in (gateway_auth.token, gateway_auth.password):
            raise ValueError(
                "hooks.token: must not be the gateway's token or password (a webhook sender"
                " would hold the whole API): give the hooks a long random token of their own"
            )
        agent_ids = {agent.id for agent in self.agents.entries} | {self.default_agent_id}
        for index, mapping in enumerate(hooks.mappings):
            if mapping.agent_id is not None and mapping.agent_id not in agent_ids:
                raise ValueError(
                    f"hooks.mappings.{index}.agentId: {mapping.agent_id!r} is not an agent"
                    f" (have: {', '.join(sorted(agent_ids))})"
                )
        return self

    @model_validator(mode="after")
    def _auth_profiles_name_http_providers(self) -> ClawgateConfig:
        for name, profile in self.auth.profiles.items():
            provider = self.models.providers.get(profile.provider)
            if provider is None:
                raise ValueError(
                    f"auth.profiles.{name}: provider {profile.provider!r} is not in"
                    f" models.providers (have: {', '.join(sorted(self.models.providers))})"
                )
            if not isinstance(provider, HttpProviderSection):
                raise ValueError(
                    f"auth.profiles.{name}: provider {profile.provider!r} ({provider.api})"
                    " takes no API key"
                )
        return self

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
