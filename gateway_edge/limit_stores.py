"""Which store counts `gateway.limits` (see limit_counts.py); a store's driver is imported only
when it is the one in use."""

from __future__ import annotations

from gateway_edge.limit_counts import Counts, LocalCounts
from services.config import POSTGRES_URL_PREFIXES


def counts_for(store: str | None, sessions_store: str) -> Counts:
    """`gateway.limits.store`'s Redis; unset, the session store's PostgreSQL, else this edge."""
    if store is not None:
        from gateway_edge.redis_counts import RedisCounts

        return RedisCounts(store)
    if sessions_store.startswith(POSTGRES_URL_PREFIXES):
        from gateway_edge.postgres_counts import PostgresCounts

        return PostgresCounts(sessions_store)
    return LocalCounts()
