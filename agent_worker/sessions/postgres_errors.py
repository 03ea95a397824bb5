"""The PostgreSQL store's one error boundary: every driver error leaves as SessionStoreError."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from agent_worker.errors import SessionStoreError

DRIVER_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


@contextmanager
def store_errors(doing: str) -> Iterator[None]:
    try:
        yield
    except DRIVER_ERRORS as error:
        raise SessionStoreError(
            f"the session store (PostgreSQL) failed while {doing}: {error}"
        ) from None
