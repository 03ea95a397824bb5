"""Limits on turns per identity and per agent (`gateway.limits`): requests per minute, turns
at once, and budgets of tokens (per minute and per day) and USD (per day and per month).
Counted where gateway_edge/limit_counts.py says, so that every edge of a deployment shares them.

A turn is admitted while each of its budgets has room left; the room goes to the worker with
the turn (RunTurnRequest.budget), which caps the turn's answers to it, and what the turn spent
(TurnFinished.spent) is charged to every budget when it finishes. Each request makes two calls
of the store: one when it starts, one when it ends (limit_counts.Counts).

A limit store that does not answer is `onStoreDown`'s choice: "open" admits the turn, logs a
warning and counts the failure (`clawgate_edge_limit_store_failures_total`); "closed" refuses
it with 503.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway_edge.errors import ApiError
from gateway_edge.limit_counts import Count, Counts, LimitStoreDown, window
from gateway_edge.limit_plan import MICRO_USD, Budget, Check, Plan, plan_of
from services.limits_config import LimitsConfig

log = logging.getLogger("clawgate.edge.limits")
RequestHeaders = list[tuple[bytes, bytes]]


def rate_limited(message: str, retry_after: float, headers: RequestHeaders) -> ApiError:
    error = ApiError(429, message, "rate_limit_error", code="rate_limit_exceeded")
    error.headers.update((name.decode(), value.decode()) for name, value in headers)
    error.headers["retry-after"] = str(max(math.ceil(retry_after), 1))
    return error


def out_of_quota(message: str, retry_after: float, headers: RequestHeaders) -> ApiError:
    """A spent budget: OpenAI's insufficient_quota (429), with the wait until its window ends."""
    error = rate_limited(message, retry_after, headers)
    error.type = error.code = "insufficient_quota"
    return error


@dataclass
class Admission:
    """A request let in: the headers its answer carries, the room its budgets leave (None: no
    budget of that kind), and what to charge and give back when it ends."""

    headers: RequestHeaders = field(default_factory=list)
    tokens_left: int | None = None
    usd_left: float | None = None
    charges: list[tuple[Budget, str]] = field(default_factory=list)  # budget, key
    places: list[str] = field(default_factory=list)
    token: str = ""
    counts: Counts | None = None  # None once it ended
    on_failure: Callable[[], None] = lambda: None

    async def finish(self, tokens: int, cost_usd: float) -> None:
        """Charges what the request spent to its budgets and gives its places back (a store
        that does not answer loses the charge: logged and counted, the answer goes on)."""
        counts, self.counts = self.counts, None
        if counts is None:
            return
        charges = [
            Count(key, budget.period, round(cost_usd * MICRO_USD) if budget.in_usd else tokens)
            for budget, key in self.charges
            if (cost_usd if budget.in_usd else tokens)
        ]
        if not charges and not self.places:  # nothing to tell the store
            return
        try:
            await counts.give_back(charges, self.places, self.token)
        except LimitStoreDown as down:
            self.on_failure()
            log.warning("limit store: a spend or a place was not given back (%s)", down)

    async def release(self) -> None:
        """Ends a request that spent nothing known (failed, cancelled): its places go back."""
        await self.finish(0, 0.0)


NO_LIMITS = Admission()
# Plans kept at most: one per identity and agent that asked (people behind one proxy).
_PLANS_KEPT = 10_000


class Limits:
    def __init__(
        self, config: LimitsConfig, counts: Counts, on_failure: Callable[[], None]
    ) -> None:
        self._config = config
        self._counts = counts
        self._on_failure = on_failure
        # Each named identity's limits over the default, worked out once.
        self._identities = {
            who: limits.over(config.default) for who, limits in config.identities.items()
        }
        self._plans: dict[tuple[str, str], Plan] = {}
        # A place's token: this edge, then a number of its own.
        self._edge = f"{uuid.uuid4().hex[:12]}:"
        self._tokens = itertools.count()
        self.active = bool(
            config.identities or config.agents or config.default.model_dump(exclude_none=True)
        )

    def _plan(self, identity: str, agent: str) -> Plan:
        plan = self._plans.get((identity, agent))
        if plan is not None:
            return plan
        mine = self._identities.get(identity, self._config.default)
        theirs = self._config.agents.get(agent)
        if len(self._plans) >= _PLANS_KEPT:
            self._plans.clear()
        plan = self._plans[identity, agent] = plan_of(identity, mine, agent, theirs)
        return plan

    async def close(self) -> None:
        await self._counts.close()

    async def admit(self, identity: str, agent: str, spends: bool = True) -> Admission:
        """Lets a request of `identity` on `agent` in, or raises ApiError (429, or 503 when
        the store is down and onStoreDown is "closed"). `spends`: the request spends tokens,
        so its budgets are checked and charged."""
        if not self.active:
            return NO_LIMITS
        try:
            return await self._admit(self._plan(identity, agent), spends)
        except LimitStoreDown as down:
            self._on_failure()
            if self._config.on_store_down == "closed":
                raise ApiError(
                    503,
                    "The limit store does not answer; try again shortly.",
                    "api_error",
                    code="limits_unavailable",
                    headers={"retry-after": "1"},
                ) from None
            log.warning("limit store down (%s): the turn goes on unlimited (onStoreDown)", down)
            return NO_LIMITS

    async def _admit(self, plan: Plan, spends: bool) -> Admission:
        checks, counts = plan.spending if spends else plan.not_spending
        token = f"{self._edge}{next(self._tokens)}"
        taken = await self._counts.take(counts, plan.place_limits, token)
        admission = Admission(
            token=token,
            places=[key for key, _ in plan.place_limits],
            counts=self._counts,
            on_failure=self._on_failure,
        )
        now = time.time()
        refusal: ApiError | None = None
        for check, total in zip(checks, taken.totals, strict=True):
            _, reset = window(check.budget.period if check.budget else "minute", now)
            if check.budget is None:
                refused = _count_request(admission, check, total, reset)
            else:
                admission.charges.append((check.budget, check.key))
                refused = _check_budget(admission, check, check.budget, total, reset)
            refusal = refusal or refused
        if refusal is None and taken.full is not None:
            _, at_once, scope, who = plan.places[taken.full]
            message = f"Too many turns at once for {scope} {who!r}: at most {at_once}"
            refusal = rate_limited(f"{message} (gateway.limits).", 1, admission.headers)
        if refusal is not None:
            # The headers of every limit, whichever refused.
            refusal.headers.update((n.decode(), v.decode()) for n, v in admission.headers)
            raise refusal
        return admission


def _count_request(admission: Admission, check: Check, count: int, reset: float) -> ApiError | None:
    limit = int(check.limit)
    if check.scope == "identity":
        admission.headers += _rate_headers("requests", limit, count, reset)
    if count <= limit:
        return None
    return rate_limited(
        f"Rate limit reached for {check.scope} {check.who!r}: {limit} requests per minute"
        " (gateway.limits).",
        reset,
        [],
    )


def _check_budget(
    admission: Admission, check: Check, budget: Budget, spent: int, reset: float
) -> ApiError | None:
    limit = check.limit
    if budget.in_usd:
        left_usd = limit - spent / MICRO_USD
        if admission.usd_left is None or left_usd < admission.usd_left:
            admission.usd_left = left_usd
        exhausted = left_usd <= 0
    else:
        left = int(limit) - spent
        if admission.tokens_left is None or left < admission.tokens_left:
            admission.tokens_left = left
        exhausted = left <= 0
        if check.scope == "identity" and budget.period == "minute":
            admission.headers += _rate_headers("tokens", int(limit), spent, reset)
    if not exhausted:
        return None
    said = budget.field.replace("_", " ").replace("usd", "USD")
    message = (
        f"Budget reached for {check.scope} {check.who!r}: {limit:g} {said} (gateway.limits);"
        f" it renews in {max(math.ceil(reset), 1)} s."
    )
    if budget.period == "minute":
        return rate_limited(message, reset, [])
    return out_of_quota(message, reset, [])


def _rate_headers(kind: str, limit: int, used: int, reset: float) -> RequestHeaders:
    """OpenAI's rate-limit headers for `kind` (requests or tokens)."""
    return [
        (f"x-ratelimit-limit-{kind}".encode(), str(limit).encode()),
        (f"x-ratelimit-remaining-{kind}".encode(), str(max(limit - used, 0)).encode()),
        (f"x-ratelimit-reset-{kind}".encode(), f"{max(math.ceil(reset), 1)}s".encode()),
    ]
