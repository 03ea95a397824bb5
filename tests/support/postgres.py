"""The machine's PostgreSQL server for tests; tests skip with a reason when none answers."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pytest

POSTGRES_URL = os.environ.get(
    "CLAWGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def postgres_reachable() -> bool:
    async def probe() -> bool:
        try:
            connection = await asyncpg.connect(POSTGRES_URL, timeout=3)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        await connection.close()
        return True

    return asyncio.run(probe())


requires_postgres = pytest.mark.skipif(
    not postgres_reachable(), reason=f"no PostgreSQL server answers at {POSTGRES_URL}"
)
