"""`gateway.limits`: what one identity, or one agent, may start (OpenClaw has no such keys;
these follow its style). Enforced by the edge: gateway_edge/limits.py, docs/http-api.md."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from services.config_section import Section


class LimitSet(Section):
    """`gateway.limits.default`, `.identities.<who>`, `.agents.<id>`: unset is no limit."""

    concurrent_turns: int | None = Field(None, alias="concurrentTurns", ge=1)
    requests_per_minute: int | None = Field(None, alias="requestsPerMinute", ge=1)

    @model_validator(mode="after")
    def _only_enforced_keys(self) -> LimitSet:
        later = sorted(set(self.model_extra or {}) & _LIMITS_NOT_ENFORCED_YET)
        if later:
            raise ValueError(
                f"{', '.join(later)}: not enforced yet (token and USD budgets come next);"
                " remove the key rather than rely on it"
            )
        return self

    def over(self, other: LimitSet) -> LimitSet:
        """These limits, each unset one taken from `other`."""
        return LimitSet(
            concurrentTurns=self.concurrent_turns or other.concurrent_turns,
            requestsPerMinute=self.requests_per_minute or other.requests_per_minute,
        )


_LIMITS_NOT_ENFORCED_YET = frozenset(
    {"tokensPerMinute", "tokensPerDay", "usdPerDay", "usdPerMonth"}
)


class LimitsConfig(Section):
    """`gateway.limits`: per identity and per agent, shared by every edge through `store`."""

    # "redis://…": every edge counts in that Redis; unset: in each edge's own process.
    store: str | None = None
    on_store_down: Literal["open", "closed"] = Field("open", alias="onStoreDown")
    default: LimitSet = Field(default_factory=LimitSet)
    identities: dict[str, LimitSet] = Field(default_factory=dict)
    agents: dict[str, LimitSet] = Field(default_factory=dict)

    @field_validator("store")
    @classmethod
    def _redis_url(cls, store: str | None) -> str | None:
        if store is not None and not store.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("gateway.limits.store: a redis:// (or rediss://) URL, or unset")
        return store
