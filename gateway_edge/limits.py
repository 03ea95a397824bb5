"""Limits on turns per identity and per agent (`gateway.limits`): requests per minute, turns
at once, and budgets of tokens (per minute and per day) and USD (per day and per month).
Counted where gateway_edge/limit_counts.py says, so that every edge of a deployment shares them.

A turn is admitted while each of its budgets has room left; the room goes to the worker with
the turn (RunTurnRequest.budget), which caps the turn's answers to it, and what the turn spent
(TurnFinished.spent) is charged to every budget when it finishes.

A limit store that does not answer is `onStoreDown`'s choice: "open" admits the turn, logs a
warning and counts the failure (`clawgate_edge_limit_store_failures_total`); "closed" refuses
it with 503.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway_edge.errors import ApiError
from gateway_edge.limit_counts import Addition, Counts, LimitStoreDown, Period, window
from services.limits_config import LimitsConfig, LimitSet

log = logging.getLogger("clawgate.edge.limits")
RequestHeaders = list[tuple[bytes, bytes]]
MICRO_USD = 1_000_000  # USD are counted in millionths: the stores add integers


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


@dataclass(slots=True)
class Charge:
    """A budget a finished turn's spend is added to."""

    key: str
    period: Period
    in_usd: bool


@dataclass
class Admission:
    """A turn let in: the headers its answer carries, the room its budgets leave (None: no
    budget of that kind), and its places to give back and budgets to charge."""

    headers: RequestHeaders = field(default_factory=list)
    tokens_left: int | None = None
    usd_left: float | None = None
    charges: list[Charge] = field(default_factory=list)
    places: list[tuple[str, str]] = field(default_factory=list)  # (key, token) to give back
    counts: Counts | None = None  # where the places are held; None once given back
    on_failure: Callable[[], None] = lambda: None

    async def charge(self, tokens: int, cost_usd: float) -> None:
        """Adds what the turn spent to each of its budgets (a store that does not answer then
        loses this charge: logged and counted, the answer goes on)."""
        if not self.charges or self.counts is None:
            return
        additions: list[Addition] = [
            (charge.key, charge.period, round(cost_usd * MICRO_USD) if charge.in_usd else tokens)
            for charge in self.charges
        ]
        try:
            await self.counts.add(additions)
        except LimitStoreDown as down:
            self.on_failure()
            log.warning("limit store: a turn's spend was not charged (%s)", down)

    async def release(self) -> None:
        counts, self.counts = self.counts, None
        if counts is None:
            return
        for key, token in self.places:
            try:
                await counts.leave(key, token)
            except LimitStoreDown as down:
                log.warning("limit store: a place was not given back (%s); its lease ends it", down)


NO_LIMITS = Admission()
_UNLIMITED = LimitSet()


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
        self.active = bool(
            config.identities or config.agents or config.default.model_dump(exclude_none=True)
        )

    def _of(self, identity: str, agent: str) -> tuple[LimitSet, LimitSet]:
        mine = self._identities.get(identity, self._config.default)
        return mine, self._config.agents.get(agent, _UNLIMITED)

    async def close(self) -> None:
        await self._counts.close()

    async def admit(self, identity: str, agent: str, spends: bool = True) -> Admission:
        """Lets a turn of `identity` on `agent` in, or raises ApiError (429, or 503 when the
        store is down and onStoreDown is "closed"). `spends`: the call spends tokens, so
        its budgets are checked."""
        if not self.active:
            return NO_LIMITS
        try:
            return await self._admit(identity, agent, spends)
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

    async def _admit(self, identity: str, agent: str, spends: bool) -> Admission:
        mine, agents = self._of(identity, agent)
        scopes = (("identity", identity, mine), ("agent", agent, agents))
        admission = Admission(counts=self._counts, on_failure=self._on_failure)
        # The requests are counted, and the budgets read (an addition of 0), in one step.
        additions: list[Addition] = []
        checks: list[tuple[str, str, Budget | None, float]] = []  # scope, who, budget, limit
        for scope, who, limits in scopes:
            if limits.requests_per_minute is not None:
                additions.append((f"rpm:{scope}:{who}", "minute", 1))
                checks.append((scope, who, None, limits.requests_per_minute))
            for budget in BUDGETS if spends else ():
                limit = getattr(limits, budget.field)
                if limit is not None:
                    key = f"{budget.prefix}:{scope}:{who}"
                    additions.append((key, budget.period, 0))
                    checks.append((scope, who, budget, limit))
                    admission.charges.append(Charge(key, budget.period, budget.in_usd))
        totals = await self._counts.add(additions) if additions else []
        now = time.time()
        for (scope, who, checked, limit), total in zip(checks, totals, strict=True):
            _, reset = window(checked.period if checked else "minute", now)
            if checked is None:
                self._count_request(admission, scope, who, int(limit), total, reset)
            else:
                self._check_budget(admission, scope, who, checked, limit, total, reset)
        for scope, who, limits in scopes:
            at_once = limits.concurrent_turns
            if at_once is None:
                continue
            key = f"turns:{scope}:{who}"
            token = await self._counts.enter(key, at_once)
            if token is None:
                await admission.release()
                raise rate_limited(
                    f"Too many turns at once for {scope} {who!r}: at most {at_once}"
                    " (gateway.limits).",
                    1,
                    admission.headers,
                )
            admission.places.append((key, token))
        return admission

    @staticmethod
    def _count_request(
        admission: Admission, scope: str, who: str, limit: int, count: int, reset: float
    ) -> None:
        if scope == "identity":
            admission.headers += _rate_headers("requests", limit, count, reset)
        if count > limit:
            raise rate_limited(
                f"Rate limit reached for {scope} {who!r}: {limit} requests per minute"
                " (gateway.limits).",
                reset,
                admission.headers,
            )

    @staticmethod
    def _check_budget(
        admission: Admission,
        scope: str,
        who: str,
        budget: Budget,
        limit: float,
        spent: int,
        reset: float,
    ) -> None:
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
            if scope == "identity" and budget.period == "minute":
                admission.headers += _rate_headers("tokens", int(limit), spent, reset)
        if not exhausted:
            return
        said = budget.field.replace("_", " ").replace("usd", "USD")
        message = (
            f"Budget reached for {scope} {who!r}: {limit:g} {said} (gateway.limits);"
            f" it renews in {max(math.ceil(reset), 1)} s."
        )
        if budget.period == "minute":
            raise rate_limited(message, reset, admission.headers)
        raise out_of_quota(message, reset, admission.headers)


def _rate_headers(kind: str, limit: int, used: int, reset: float) -> RequestHeaders:
    """OpenAI's rate-limit headers for `kind` (requests or tokens)."""
    return [
        (f"x-ratelimit-limit-{kind}".encode(), str(limit).encode()),
        (f"x-ratelimit-remaining-{kind}".encode(), str(max(limit - used, 0)).encode()),
        (f"x-ratelimit-reset-{kind}".encode(), f"{max(math.ceil(reset), 1)}s".encode()),
    ]
