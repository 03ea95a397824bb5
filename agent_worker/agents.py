"""Agents as configured: identity, model, system prompt, defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from agent_worker.domain import Sampling
from agent_worker.errors import UnknownAgentError
from services.agent_config import (
    AgentConfig,
    AgentDefaults,
    CacheRetention,
    cache_retention_of,
    model_refs,
)
from services.config import ClawgateConfig
from services.mcp_config import DEFAULT_MAX_STEPS, matches_any


@dataclass(frozen=True, slots=True)
class CompactionSettings:
    """`compaction` as configured for one agent (docs/sessions.md)."""

    enabled: bool = True
    keep_recent_tokens: int = 20_000
    reserve_tokens_floor: int = 20_000
    model: str = ""  # "provider/model" for summaries; the agent's own when empty
    timeout_seconds: float = 120.0


def compaction_settings(defaults: AgentDefaults, entry: AgentConfig) -> CompactionSettings:
    base, own = defaults.compaction, entry.compaction

    def pick(name: str):  # type: ignore[no-untyped-def]
        value = getattr(own, name) if own is not None else None
        return getattr(base, name) if value is None else value

    return CompactionSettings(
        enabled=pick("enabled"),
        keep_recent_tokens=pick("keep_recent_tokens"),
        reserve_tokens_floor=pick("reserve_tokens_floor"),
        model=pick("model") or "",
        timeout_seconds=pick("timeout_seconds"),
    )


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    name: str
    provider: str
    model: str
    system_prompt: str
    history_limit: int
    turn_timeout: float
    sampling: Sampling
    is_default: bool
    # MCP tools it may use (`<server>__<tool>` names or globs); deny wins
    tools_allow: tuple[str, ...] = ()
    tools_deny: tuple[str, ...] = ()
    max_steps: int = DEFAULT_MAX_STEPS
    context_tokens: int | None = None  # a cap on the model's window
    compaction: CompactionSettings = field(default_factory=CompactionSettings)
    fallbacks: tuple[str, ...] = ()  # "provider/model" refs, tried in order after the model
    embedding_model: str = ""  # "provider/model" for embeddings; empty: the agent's own
    # How long its model's provider keeps the prompt's prefix cached; None: nothing asked.
    cache_retention: CacheRetention | None = None

    def may_use(self, tool_name: str) -> bool:
        return matches_any(tool_name, list(self.tools_allow)) and not matches_any(
            tool_name, list(self.tools_deny)
        )

    @property
    def model_ref(self) -> str:
        return f"{self.provider}/{self.model}"


class AgentRegistry:
    def __init__(self, agents: list[Agent]) -> None:
        self._agents = {agent.id: agent for agent in agents}

    @classmethod
    def from_config(cls, config: ClawgateConfig) -> AgentRegistry:
        defaults = config.agents.defaults
        default_id = config.default_agent_id
        agents = []
        for entry in config.agents.entries:
            primary, *fallbacks = model_refs(entry.model or defaults.model)
            provider, _, model = primary.partition("/")
            sampling = entry.sampling or defaults.sampling
            tools = entry.tools
            allow = tools.allow if tools and tools.allow is not None else defaults.tools.allow
            deny = tools.deny if tools and tools.deny is not None else defaults.tools.deny
            max_steps = (tools and tools.max_steps) or defaults.tools.max_steps
            agents.append(
                Agent(
                    id=entry.id,
                    name=entry.name or entry.id,
                    provider=provider,
                    model=model or provider,
                    system_prompt=entry.system_prompt
                    if entry.system_prompt is not None
                    else defaults.system_prompt,
                    history_limit=entry.history_limit
                    if entry.history_limit is not None
                    else defaults.history_limit,
                    turn_timeout=(entry.turn_timeout_ms or defaults.turn_timeout_ms) / 1000,
                    sampling=Sampling(
                        temperature=sampling.temperature,
                        top_p=sampling.top_p,
                        max_tokens=sampling.max_tokens,
                    ),
                    is_default=entry.id == default_id,
                    tools_allow=tuple(allow or ()),
                    tools_deny=tuple(deny or ()),
                    max_steps=max_steps or DEFAULT_MAX_STEPS,
                    context_tokens=entry.context_tokens or defaults.context_tokens,
                    compaction=compaction_settings(defaults, entry),
                    fallbacks=tuple(fallbacks),
                    embedding_model=entry.embedding_model or "",
                    cache_retention=_cache_retention(config, entry, primary),
                )
            )
        return cls(agents)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._agents.values())

    def get(self, agent_id: str) -> Agent:
        agent = self._agents.get(agent_id)
        if agent is None:
            known = ", ".join(sorted(self._agents)) or "none"
            raise UnknownAgentError(f"unknown agent {agent_id!r} (configured: {known})")
        return agent


def _cache_retention(
    config: ClawgateConfig, entry: AgentConfig, model_ref: str
) -> CacheRetention | None:
    """The configured retention; unset, "short" for an Anthropic Messages provider (whose
    caching must be asked for), nothing elsewhere."""
    chosen = cache_retention_of(config.agents.defaults, entry, model_ref)
    provider = config.models.providers.get(model_ref.partition("/")[0])
    if chosen is None and provider is not None and provider.api == "anthropic-messages":
        return "short"
    return chosen


_SAMPLING_FIELDS = tuple(field.name for field in dataclasses.fields(Sampling))


def merged_sampling(agent_defaults: Sampling, requested: Sampling) -> Sampling:
    """The request's values win; the agent's defaults fill what the request left unset."""
    changes = {
        name: default
        for name in _SAMPLING_FIELDS
        if (default := getattr(agent_defaults, name)) is not None
        and getattr(requested, name) is None
    }
    return dataclasses.replace(requested, **changes) if changes else requested
