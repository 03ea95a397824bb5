"""Runs on one worker over a real SQLite store (and the same store calls on PostgreSQL): one run
per replay key however many claim it at once, the answer stored in the session, failures and a
stopped worker's runs ending `failed`."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from agent_worker.agents import AgentRegistry
from agent_worker.errors import NotFoundError, UnknownAgentError
from agent_worker.runs import Runs
from agent_worker.sessions.postgres_store import PostgresSessionStore
from agent_worker.sessions.run_rows import FAILED, QUEUED, WORKER_STOPPED, RunRecord
from agent_worker.sessions.sqlite_store import SqliteSessionStore
from agent_worker.sessions.store import SessionStore
from agent_worker.turn_runner import TurnRunner
from clawgate.agent.v1 import agent_service_pb2 as pb
from tests.agent_worker.test_turn_runner import CONFIG, ScriptedProvider
from tests.support.postgres import POSTGRES_URL, requires_postgres


def runs_on(store: SqliteSessionStore, provider: ScriptedProvider) -> Runs:
    agents = AgentRegistry.from_config(CONFIG)
    runner = TurnRunner(
        agents, {"p": provider}, store, max_concurrent_turns=4, session_wait_timeout=5
    )
    return Runs(runner, store, agents)


async def finished(runs: Runs, run_id: str) -> pb.Run:
    for _ in range(200):
        run = (await runs.get(pb.GetRunRequest(run_id=run_id))).run
        if run.status in (pb.RUN_STATUS_COMPLETED, pb.RUN_STATUS_FAILED):
            return run
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run_id} did not finish")


async def test_a_run_answers_into_its_session(store: SqliteSessionStore) -> None:
    runs = runs_on(store, ScriptedProvider(["Filed ", "the issue."]))
    started = (await runs.start(pb.StartRunRequest(agent_id="main", message="new issue"))).run
    assert started.status == pb.RUN_STATUS_QUEUED and started.session_key.startswith("hook:")
    run = await finished(runs, started.id)
    assert run.status == pb.RUN_STATUS_COMPLETED and run.answer == "Filed the issue."
    assert run.finished_at >= run.created_at > 0
    stored = await store.load(run.session_key)
    assert [(m.role, m.text) for m in stored] == [
        ("user", "new issue"),
        ("assistant", "Filed the issue."),
    ]
    listed = await runs.list(pb.ListRunsRequest(session_key=run.session_key))
    assert [r.id for r in listed.runs] == [run.id]


async def test_one_run_per_replay_key_however_many_claim_it_at_once(
    store: SqliteSessionStore,
) -> None:
    provider = ScriptedProvider(["once"])
    runs = runs_on(store, provider)
    request = pb.StartRunRequest(agent_id="main", message="m", replay_key="key-1")
    answers = await asyncio.gather(*(runs.start(request) for _ in range(20)))
    assert len({answer.run.id for answer in answers}) == 1
    assert sum(not answer.replayed for answer in answers) == 1
    await finished(runs, answers[0].run.id)
    assert len(provider.prompts) == 1
    again = await runs.start(request)
    assert again.replayed and again.run.id == answers[0].run.id
    assert again.run.status == pb.RUN_STATUS_COMPLETED and len(provider.prompts) == 1


async def test_a_failed_turn_fails_its_run_and_stores_nothing(store: SqliteSessionStore) -> None:
    runs = runs_on(store, ScriptedProvider(["a", "b"], fail_after=1))
    started = (await runs.start(pb.StartRunRequest(agent_id="main", message="m"))).run
    run = await finished(runs, started.id)
    assert run.status == pb.RUN_STATUS_FAILED and "boom" in run.error
    assert await store.load(run.session_key) == []


async def test_a_run_over_its_timeout_fails(store: SqliteSessionStore) -> None:
    runs = runs_on(store, ScriptedProvider(["a", "b"], hang_after=1))
    request = pb.StartRunRequest(agent_id="main", message="m", timeout_seconds=1)
    started = (await runs.start(request)).run
    run = await finished(runs, started.id)
    assert run.status == pb.RUN_STATUS_FAILED and "longer than 1 s" in run.error


async def test_unknown_agents_and_runs_are_refused(store: SqliteSessionStore) -> None:
    runs = runs_on(store, ScriptedProvider([]))
    with pytest.raises(UnknownAgentError):
        await runs.start(pb.StartRunRequest(agent_id="ghost", message="m"))
    with pytest.raises(NotFoundError):
        await runs.get(pb.GetRunRequest(run_id="run_none"))


async def test_closing_the_worker_fails_its_runs(store: SqliteSessionStore) -> None:
    runs = runs_on(store, ScriptedProvider(["a", "b"], hang_after=1))
    started = (await runs.start(pb.StartRunRequest(agent_id="main", message="m"))).run
    await asyncio.sleep(0.1)
    await runs.close()
    run = (await runs.get(pb.GetRunRequest(run_id=started.id))).run
    assert run.status == pb.RUN_STATUS_FAILED and "worker stopped" in run.error


def record(replay_key: str | None, alive_at: float, holder: str = "w1") -> RunRecord:
    return RunRecord(
        f"run_{uuid.uuid4().hex}",
        replay_key,
        QUEUED,
        "main",
        "s",
        "h",
        "n",
        "",
        1.0,
        holder=holder,
        alive_at=alive_at,
    )


async def check_store_runs(store: SessionStore) -> None:
    key = f"k-{uuid.uuid4().hex}"
    first, created = await store.claim_run(record(key, time.time()))
    again, created_again = await store.claim_run(record(key, time.time()))
    assert created and not created_again and again.run_id == first.run_id
    assert await store.start_run(first.run_id, "w1", time.time())
    assert not await store.start_run(first.run_id, "w2", time.time())  # running already
    stale, _ = await store.claim_run(record(None, time.time() - 60, holder="gone"))
    await store.touch_runs("w1", time.time())
    swept = [run for run in await store.sweep_runs(time.time(), time.time() - 30)]
    assert stale.run_id in [run.run_id for run in swept]
    assert first.run_id not in [run.run_id for run in swept]
    assert all(run.status == FAILED and run.error == WORKER_STOPPED for run in swept)
    assert await store.sweep_runs(time.time(), time.time() - 30) == []  # each run once
    alive = await store.get_run(first.run_id)
    assert alive is not None and alive.status == "running"  # refreshed: not swept
    await store.finish_run(first.run_id, "completed", time.time(), "", "done")
    await store.finish_run(first.run_id, FAILED, time.time(), "late", "")  # ended: stays
    done = await store.get_run(first.run_id)
    assert done is not None and done.status == "completed" and done.answer == "done"


async def test_the_sqlite_store_keeps_runs(store: SqliteSessionStore) -> None:
    await check_store_runs(store)


@requires_postgres
async def test_the_postgres_store_keeps_runs() -> None:
    store = PostgresSessionStore(POSTGRES_URL)
    await store.open()
    try:
        await check_store_runs(store)
    finally:
        await store.close()
