"""The SQLite store's runs (run_rows.py): its half of the store interface for them."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

from agent_worker.sessions.run_rows import RunRecord, run_of, run_sql

T = TypeVar("T")
_RUNS = run_sql("runs", lambda number: f"?{number}")


class SqliteRuns:
    """Mixed into SqliteSessionStore, whose store thread (`_call`) it uses."""

    async def _call(self, work: Callable[[sqlite3.Connection], T], doing: str) -> T:
        raise NotImplementedError

    async def claim_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        def claim(connection: sqlite3.Connection) -> tuple[RunRecord, bool]:
            with connection:
                created = connection.execute(_RUNS.insert, run.values()).rowcount == 1
                if created or run.replay_key is None:
                    return run, created
                return run_of(connection.execute(_RUNS.by_key, (run.replay_key,)).fetchone()), False

        return await self._call(claim, "storing the run")

    async def start_run(self, run_id: str, holder: str, now: float) -> bool:
        return await self._write(_RUNS.start, (run_id, holder, now), "starting the run") == 1

    async def finish_run(
        self, run_id: str, status: str, finished_at: float, error: str, answer: str
    ) -> None:
        values = (run_id, status, finished_at, error, answer)
        await self._write(_RUNS.finish, values, "finishing the run")

    async def get_run(self, run_id: str) -> RunRecord | None:
        def read(connection: sqlite3.Connection) -> RunRecord | None:
            row = connection.execute(_RUNS.by_id, (run_id,)).fetchone()
            return None if row is None else run_of(row)

        return await self._call(read, "reading the run")

    async def list_runs(self, session_key: str, limit: int) -> list[RunRecord]:
        def read(connection: sqlite3.Connection) -> list[RunRecord]:
            return list(map(run_of, connection.execute(_RUNS.by_session, (session_key, limit))))

        return await self._call(read, "listing the runs")

    async def touch_runs(self, holder: str, now: float) -> None:
        await self._write(_RUNS.touch, (holder, now), "refreshing the runs")

    async def sweep_runs(self, now: float, stale_before: float) -> list[RunRecord]:
        def sweep(connection: sqlite3.Connection) -> list[RunRecord]:
            # Most sweeps find nothing: a read first, so they take no write lock from turns.
            if connection.execute(_RUNS.stale, (stale_before,)).fetchone() is None:
                return []
            with connection:
                return list(map(run_of, connection.execute(_RUNS.sweep, (now, stale_before))))

        return await self._call(sweep, "sweeping the runs")

    async def _write(self, sql: str, values: tuple[object, ...], doing: str) -> int:
        def write(connection: sqlite3.Connection) -> int:
            with connection:
                return connection.execute(sql, values).rowcount

        return await self._call(write, doing)
