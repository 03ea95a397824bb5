from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import AsyncIterator

import pytest

from agent_worker.domain import ChatMessage, ToolCall
from agent_worker.errors import SessionBusyError
from agent_worker.sessions.postgres_store import PostgresSessionStore
from agent_worker.sessions.store import TurnOrigin, store_for_url
from tests.support.postgres import POSTGRES_URL, requires_postgres

pytestmark = requires_postgres


@pytest.fixture
async def stores() -> AsyncIterator[tuple[PostgresSessionStore, PostgresSessionStore]]:
    """Two stores on one database, as two workers would have."""
    first, second = PostgresSessionStore(POSTGRES_URL, 4), PostgresSessionStore(POSTGRES_URL, 4)
    await first.open()
    await second.open()  # the schema is already there: opening again migrates nothing
    yield first, second
    await first.close()
    await second.close()


def key() -> str:
    return f"test:{uuid.uuid4().hex}"


async def test_turns_are_shared_between_workers(stores: tuple[PostgresSessionStore, ...]) -> None:
    first, second = stores
    session = key()
    await first.append_turn(session, [ChatMessage("user", "q1"), ChatMessage("assistant", "a1")])
    await second.append_turn(session, [ChatMessage("user", "q2"), ChatMessage("assistant", "a2")])
    assert [m.text for m in await first.load(session)] == ["q1", "a1", "q2", "a2"]
    assert [(m.role, m.text) for m in await second.load(session, limit=1)] == [("assistant", "a2")]
    assert await first.ping()
    assert await second.delete(session) is True and await first.load(session) == []
    assert await second.delete(session) is False


async def test_a_failed_append_writes_nothing(stores: tuple[PostgresSessionStore, ...]) -> None:
    first, _ = stores
    session = key()
    with pytest.raises(Exception):  # noqa: B017 - asyncpg's encode error for a None text
        await first.append_turn(session, [ChatMessage("user", "x"), ChatMessage("assistant", None)])  # type: ignore[arg-type]
    assert await first.load(session) == []


async def test_session_lock_holds_across_workers(stores: tuple[PostgresSessionStore, ...]) -> None:
    first, second = stores
    session = key()
    order: list[str] = []

    async def turn(store: PostgresSessionStore, name: str, hold: float) -> None:
        async with store.session_lock(session, 5):
            order.append(f"{name}+")
            await asyncio.sleep(hold)
            order.append(f"{name}-")

    await asyncio.gather(turn(first, "a", 0.3), turn(second, "b", 0), turn(first, "c", 0))
    # Whoever comes first, no turn starts before the one holding the session has ended.
    assert [(order[i][0], order[i + 1][0]) for i in range(0, 6, 2)] == [
        (n[0], n[0]) for n in order[::2]
    ]
    assert [entry[1] for entry in order] == ["+", "-"] * 3
    async with first.session_lock(session, 1):
        with pytest.raises(SessionBusyError, match="another worker"):
            async with second.session_lock(session, 0.2):
                pass
    async with second.session_lock(session, 1):  # released: free again at once
        pass


async def test_a_dead_connection_releases_its_lock(
    stores: tuple[PostgresSessionStore, ...],
) -> None:
    _, second = stores
    session = key()
    doomed = PostgresSessionStore(POSTGRES_URL, 2)
    await doomed.open()
    holding = doomed.session_lock(session, 1)
    await holding.__aenter__()
    doomed.pool.terminate()  # as if its worker were killed
    async with second.session_lock(session, 5):
        pass


def test_store_url_picks_postgres() -> None:
    assert isinstance(store_for_url(POSTGRES_URL), PostgresSessionStore)


async def test_a_read_beside_a_running_turn_does_not_use_the_turns_connection(
    stores: tuple[PostgresSessionStore, ...],
) -> None:
    """GetSession while a turn of that session runs: only the turn's own task may use the
    connection holding the lock (two queries on one connection fail)."""
    store, _ = stores
    session = key()
    await store.append_turn(session, [ChatMessage("user", "q"), ChatMessage("assistant", "a")])
    async with store.session_lock(session, 5):
        inside = asyncio.ensure_future(store.load(session))  # the turn's own read
        beside = asyncio.create_task(store.load(session), context=contextvars.Context())
        loaded = await asyncio.gather(inside, beside)
    assert [[m.text for m in messages] for messages in loaded] == [["q", "a"], ["q", "a"]]


async def test_a_transcript_from_schema_1_still_continues_after_the_migration() -> None:
    """Version 1 stored text only; version 2 adds tool calls, call ids and names beside it."""
    import asyncpg

    name = f"clawgate_migration_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_URL)
    await admin.execute(f"CREATE DATABASE {name}")
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        old = await asyncpg.connect(url)
        await old.execute(
            "CREATE TABLE clawgate_schema (version INTEGER NOT NULL);"
            " INSERT INTO clawgate_schema VALUES (1);"
            " CREATE TABLE clawgate_session_messages (session_key TEXT NOT NULL,"
            " seq INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,"
            " created_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (session_key, seq));"
            " INSERT INTO clawgate_session_messages (session_key, seq, role, content)"
            " VALUES ('old', 1, 'user', 'q1'), ('old', 2, 'assistant', 'a1');"
        )
        await old.close()
        store = PostgresSessionStore(url, 2)
        await store.open()
        try:
            assert await store.load("old") == [
                ChatMessage("user", "q1"),
                ChatMessage("assistant", "a1"),
            ]
            call = ToolCall("call_1", "get_time", "{}")
            turn = [
                ChatMessage("user", "q2"),
                ChatMessage("assistant", "", tool_calls=(call,)),
                ChatMessage("tool", "noon", tool_call_id="call_1", name="get_time"),
            ]
            await store.append_turn("old", turn)
            assert (await store.load("old"))[2:] == turn
        finally:
            await store.close()
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


async def test_a_response_id_is_stored_with_its_turn_and_found_by_any_worker(
    stores: tuple[PostgresSessionStore, ...],
) -> None:
    first, second = stores
    session, response_id = key(), f"resp_{uuid.uuid4().hex}"
    turn = [ChatMessage("user", "q"), ChatMessage("assistant", "a")]
    await first.append_turn(session, turn, TurnOrigin("main", response_id))
    found = await second.find_response(response_id)
    assert found is not None and (found.session_key, found.agent_id) == (session, "main")
    assert await second.find_response("resp_unknown") is None
    with pytest.raises(Exception):  # noqa: B017 - the id is unique: a second turn with it fails
        await first.append_turn(session, turn, TurnOrigin("main", response_id))
    assert len(await first.load(session)) == 2  # and wrote nothing


async def test_sessions_are_listed_newest_first_per_agent(
    stores: tuple[PostgresSessionStore, ...],
) -> None:
    first, second = stores
    agent = f"agent-{uuid.uuid4().hex[:8]}"  # the database is shared with other tests
    sessions = [key() for _ in range(3)]
    for session in sessions:
        turn = [ChatMessage("user", f"about {session}"), ChatMessage("assistant", "a")]
        await first.append_turn(session, turn, TurnOrigin(agent))
    await second.append_turn(sessions[0], [ChatMessage("user", "more")], TurnOrigin(agent))
    page = await second.list_sessions(agent, 2, None)
    assert [s.session_key for s in page] == [sessions[0], sessions[2]]
    assert (page[0].turns, page[0].title) == (2, f"about {sessions[0]}")
    rest = await first.list_sessions(agent, 2, (page[-1].updated_at, page[-1].session_key))
    assert [s.session_key for s in rest] == [sessions[1]]
    assert await first.delete(sessions[1])
    assert [s.session_key for s in await first.list_sessions(agent, 9, None)] == sessions[::2]
