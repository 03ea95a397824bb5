"""What one identity's requests on one agent count (`Plan`), worked out once from the limits
that apply to them: requests per minute, budgets and turns at once, for the identity and for
the agent."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gateway_edge.limit_counts import Count, Period
from services.limits_config import LimitSet

MICRO_USD = 1_000_000  # USD are counted in millionths: the stores add integers
_UNLIMITED = LimitSet()


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget of a LimitSet: its key's prefix, the window it is counted in, and whether it
    counts tokens or USD."""

    field: str
    prefix: str
    period: Period
    in_usd: bool


BUDGETS = (
    Budget("tokens_per_minute", "tpm", "minute", in_usd=False),
    Budget("tokens_per_day", "tpd", "day", in_usd=False),
    Budget("usd_per_day", "usd-day", "day", in_usd=True),
    Budget("usd_per_month", "usd-month", "month", in_usd=True),
)


@dataclass(frozen=True, slots=True)
class Check:
    """One count a request makes: its requests per minute (budget None) or one budget."""

    scope: str  # "identity" or "agent"
    who: str
    budget: Budget | None
    limit: float
    key: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What one identity's requests on one agent count, worked out once: the checks and the
    counts they make (all, or without the budgets for a request that spends nothing)."""

    places: tuple[tuple[str, int, str, str], ...]  # key, at most, scope, who
    place_limits: tuple[tuple[str, int], ...]
    spending: tuple[tuple[Check, ...], tuple[Count, ...]]
    not_spending: tuple[tuple[Check, ...], tuple[Count, ...]]

    @classmethod
    def of(cls, checks: list[Check], places: list[tuple[str, int, str, str]]) -> Plan:
        counts = [
            Count(check.key, check.budget.period, 0, _ceiling(check.budget, check.limit))
            if check.budget is not None
            else Count(check.key, "minute", 1, int(check.limit))
            for check in checks
        ]
        free = [index for index, check in enumerate(checks) if check.budget is None]
        return cls(
            tuple(places),
            tuple((key, limit) for key, limit, _, _ in places),
            (tuple(checks), tuple(counts)),
            (tuple(checks[i] for i in free), tuple(counts[i] for i in free)),
        )


def _ceiling(budget: Budget, limit: float) -> int:
    """The most a budget's count may read and still let a request in: just under its limit."""
    return math.ceil(limit * MICRO_USD if budget.in_usd else limit) - 1


def plan_of(identity: str, mine: LimitSet, agent: str, theirs: LimitSet | None) -> Plan:
    """`mine`: the identity's limits (over the default); `theirs`: the agent's, if any."""
    checks: list[Check] = []
    places: list[tuple[str, int, str, str]] = []
    for scope, who, limits in (
        ("identity", identity, mine),
        ("agent", agent, theirs or _UNLIMITED),
    ):
        if limits.requests_per_minute is not None:
            rpm = limits.requests_per_minute
            checks.append(Check(scope, who, None, rpm, f"rpm:{scope}:{who}"))
        for budget in BUDGETS:
            limit = getattr(limits, budget.field)
            if limit is not None:
                checks.append(Check(scope, who, budget, limit, f"{budget.prefix}:{scope}:{who}"))
        if limits.concurrent_turns is not None:
            places.append((f"turns:{scope}:{who}", limits.concurrent_turns, scope, who))
    return Plan.of(checks, places)
