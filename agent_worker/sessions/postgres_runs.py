"""The PostgreSQL store's runs (run_rows.py): its half of the store interface for them."""

from __future__ import annotations

import asyncpg

from agent_worker.sessions.postgres_errors import store_errors
from agent_worker.sessions.postgres_schema import RUNS_TABLE
from agent_worker.sessions.run_rows import RunRecord, run_of, run_sql

_RUNS = run_sql(RUNS_TABLE, lambda number: f"${number}")


class PostgresRuns:
    """Mixed into PostgresSessionStore, whose pool it uses."""

    @property
    def pool(self) -> asyncpg.Pool:
        raise NotImplementedError

    async def claim_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        with store_errors("storing the run"):
            async with self.pool.acquire() as connection:
                status = await connection.execute(_RUNS.insert, *run.values())
                if status.endswith(" 1") or run.replay_key is None:
                    return run, status.endswith(" 1")
                return run_of(await connection.fetchrow(_RUNS.by_key, run.replay_key)), False

    async def start_run(self, run_id: str, holder: str, now: float) -> bool:
        with store_errors("starting the run"):
            status = await self.pool.execute(_RUNS.start, run_id, holder, now)
        return bool(status.endswith(" 1"))

    async def finish_run(
        self, run_id: str, status: str, finished_at: float, error: str, answer: str
    ) -> None:
        with store_errors("finishing the run"):
            await self.pool.execute(_RUNS.finish, run_id, status, finished_at, error, answer)

    async def get_run(self, run_id: str) -> RunRecord | None:
        with store_errors("reading the run"):
            row = await self.pool.fetchrow(_RUNS.by_id, run_id)
        return None if row is None else run_of(row)

    async def list_runs(self, session_key: str, limit: int) -> list[RunRecord]:
        with store_errors("listing the runs"):
            rows = await self.pool.fetch(_RUNS.by_session, session_key, limit)
        return list(map(run_of, rows))

    async def touch_runs(self, holder: str, now: float) -> None:
        with store_errors("refreshing the runs"):
            await self.pool.execute(_RUNS.touch, holder, now)

    async def sweep_runs(self, now: float, stale_before: float) -> list[RunRecord]:
        with store_errors("sweeping the runs"):
            rows = await self.pool.fetch(_RUNS.sweep, now, stale_before)
        return list(map(run_of, rows))
