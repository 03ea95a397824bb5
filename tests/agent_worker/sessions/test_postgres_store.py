from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import asyncpg
import pytest

from agent_worker.domain import ChatMessage, Compaction, Reasoning, ToolCall
from agent_worker.errors import SessionBusyError, SessionStoreError
from agent_worker.sessions.factory import store_for_url
from agent_worker.sessions.postgres_leases import LISTENER_NAME
from agent_worker.sessions.postgres_store import PostgresSessionStore
from agent_worker.sessions.store import TurnOrigin
from tests.support.postgres import POSTGRES_URL, requires_postgres
from tests.support.usage import check_usage_sums

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


@asynccontextmanager
async def scratch_database(prefix: str) -> AsyncIterator[tuple[asyncpg.Connection, str, str]]:
    """A database of its own on the test server, dropped at the end: (admin connection to the
    server's own database, the name, its URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_URL)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield admin, name, POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


def key() -> str:
    return f"test:{uuid.uuid4().hex}"


# Signed thinking, kept so that a tool loop can send it back unchanged.
THOUGHT = Reasoning("let me see", "sig-1")


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


# A worker holding a session, in a process of its own so that it can be killed or frozen.
HOLDER = """
import asyncio, sys
from agent_worker.sessions.postgres_leases import LISTENER_NAME
from agent_worker.sessions.postgres_store import PostgresSessionStore

async def main():
    store = PostgresSessionStore(sys.argv[1], 2, lease_seconds=float(sys.argv[3]))
    await store.open()
    async with store.session_lock(sys.argv[2], 5):
        print("held", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


@contextmanager
def holder_process(session: str, lease_seconds: float) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, POSTGRES_URL, session, str(lease_seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "held\n"
        yield process
    finally:
        process.kill()
        process.wait()


async def waited_for(store: PostgresSessionStore, session: str, wait_seconds: float) -> float:
    started = time.monotonic()
    async with store.session_lock(session, wait_seconds):
        return time.monotonic() - started


async def test_a_killed_workers_session_moves_at_once(
    stores: tuple[PostgresSessionStore, ...],
) -> None:
    _, second = stores
    session = key()
    with holder_process(session, lease_seconds=60) as holder:
        with pytest.raises(SessionBusyError):
            await waited_for(second, session, 0.3)
        holder.kill()
        took = await waited_for(second, session, 10)
    print(f"\n[lease] the session moved {took * 1000:.0f} ms after its holder was killed")
    assert took < 3  # its liveness lock went with its connection; the lease had 60 s to run


async def test_a_frozen_workers_lease_expires_and_its_write_is_refused(
    stores: tuple[PostgresSessionStore, ...],
) -> None:
    _, second = stores
    session = key()
    with holder_process(session, lease_seconds=1.5) as holder:
        await asyncio.sleep(2)  # renewed meanwhile: still held
        with pytest.raises(SessionBusyError):
            await waited_for(second, session, 0.2)
        holder.send_signal(signal.SIGSTOP)  # alive (its connections stay) but renews nothing
        took = await waited_for(second, session, 10)
    print(f"\n[lease] a frozen holder's 1.5 s lease was taken over after {took:.1f} s")
    assert took < 4


async def test_a_turn_whose_lease_was_taken_over_stores_nothing(
    stores: tuple[PostgresSessionStore, ...],
) -> None:
    first, second = stores
    session = key()
    async with first.session_lock(session, 1):
        await first.append_turn(session, [ChatMessage("user", "q1")])  # still its own: stored
        await query_async("UPDATE clawgate_session_leases SET expires_at = now() - interval '1s'")
        async with second.session_lock(session, 1):  # expired: another worker takes it
            with pytest.raises(SessionStoreError, match="lost its session"):
                await first.append_turn(session, [ChatMessage("user", "q2")])
            await second.append_turn(session, [ChatMessage("user", "q3")])
    assert [m.text for m in await first.load(session)] == ["q1", "q3"]


async def test_a_cancelled_turn_gives_its_session_back(
    stores: tuple[PostgresSessionStore, ...],
) -> None:
    first, second = stores
    session = key()
    inside = asyncio.Event()

    async def turn() -> None:
        async with first.session_lock(session, 1):
            inside.set()
            await asyncio.sleep(60)

    running = asyncio.create_task(turn())
    await inside.wait()
    running.cancel()  # a client that left
    with pytest.raises(asyncio.CancelledError):
        await running
    assert await waited_for(second, session, 0.5) < 0.5  # not held until the lease expires


async def test_renewing_leases_beside_short_turns_reports_only_real_takeovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Leases renewed every 0.05 s while turns come and go: a turn that gave its lease back
    meanwhile is not "taken over"; one whose lease another worker took is."""
    store = PostgresSessionStore(POSTGRES_URL, 4, lease_seconds=0.2)
    await store.open()
    try:
        deadline = time.monotonic() + 1.5

        async def short_turns() -> None:
            while time.monotonic() < deadline:
                async with store.session_lock(key(), 5):
                    await asyncio.sleep(0.001)

        with caplog.at_level(logging.WARNING, "clawgate.worker.sessions"):
            await asyncio.gather(*(short_turns() for _ in range(16)))
            assert "taken over" not in caplog.text
            session = key()
            async with store.session_lock(session, 5):
                await query_async(
                    "UPDATE clawgate_session_leases SET holder = 'another-worker'"
                    f" WHERE session_key = '{session}'"
                )
                await asyncio.sleep(0.2)
            assert "1 session lease(s) were taken over" in caplog.text
    finally:
        await store.close()


async def test_a_lost_listener_comes_back_and_held_leases_stay_held() -> None:
    """The listening connection (and with it the liveness lock) ends mid-turn: the worker
    connects again within a renewal and its held lease neither expires nor moves."""
    async with scratch_database("clawgate_listener") as (admin, name, url):
        await lost_listener_comes_back(admin, name, url)


async def lost_listener_comes_back(admin: asyncpg.Connection, name: str, url: str) -> None:
    store, rival = PostgresSessionStore(url, 2, lease_seconds=0.4), PostgresSessionStore(url, 2)

    async def listeners() -> set[int]:
        query = "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2"
        return {row[0] for row in await admin.fetch(query, name, LISTENER_NAME)}

    try:
        await store.open()
        (first,) = await listeners()
        await rival.open()
        rivals = await listeners() - {first}
        session = key()
        async with store.session_lock(session, 5):
            await admin.execute("SELECT pg_terminate_backend($1)", first)
            await asyncio.sleep(1.2)  # three lease lengths
            again = await listeners() - rivals
            assert len(again) == 1 and first not in again  # connected again
            with pytest.raises(SessionBusyError):  # renewed all along: still this turn's
                await waited_for(rival, session, 0.3)
            await store.append_turn(session, [ChatMessage("user", "q")])  # and it may write
        assert await waited_for(rival, session, 2) < 1  # given back, the rival hears of it
    finally:
        await store.close()
        await rival.close()


async def test_many_more_held_sessions_than_connections(
    stores: tuple[PostgresSessionStore, ...],
) -> None:
    """Leases hold no connection: 200 turns at once on a pool of 4, each reading and writing."""
    first, _ = stores
    sessions = [key() for _ in range(200)]
    inside = most_inside = 0

    async def turn(session: str) -> None:
        nonlocal inside, most_inside
        async with first.session_lock(session, 30):
            inside += 1
            most_inside = max(most_inside, inside)
            await first.load(session)
            await asyncio.sleep(0.5)
            await first.append_turn(session, [ChatMessage("user", "q")])
            inside -= 1

    await asyncio.gather(*(turn(session) for session in sessions))
    assert most_inside == 200  # a lock held on a connection would allow 4
    for session in sessions:
        assert [m.text for m in await first.load(session)] == ["q"]


async def query_async(statement: str) -> None:
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def test_store_url_picks_postgres() -> None:
    assert isinstance(store_for_url(POSTGRES_URL), PostgresSessionStore)


async def test_a_transcript_from_schema_1_still_continues_after_the_migration() -> None:
    """Version 1 stored text only; version 2 adds tool calls, call ids and names beside it."""
    async with scratch_database("clawgate_migration") as (_, _, url):
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
                ChatMessage("assistant", "", tool_calls=(call,), reasoning=(THOUGHT,)),
                ChatMessage("tool", "noon", tool_call_id="call_1", name="get_time"),
            ]
            await store.append_turn("old", turn)
            assert (await store.load("old"))[2:] == turn
            assert (await store.load_context("old")).messages[2:] == turn  # thinking kept
        finally:
            await store.close()


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


async def test_a_compaction_is_stored_with_its_turn_and_read_by_another_worker(
    stores: tuple[PostgresSessionStore, ...],
) -> None:
    first, second = stores
    session = key()
    await first.append_turn(session, [ChatMessage("user", "q1"), ChatMessage("assistant", "a1")])
    made = Compaction(2, "the user asked q1", 900, 300)
    turn = [ChatMessage("user", "q2"), ChatMessage("assistant", "a2")]
    await first.append_turn(session, turn, TurnOrigin("main", "", made))
    context = await second.load_context(session)
    assert [m.text for m in context.messages] == ["q2", "a2"]
    assert context.first_position == 2 and context.compaction is not None
    assert context.compaction.summary == "the user asked q1"
    assert [m.text for m in await second.load(session)] == ["q1", "a1", "q2", "a2"]
    (stored,) = await second.compactions(session)
    assert (stored.covers, stored.tokens_before, stored.tokens_after) == (2, 900, 300)
    await second.add_compaction(session, Compaction(3, "later"))
    assert (await first.load_context(session)).messages == [ChatMessage("assistant", "a2")]
    with pytest.raises(Exception):  # noqa: B017 - a None text fails: nor is the compaction kept
        bad = [ChatMessage("user", "x"), ChatMessage("assistant", None)]  # type: ignore[arg-type]
        await first.append_turn(session, bad, TurnOrigin("main", "", Compaction(4, "lost")))
    assert [c.covers for c in await first.compactions(session)] == [2, 3]
    await first.delete(session)
    assert await second.compactions(session) == []


async def test_a_session_belongs_to_the_identity_whose_turn_made_it(
    stores: tuple[PostgresSessionStore, ...],
) -> None:
    first, second = stores
    agent, person = f"agent-{uuid.uuid4().hex[:8]}", f"person-{uuid.uuid4().hex[:8]}"
    mine, theirs, response_id = key(), key(), f"resp_{uuid.uuid4().hex}"
    turn = [ChatMessage("user", "q"), ChatMessage("assistant", "a")]
    await first.append_turn(mine, turn, TurnOrigin(agent, response_id, owner=person))
    await first.append_turn(theirs, turn, TurnOrigin(agent, owner="someone-else"))
    await second.append_turn(mine, turn, TurnOrigin(agent, owner="an-admin"))
    assert await second.owner_of(mine) == person
    assert await second.owner_of(key()) is None
    listed = await second.list_sessions(agent, 10, None, owner=person)
    assert [(s.session_key, s.owner) for s in listed] == [(mine, person)]
    assert len(await second.list_sessions(agent, 10, None)) == 2
    found = await second.find_response(response_id)
    assert found is not None and found.owner == person


async def test_sessions_from_before_owners_belong_to_the_gateway_owner() -> None:
    """Version 6 had no owners: migration 7 gives every session the owner ''."""
    async with scratch_database("clawgate_owners") as (_, _, url):
        store = PostgresSessionStore(url, 2)
        await store.open()
        await store.append_turn("old", [ChatMessage("user", "q")], TurnOrigin("main"))
        await store.close()
        old = await asyncpg.connect(url)
        await old.execute(
            "ALTER TABLE clawgate_sessions DROP COLUMN owner;"
            " DELETE FROM clawgate_schema WHERE version >= 7;"
        )
        await old.close()
        store = PostgresSessionStore(url, 2)
        await store.open()
        try:
            assert await store.owner_of("old") == ""
            (summary,) = await store.list_sessions("", 10, None, owner="")
            assert summary.session_key == "old"
        finally:
            await store.close()


async def test_one_off_calls_are_listed_only_when_asked_for(
    stores: tuple[PostgresSessionStore, ...],
) -> None:
    first, _ = stores
    agent = f"agent-{uuid.uuid4().hex[:8]}"  # the database is shared with other tests
    one_off, continued, chosen = f"agent:{agent}:openai:1", f"agent:{agent}:openai:2", key()
    turn = [ChatMessage("user", "q"), ChatMessage("assistant", "a")]
    for session, made_up in ((one_off, True), (continued, True), (continued, False)):
        await first.append_turn(session, turn, TurnOrigin(agent, one_off=made_up))
    await first.append_turn(chosen, turn, TurnOrigin(agent))
    listed = {s.session_key for s in await first.list_sessions(agent, 9, None)}
    assert listed == {continued, chosen}
    everything = await first.list_sessions(agent, 9, None, include_one_off=True)
    assert {s.session_key for s in everything} == {one_off, continued, chosen}


async def test_usage_records_sum_by_identity_model_and_day(
    stores: tuple[PostgresSessionStore, ...],
) -> None:
    await check_usage_sums(stores[0])
