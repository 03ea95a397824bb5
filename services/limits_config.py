"""`gateway.limits`: what one identity, or one agent, may start (OpenClaw has no such keys;
these follow its style). Enforced by the edge: gateway_edge/limits.py, docs/http-api.md."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from services.config_section import Section


class LimitSet(Section):
    """`gateway.limits.default`, `.identities.<who>`, `.agents.<id>`: unset is no limit."""

    concurrent_turns: int | None = Field(None, alias="concurrentTurns", ge=1)
    requests_per_minute: int | None = Field(None, alias="requestsPerMinute", ge=1)
    # Input + output tokens of every model call (cache reads included), and their USD.
    tokens_per_minute: int | None = Field(None, alias="tokensPerMinute", ge=1)
    tokens_per_day: int | None = Field(None, alias="tokensPerDay", ge=1)
    usd_per_day: float | None = Field(None, alias="usdPerDay", gt=0)
    usd_per_month: float | None = Field(None, alias="usdPerMonth", gt=0)

    def over(self, other: LimitSet) -> LimitSet:
        """These limits, each unset one taken from `other`."""
        mine = self.model_dump(exclude_none=True)
        return other.model_copy(update=mine)


class LimitsConfig(Section):
    """`gateway.limits`: per identity and per agent, shared by every edge through `store`."""

    # "redis://…": every edge counts in that Redis; unset: in PostgreSQL when that is the
    # session store (sessions.store), else in each edge's own process.
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
