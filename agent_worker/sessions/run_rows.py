"""Runs (webhook-started turns) as both stores keep them: one row per run, its replay key
unique so that a second delivery finds the first's run instead of starting another. The SQL
here is the same for SQLite and PostgreSQL but for the placeholders (`?` or `$n`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

QUEUED, RUNNING, COMPLETED, FAILED = "queued", "running", "completed", "failed"
UNFINISHED = (QUEUED, RUNNING)
# Finished by another worker's sweep: no one refreshed it (alive_at) for this long.
WORKER_STOPPED = "the worker running it stopped before it finished"

RUN_COLUMNS = (
    "run_id, replay_key, status, agent_id, session_key, hook, name, owner, created_at,"
    " finished_at, error, answer, holder, alive_at"
)


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    replay_key: str | None
    status: str
    agent_id: str
    session_key: str
    hook: str
    name: str
    owner: str
    created_at: float
    finished_at: float | None = None
    error: str = ""
    answer: str = ""
    holder: str = ""  # the worker running it
    alive_at: float = 0.0  # when its worker last said it still runs it

    def values(self) -> tuple[object, ...]:
        return (
            self.run_id,
            self.replay_key,
            self.status,
            self.agent_id,
            self.session_key,
            self.hook,
            self.name,
            self.owner,
            self.created_at,
            self.finished_at,
            self.error,
            self.answer,
            self.holder,
            self.alive_at,
        )


def run_of(row: tuple[object, ...] | object) -> RunRecord:
    """A row of RUN_COLUMNS (a tuple, or asyncpg's Record) as a record."""
    return RunRecord(*tuple(row))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class RunSql:
    """The statements of one store, in its placeholder style."""

    insert: str  # does nothing when the replay key is stored already
    by_key: str
    by_id: str
    by_session: str
    finish: str  # status, finished_at, error, answer where run_id and unfinished
    start: str  # running, holder, alive_at where run_id and queued
    touch: str  # alive_at where holder and unfinished
    sweep: str  # failed where unfinished and alive_at before; the runs it failed
    stale: str  # whether the sweep would find one


def run_sql(table: str, placeholder: Callable[[int], str]) -> RunSql:
    p = placeholder
    values = ", ".join(p(n) for n in range(1, 15))
    select = f"SELECT {RUN_COLUMNS} FROM {table}"
    unfinished = f"status IN ('{QUEUED}', '{RUNNING}')"
    return RunSql(
        insert=f"INSERT INTO {table} ({RUN_COLUMNS}) VALUES ({values}) ON CONFLICT DO NOTHING",
        by_key=f"{select} WHERE replay_key = {p(1)}",
        by_id=f"{select} WHERE run_id = {p(1)}",
        by_session=(
            f"{select} WHERE session_key = {p(1)} ORDER BY created_at DESC, run_id LIMIT {p(2)}"
        ),
        finish=(
            f"UPDATE {table} SET status = {p(2)}, finished_at = {p(3)}, error = {p(4)},"
            f" answer = {p(5)} WHERE run_id = {p(1)} AND {unfinished}"
        ),
        start=(
            f"UPDATE {table} SET status = '{RUNNING}', holder = {p(2)}, alive_at = {p(3)}"
            f" WHERE run_id = {p(1)} AND status = '{QUEUED}'"
        ),
        touch=f"UPDATE {table} SET alive_at = {p(2)} WHERE holder = {p(1)} AND {unfinished}",
        sweep=(
            f"UPDATE {table} SET status = '{FAILED}', finished_at = {p(1)},"
            f" error = '{WORKER_STOPPED}' WHERE {unfinished} AND alive_at < {p(2)}"
            f" RETURNING {RUN_COLUMNS}"
        ),
        stale=f"SELECT 1 FROM {table} WHERE {unfinished} AND alive_at < {p(1)} LIMIT 1",
    )
