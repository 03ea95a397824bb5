"""The machine's PostgreSQL server for tests; tests skip with a reason when none answers."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from devkit.processes import POSTGRES_URL

__all__ = ["POSTGRES_URL", "postgres_reachable", "requires_postgres"]


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


def _admin(statement: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(POSTGRES_URL, timeout=10)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


def database_url(name: str) -> str:
    return POSTGRES_URL.rpartition("/")[0] + f"/{name}"


def create_database(name: str) -> str:
    """Creates an empty database on the test server; returns its URL."""
    _admin(f'CREATE DATABASE "{name}"')
    return database_url(name)


def drop_database(name: str) -> None:
    """Drops a database, ending the connections that still use it."""
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(url: str, statement: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(url, timeout=10)
        try:
            return list(await connection.fetch(statement, *args))
        finally:
            await connection.close()

    return asyncio.run(run())
