"""The `agents` section of the config file: the defaults every agent starts from
(`agents.defaults`) and each agent's overrides (`agents.list`), with OpenClaw's keys."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from services.config_section import Section
from services.mcp_config import AgentToolsConfig

AGENT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class SamplingDefaults(Section):
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, alias="topP", ge=0, le=1)
    max_tokens: int | None = Field(None, alias="maxTokens", ge=1)


class CompactionDefaults(Section):
    """`agents.defaults.compaction` (OpenClaw's keys); docs/sessions.md says what each does."""

    enabled: bool = True
    # "safeguard" is accepted for OpenClaw configs: clawgate always summarises in chunks that fit.
    mode: Literal["default", "safeguard"] = "default"
    keep_recent_tokens: int = Field(20_000, alias="keepRecentTokens", ge=1)
    reserve_tokens_floor: int = Field(20_000, alias="reserveTokensFloor", ge=0)
    model: str | None = None  # "provider/model" for summaries; the agent's own when unset
    timeout_seconds: float = Field(120.0, alias="timeoutSeconds", gt=0)


class CompactionOverrides(Section):
    """`agents.list[].compaction`: what is set here wins over the defaults."""

    enabled: bool | None = None
    mode: Literal["default", "safeguard"] | None = None
    keep_recent_tokens: int | None = Field(None, alias="keepRecentTokens", ge=1)
    reserve_tokens_floor: int | None = Field(None, alias="reserveTokensFloor", ge=0)
    model: str | None = None
    timeout_seconds: float | None = Field(None, alias="timeoutSeconds", gt=0)


class ModelChoice(Section):
    """An agent's model with the ones to fall back to, in order (OpenClaw's shape)."""

    primary: str = Field(min_length=1)
    fallbacks: list[str] = Field(default_factory=list)


CacheRetention = Literal["none", "short", "long"]


class ModelParams(Section):
    """`params` (OpenClaw's): for every model, one model, or one agent."""

    # How long the provider keeps the prompt's prefix cached (docs/providers.md).
    cache_retention: CacheRetention | None = Field(None, alias="cacheRetention")


class ModelSettings(Section):
    """`agents.defaults.models["provider/model"]` and an agent's own `models[...]`."""

    params: ModelParams = Field(default_factory=ModelParams)


def model_refs(model: str | ModelChoice) -> list[str]:
    """Every "provider/model" an agent's `model` names, the primary first."""
    return [model] if isinstance(model, str) else [model.primary, *model.fallbacks]


class AgentDefaults(Section):
    model: str | ModelChoice = "local/smollm2-135m"
    system_prompt: str = Field("You are a helpful assistant.", alias="systemPrompt")
    history_limit: int = Field(100, alias="historyLimit", ge=0)
    turn_timeout_ms: int = Field(600_000, alias="turnTimeoutMs", ge=1)
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    tools: AgentToolsConfig = Field(default_factory=AgentToolsConfig)
    # A cap on the model's context window (tokens), for every agent.
    context_tokens: int | None = Field(None, alias="contextTokens", ge=256)
    compaction: CompactionDefaults = Field(default_factory=CompactionDefaults)
    params: ModelParams = Field(default_factory=ModelParams)
    models: dict[str, ModelSettings] = Field(default_factory=dict)


class AgentConfig(Section):
    id: str = Field(pattern=AGENT_ID_PATTERN)
    name: str | None = None
    default: bool = False
    model: str | ModelChoice | None = None
    system_prompt: str | None = Field(None, alias="systemPrompt")
    history_limit: int | None = Field(None, alias="historyLimit", ge=0)
    turn_timeout_ms: int | None = Field(None, alias="turnTimeoutMs", ge=1)
    sampling: SamplingDefaults | None = None
    tools: AgentToolsConfig | None = None
    context_tokens: int | None = Field(None, alias="contextTokens", ge=256)
    compaction: CompactionOverrides | None = None
    # "provider/model" for POST /v1/embeddings; unset: the agent's own model.
    embedding_model: str | None = Field(None, alias="embeddingModel")
    params: ModelParams | None = None
    models: dict[str, ModelSettings] | None = None


class AgentsConfig(Section):
    defaults: AgentDefaults = Field(default_factory=AgentDefaults)
    entries: list[AgentConfig] = Field(
        default_factory=lambda: [AgentConfig(id="main", default=True)], alias="list"
    )

    @field_validator("entries")
    @classmethod
    def _unique_ids(cls, agents: list[AgentConfig]) -> list[AgentConfig]:
        seen: set[str] = set()
        for agent in agents:
            if agent.id in seen:
                raise ValueError(f"agent id {agent.id!r} appears twice")
            seen.add(agent.id)
        if sum(agent.default for agent in agents) > 1:
            raise ValueError("more than one agent is marked default")
        return agents


def cache_retention_of(
    defaults: AgentDefaults, entry: AgentConfig, model_ref: str
) -> CacheRetention | None:
    """OpenClaw's merge order, later wins: `agents.defaults.params`, the defaults' entry for the
    model, the agent's own entry for it, the agent's `params`."""
    layers = [
        defaults.params,
        (defaults.models.get(model_ref) or ModelSettings()).params,
        ((entry.models or {}).get(model_ref) or ModelSettings()).params,
        entry.params or ModelParams(),
    ]
    chosen: CacheRetention | None = None
    for params in layers:
        chosen = params.cache_retention or chosen
    return chosen
