"""What a turn's model calls used and cost: one record per call (each step of a tool loop,
each compaction summary, the model that answered after a fallback), priced from the model
catalog's `cost` in OpenClaw's shape (USD per million tokens: `input`, `output`, `cacheRead`,
`cacheWrite`), counted in the worker's metrics when the call ends and stored with the turn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from agent_worker.domain import TurnBudget, TurnSpend, Usage
from agent_worker.metrics import WorkerMetrics
from services.provider_config import ProviderConfig

_PER_TOKEN = 1e-6  # catalog prices are per million tokens
# A /tools/invoke call is a usage record of its own, with no tokens: model "tool/<its name>".
TOOL_PROVIDER = "tool"


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """One model call: the model that answered, its tokens, what they cost (None: the
    catalog has no price for it)."""

    provider: str
    model: str
    usage: Usage
    cost_usd: float | None


def cost_usd(prices: Mapping[str, Any], usage: Usage) -> float | None:
    """The call's price by the catalog entry's `cost`; cached tokens without a price of their
    own are priced as input. None when the entry names no price."""
    if not prices:
        return None
    input_price = float(prices.get("input") or 0)
    cache_read = usage.cache_read_tokens
    cache_write = usage.cache_write_tokens
    fresh_input = max(usage.prompt_tokens - cache_read - cache_write, 0)
    total = (
        fresh_input * input_price
        + cache_read * float(prices.get("cacheRead", input_price) or 0)
        + cache_write * float(prices.get("cacheWrite", input_price) or 0)
        + usage.completion_tokens * float(prices.get("output") or 0)
    )
    return total * _PER_TOKEN


UsageGroup = Literal["identity", "agent", "model", "day", "session"]


@dataclass(frozen=True, slots=True)
class UsageQuery:
    start: float  # Unix seconds, inclusive
    end: float  # Unix seconds, exclusive
    group_by: tuple[UsageGroup, ...] = ()
    identity: str | None = None  # None: everyone's


@dataclass(frozen=True, slots=True)
class UsageSums:
    """One group's sums; the groups not asked for are ''."""

    identity: str
    agent: str
    model: str
    day: str
    session: str
    requests: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float


class UsageMeter:
    """Prices and counts a worker's model calls."""

    def __init__(self, providers: Mapping[str, ProviderConfig], metrics: WorkerMetrics) -> None:
        self._providers = providers
        self._metrics = metrics
        self._prices: dict[tuple[str, str], Mapping[str, Any]] = {}

    def _prices_of(self, provider: str, model: str) -> Mapping[str, Any]:
        key = (provider, model)
        prices = self._prices.get(key)
        if prices is None:
            config = self._providers.get(provider)
            entry = config.model_entry(model) if config is not None else None
            prices = self._prices[key] = entry.cost if entry is not None else {}
        return prices

    def affordable_answer(
        self, provider: str, model: str, usd: float, prompt_tokens: int
    ) -> int | None:
        """The most answer tokens `usd` pays for after a prompt of `prompt_tokens` (read at
        the input price); None when the model has no price to cap by."""
        prices = self._prices_of(provider, model)
        output_price = float(prices.get("output") or 0)
        if not output_price:
            return None
        left = usd - prompt_tokens * float(prices.get("input") or 0) * _PER_TOKEN
        return int(left / (output_price * _PER_TOKEN))

    def record(self, agent_id: str, provider: str, model: str, usage: Usage) -> ModelUsage:
        cost = cost_usd(self._prices_of(provider, model), usage)
        tokens = self._metrics.model_tokens_by
        for kind, count in (
            ("input", usage.prompt_tokens),
            ("output", usage.completion_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("cache_write", usage.cache_write_tokens),
        ):
            if count:
                tokens(agent_id, provider, model, kind).inc(count)
        if cost:
            self._metrics.model_cost_by(agent_id, provider, model).inc(cost)
        return ModelUsage(provider, model, usage, cost)


class TurnUsage:
    """One turn's model calls, recorded as each ends."""

    def __init__(self, meter: UsageMeter, agent_id: str) -> None:
        self._meter = meter
        self._agent_id = agent_id
        self.calls: list[ModelUsage] = []

    def add(self, provider: str, model: str, usage: Usage) -> None:
        self.calls.append(self._meter.record(self._agent_id, provider, model, usage))

    def spent(self) -> TurnSpend:
        return TurnSpend(
            sum(call.usage.total_tokens for call in self.calls),
            sum(call.cost_usd or 0.0 for call in self.calls),
        )

    def answer_cap(
        self, budget: TurnBudget | None, provider: str, model: str, prompt_tokens: int
    ) -> int | None:
        """The most answer tokens `budget` leaves for a call of `prompt_tokens` (below 1:
        none); None when nothing caps it."""
        if budget is None:
            return None
        spent = self.spent()
        caps = []
        if budget.tokens is not None:
            caps.append(budget.tokens - spent.tokens - prompt_tokens)
        if budget.usd is not None:
            left = budget.usd - spent.cost_usd
            affordable = self._meter.affordable_answer(provider, model, left, prompt_tokens)
            if affordable is not None:
                caps.append(affordable)
        return min(caps, default=None)
