from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from agent_worker.domain import ChatMessage, Compaction, Reasoning, ToolCall
from agent_worker.errors import SessionStoreError
from agent_worker.sessions.factory import UnsupportedStoreError, store_for_url
from agent_worker.sessions.sqlite_store import WAL_SIZE_LIMIT, SqliteSessionStore
from agent_worker.sessions.sqlite_writes import LOOP_COMMIT_BYTES
from agent_worker.sessions.store import TurnOrigin
from tests.support.usage import check_usage_sums

# Signed thinking, kept so that a tool loop can send it back unchanged.
THOUGHT = Reasoning("let me see", "sig-1")


async def test_turns_append_in_order_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "s.db"
    store = SqliteSessionStore(path)
    await store.open()
    await store.append_turn("k", [ChatMessage("user", "q1"), ChatMessage("assistant", "a1")])
    await store.append_turn("k", [ChatMessage("user", "q2"), ChatMessage("assistant", "a2")])
    await store.append_turn("other", [ChatMessage("user", "x")])
    await store.close()

    reopened = SqliteSessionStore(path)
    await reopened.open()
    assert [m.text for m in await reopened.load("k")] == ["q1", "a1", "q2", "a2"]
    assert [m.text for m in await reopened.load("k", limit=3)] == ["a1", "q2", "a2"]
    assert await reopened.load("absent") == []
    assert await reopened.delete("k") is True
    assert await reopened.delete("k") is False
    assert [m.text for m in await reopened.load("other")] == ["x"]
    await reopened.close()


async def test_a_failed_append_writes_nothing(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    await store.open()
    await store.append_turn("k", [ChatMessage("user", "ok")])
    with pytest.raises(SessionStoreError, match="SQLite"):
        await store.append_turn("k", [ChatMessage("user", "half"), ChatMessage(None, "x")])  # type: ignore[arg-type]
    assert [m.text for m in await store.load("k")] == ["ok"]
    await store.close()


def test_store_urls() -> None:
    assert isinstance(store_for_url("sqlite:///:memory:"), SqliteSessionStore)
    with pytest.raises(UnsupportedStoreError, match="sessions.store"):
        store_for_url("mysql://x")


class LockHolder:
    """Another connection (another worker on the same file) holding the write lock."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.connection.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.connection.execute("COMMIT")
        self.connection.close()


async def test_a_turn_is_committed_on_the_loop_when_the_lock_is_free(tmp_path: Path) -> None:
    """In the loop's next step, with no hop to the thread and back."""
    store = SqliteSessionStore(tmp_path / "s.db")
    await store.open()
    written = store.append_turn("k", [ChatMessage("user", "q"), ChatMessage("assistant", "a")])
    await asyncio.sleep(0)
    assert written.done() and written.result() is None
    other = sqlite3.connect(tmp_path / "s.db")
    assert other.execute("SELECT role, content FROM session_messages").fetchall() == [
        ("user", "q"),
        ("assistant", "a"),
    ]
    other.close()
    await store.close()


async def test_a_large_turn_is_committed_on_the_thread_whatever_makes_it_large(
    tmp_path: Path,
) -> None:
    """Its commit would hold the loop; tool-call arguments count like text (they did not)."""
    store = SqliteSessionStore(tmp_path / "s.db")
    await store.open()
    big_text = [ChatMessage("user", "q"), ChatMessage("assistant", "x" * (LOOP_COMMIT_BYTES + 1))]
    call = ToolCall("call_1", "f", '{"a": "' + "y" * LOOP_COMMIT_BYTES + '"}')
    big_call = [ChatMessage("user", "q"), ChatMessage("assistant", "", tool_calls=(call,))]
    small = [ChatMessage("user", "q"), ChatMessage("assistant", "a")]
    written_small = store.append_turn("small", small)
    await asyncio.sleep(0)
    assert written_small.done()
    for key, turn in (("text", big_text), ("call", big_call)):
        written = store.append_turn(key, turn)
        await asyncio.sleep(0)
        assert not written.done()  # queued for the thread
        await written
        assert (await store.load(key))[1] == turn[1]
    await store.close()


async def test_a_turn_waits_on_the_thread_while_another_connection_holds_the_lock(
    tmp_path: Path,
) -> None:
    """The loop's connection never waits for the lock: the turn is queued for the thread, which
    does, and the loop goes on meanwhile."""
    store = SqliteSessionStore(tmp_path / "s.db")
    await store.open()
    holder = LockHolder(tmp_path / "s.db")
    # Released from another thread: had the loop waited for the lock, the turn would come back
    # committed once it was released, instead of queued.
    release = threading.Timer(0.5, holder.release)
    release.start()
    written = store.append_turn("k", [ChatMessage("user", "after the lock")])
    assert not written.done()
    await written
    release.join()
    assert [m.text for m in await store.load("k")] == ["after the lock"]
    await store.close()


async def test_the_wal_is_checkpointed_off_the_loop(tmp_path: Path) -> None:
    """The loop's connection never checkpoints (a checkpoint syncs the disk); the thread does,
    every `checkpoint_every` commits, so the WAL starts over instead of growing."""
    path = tmp_path / "s.db"
    store = SqliteSessionStore(path, checkpoint_every=50)
    await store.open()
    text = "x" * 2000
    written = []
    for n in range(1000):
        written.append(store.append_turn(f"k{n}", [ChatMessage("user", text)]))
        if store.checkpoint is not None:
            await store.checkpoint
    await asyncio.gather(*written)
    wal_bytes = (tmp_path / "s.db-wal").stat().st_size
    # ~1.7 MB here, now and then twice that (a restart missed); with no checkpoint ~19 MB
    assert wal_bytes < 8_000_000
    assert len(await store.load("k999")) == 1
    await store.close()


async def test_the_wal_starts_over_while_turns_keep_coming(tmp_path: Path) -> None:
    """Under steady load the loop kept committing while the thread checkpointed, so no
    checkpoint ever completed and the WAL grew without bound (1.1 GB after two minutes of wrk;
    here 120 MB). A checkpoint now ends with a short step that holds turns while it copies what
    was committed meanwhile, so the WAL starts over; the size limit then gives the file back.
    None of the turns is lost."""
    path = tmp_path / "s.db"
    store = SqliteSessionStore(path, checkpoint_every=50)
    await store.open()
    text = "x" * 2000
    written = []
    for n in range(6000):
        written.append(store.append_turn(f"k{n}", [ChatMessage("user", text)]))
        await asyncio.sleep(0)  # the thread checkpoints meanwhile, as under load
    await asyncio.gather(*written)
    wal_bytes = (tmp_path / "s.db-wal").stat().st_size
    assert wal_bytes <= WAL_SIZE_LIMIT  # all 6,000 turns: ~34 MB of WAL frames
    assert len(await store.load("k5999")) == 1
    assert len(await store.load("k1234")) == 1
    await store.close()


async def test_turns_ending_in_one_loop_step_share_one_commit_on_the_loop(tmp_path: Path) -> None:
    """A commit writes each page it touched once: under load ~4 turns end per loop step, and
    one commit for them cost ~40% less per turn than one each (bench/sqlite_writes.py)."""
    store = SqliteSessionStore(tmp_path / "s.db")
    await store.open()
    statements: list[str] = []
    assert store._commits.loop_connection is not None
    store._commits.loop_connection.set_trace_callback(statements.append)
    written = [store.append_turn(f"k{n}", [ChatMessage("user", f"q{n}")]) for n in range(5)]
    await asyncio.gather(*written)
    assert statements.count("COMMIT") == 1
    for n in range(5):
        assert [m.text for m in await store.load(f"k{n}")] == [f"q{n}"]
    await store.close()


async def test_a_turn_appended_just_before_closing_is_stored(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    await store.open()
    written = store.append_turn("k", [ChatMessage("user", "last words")])
    await store.close()
    assert written.done() and written.result() is None
    reopened = SqliteSessionStore(tmp_path / "s.db")
    await reopened.open()
    assert [m.text for m in await reopened.load("k")] == ["last words"]
    await reopened.close()


async def test_turns_ending_together_share_a_commit_and_keep_their_order(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    await store.open()
    holder = LockHolder(tmp_path / "s.db")  # so that they all go to the thread
    pending = [store.append_turn(f"k{n % 2}", [ChatMessage("user", f"q{n}")]) for n in range(20)]
    holder.release()
    await asyncio.gather(*pending)
    assert [m.text for m in await store.load("k0")] == [f"q{n}" for n in range(0, 20, 2)]
    assert [m.text for m in await store.load("k1")] == [f"q{n}" for n in range(1, 20, 2)]
    await store.close()


async def test_a_bad_turn_in_a_group_fails_only_itself(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    await store.open()
    bad = [ChatMessage("user", "half"), ChatMessage(None, "x")]  # type: ignore[arg-type]
    holder = LockHolder(tmp_path / "s.db")  # so that they go to the thread as one group
    pending = [
        store.append_turn("a", [ChatMessage("user", "fine")]),
        store.append_turn("b", bad),
        store.append_turn("c", [ChatMessage("user", "also fine")]),
    ]
    holder.release()
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], SessionStoreError)
    assert [m.text for m in await store.load("a")] == ["fine"]
    assert await store.load("b") == []
    assert [m.text for m in await store.load("c")] == ["also fine"]
    await store.close()


async def test_opening_waits_for_another_process_holding_the_lock(tmp_path: Path) -> None:
    """Found by CI: of two workers starting on one new file, one failed 'database is locked'
    switching it to WAL (SQLite answers that at once instead of waiting)."""
    path = tmp_path / "shared.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE held (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO held VALUES (1)")
    asyncio.get_running_loop().call_later(0.3, lambda: other.execute("COMMIT"))
    store = SqliteSessionStore(path)
    await store.open()
    await store.append_turn("k", [ChatMessage("user", "after the wait")])
    assert [m.text for m in await store.load("k")] == ["after the wait"]
    await store.close()
    other.close()


def first_schema_file(path: Path, session_key: str, question: str, answer: str) -> Path:
    """A file as the first schema wrote it (text only, no summaries, no compactions)."""
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE session_messages (session_key TEXT NOT NULL, seq INTEGER NOT NULL,"
        " role TEXT NOT NULL, content TEXT NOT NULL, created_at REAL NOT NULL,"
        " PRIMARY KEY (session_key, seq)) WITHOUT ROWID;"
    )
    old.executemany(
        "INSERT INTO session_messages VALUES (?, ?, ?, ?, 0)",
        [(session_key, 1, "user", question), (session_key, 2, "assistant", answer)],
    )
    old.commit()
    old.close()
    return path


async def test_a_file_from_before_structured_messages_still_continues(tmp_path: Path) -> None:
    """The first schema stored text only: opening adds the tool columns, old rows read as
    plain messages, and new turns keep their tool calls."""
    path = first_schema_file(tmp_path / "old.db", "old", "q1", "a1")
    store = SqliteSessionStore(path)
    await store.open()
    try:
        assert await store.load("old") == [
            ChatMessage("user", "q1"),
            ChatMessage("assistant", "a1"),
        ]
        call = ToolCall("call_1", "get_time", '{"zone": "UTC"}')
        turn = [
            ChatMessage("user", "q2"),
            ChatMessage("assistant", "checking", tool_calls=(call,), reasoning=(THOUGHT,)),
            ChatMessage("tool", "", tool_call_id="call_1", name="get_time"),
        ]
        await store.append_turn("old", turn)
        assert (await store.load("old"))[2:] == turn
        assert (await store.load_context("old")).messages[2:] == turn  # thinking kept
    finally:
        await store.close()


async def test_a_response_id_is_stored_with_its_turn(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    await store.open()
    turn = [ChatMessage("user", "q"), ChatMessage("assistant", "a")]
    await store.append_turn("k", turn, TurnOrigin("main", "resp_1"))
    found = await store.find_response("resp_1")
    assert found is not None and (found.session_key, found.agent_id) == ("k", "main")
    assert await store.find_response("resp_2") is None
    with pytest.raises(SessionStoreError):  # the id is unique: the second turn fails whole
        await store.append_turn("k", turn, TurnOrigin("main", "resp_1"))
    assert len(await store.load("k")) == 2
    await store.close()


async def test_sessions_are_listed_newest_first_per_agent_with_a_cursor(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    await store.open()
    for n in range(5):
        agent = "main" if n % 2 == 0 else "beta"
        turn = [ChatMessage("user", f"question   {n}\n more"), ChatMessage("assistant", "a")]
        await store.append_turn(f"k{n}", turn, TurnOrigin(agent))
    await store.append_turn("k0", [ChatMessage("user", "again"), ChatMessage("assistant", "b")])
    first = await store.list_sessions("", 2, None)
    assert [s.session_key for s in first] == ["k0", "k4"]  # k0 was written to last
    assert (first[0].title, first[0].turns, first[0].agent_id) == ("question 0 more", 2, "main")
    cursor = (first[-1].updated_at, first[-1].session_key)
    rest = await store.list_sessions("", 10, cursor)
    assert [s.session_key for s in rest] == ["k3", "k2", "k1"]
    assert [s.session_key for s in await store.list_sessions("beta", 10, None)] == ["k3", "k1"]
    assert await store.delete("k3")
    assert [s.session_key for s in await store.list_sessions("beta", 10, None)] == ["k1"]
    await store.close()


async def test_a_file_written_before_summaries_gets_them_on_open(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteSessionStore(path)
    await store.open()
    await store.append_turn(
        "old", [ChatMessage("user", "first words"), ChatMessage("assistant", "x")]
    )
    await store.close()
    with sqlite3.connect(path) as connection:  # as a file from before the summary table
        connection.execute("DROP TABLE sessions")
    store = SqliteSessionStore(path)
    await store.open()
    (old,) = await store.list_sessions("", 10, None)
    assert (old.session_key, old.title, old.turns, old.agent_id) == ("old", "first words", 1, "")
    await store.close()


async def test_a_compaction_is_stored_with_its_turn_and_bounds_what_a_turn_reads(
    tmp_path: Path,
) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    await store.open()
    await store.append_turn("k", [ChatMessage("user", "q1"), ChatMessage("assistant", "a1")])
    made = Compaction(2, "the user asked q1", 900, 300)
    turn = [ChatMessage("user", "q2"), ChatMessage("assistant", "a2")]
    await store.append_turn("k", turn, TurnOrigin("main", "", made))
    context = await store.load_context("k")
    assert [m.text for m in context.messages] == ["q2", "a2"]
    assert context.first_position == 2 and context.compaction is not None
    assert context.compaction.summary == "the user asked q1"
    assert [m.text for m in await store.load("k")] == ["q1", "a1", "q2", "a2"]  # nothing lost
    (stored,) = await store.compactions("k")
    assert (stored.covers, stored.tokens_before, stored.tokens_after) == (2, 900, 300)
    assert stored.created_at > 0
    assert (await store.load_context("k", limit=1)).first_position == 3
    assert not (await store.load_context("absent")).exists
    await store.delete("k")
    assert await store.compactions("k") == []
    await store.close()


async def test_a_file_from_before_compactions_opens_and_compacts(tmp_path: Path) -> None:
    store = SqliteSessionStore(first_schema_file(tmp_path / "old.db", "k", "old q", "old a"))
    await store.open()
    assert [m.text for m in (await store.load_context("k")).messages] == ["old q", "old a"]
    origin = TurnOrigin("main", "", Compaction(2, "old talk"))
    await store.append_turn("k", [ChatMessage("user", "new q")], origin)
    context = await store.load_context("k")
    assert [m.text for m in context.messages] == ["new q"]
    assert context.compaction is not None and context.compaction.summary == "old talk"
    await store.close()


async def test_a_session_belongs_to_the_identity_whose_turn_made_it(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    await store.open()
    turn = [ChatMessage("user", "q"), ChatMessage("assistant", "a")]
    await store.append_turn("alice-1", turn, TurnOrigin("main", "resp_a", owner="alice"))
    await store.append_turn("bob-1", turn, TurnOrigin("main", owner="bob"))
    await store.append_turn("alice-1", turn, TurnOrigin("main", owner="bob"))  # an admin's turn
    assert await store.owner_of("alice-1") == "alice"  # the first turn's caller keeps it
    assert await store.owner_of("nobody") is None
    listed = await store.list_sessions("", 10, None, owner="alice")
    assert [(s.session_key, s.owner) for s in listed] == [("alice-1", "alice")]
    assert {s.owner for s in await store.list_sessions("", 10, None)} == {"alice", "bob"}
    found = await store.find_response("resp_a")
    assert found is not None and found.owner == "alice"
    await store.close()


async def test_sessions_from_before_owners_belong_to_the_gateway_owner(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as connection:  # the summary table as it was before owners
        connection.executescript(
            "CREATE TABLE sessions (session_key TEXT PRIMARY KEY, agent_id TEXT NOT NULL,"
            " title TEXT NOT NULL, turns INTEGER NOT NULL, updated_at REAL NOT NULL)"
            " WITHOUT ROWID;"
            " INSERT INTO sessions VALUES ('old', 'main', 'hello', 1, 1.0);"
        )
    store = SqliteSessionStore(path)
    await store.open()
    assert await store.owner_of("old") == ""
    (old,) = await store.list_sessions("", 10, None, owner="")
    assert (old.session_key, old.owner) == ("old", "")
    await store.close()


async def test_one_off_calls_stored_before_the_flag_stay_out_of_listings(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as connection:  # the summary table as it was before one_off
        connection.executescript(
            "CREATE TABLE sessions (session_key TEXT PRIMARY KEY, agent_id TEXT NOT NULL,"
            " title TEXT NOT NULL, turns INTEGER NOT NULL, updated_at REAL NOT NULL,"
            " owner TEXT NOT NULL DEFAULT '') WITHOUT ROWID;"
            " INSERT INTO sessions VALUES ('agent:main:openai:1', 'main', 'a', 1, 1.0, '');"
            " INSERT INTO sessions VALUES ('agent:main:openai:2', 'main', 'b', 2, 2.0, '');"
            " INSERT INTO sessions VALUES ('mine', 'main', 'c', 1, 3.0, '');"
        )
    store = SqliteSessionStore(path)
    await store.open()
    listed = [s.session_key for s in await store.list_sessions("main", 10, None)]
    assert listed == ["mine", "agent:main:openai:2"]
    await store.close()


async def test_one_off_calls_are_listed_only_when_asked_for(tmp_path: Path) -> None:
    """A single turn under a key the edge made up (the turn says `one_off`) is a one-off call;
    continued, or under any other key, it is a conversation, whatever the key looks like."""
    store = SqliteSessionStore(tmp_path / "s.db")
    await store.open()
    turn = [ChatMessage("user", "q"), ChatMessage("assistant", "a")]
    keys = {
        "one-off": "agent:main:openai:0001",
        "continued": "agent:main:openai:0002",
        "user": "agent:main:openai-user:alice",
        "chosen": "my-session",
        "made-up form, chosen": "agent:main:openai:0003",
    }
    made_up = {keys["one-off"], keys["continued"]}
    for session in keys.values():
        await store.append_turn(session, turn, TurnOrigin("main", one_off=session in made_up))
    await store.append_turn(keys["continued"], turn, TurnOrigin("main"))
    listed = {s.session_key for s in await store.list_sessions("main", 10, None)}
    assert listed == set(keys.values()) - {keys["one-off"]}
    everything = await store.list_sessions("main", 10, None, include_one_off=True)
    assert {s.session_key for s in everything} == set(keys.values())
    assert await store.load(keys["one-off"])  # still there, by its key
    await store.close()


async def test_a_turn_whose_session_grew_on_another_worker_is_refused_whole(
    tmp_path: Path,
) -> None:
    """Two workers on one file: a turn read the session, another worker stored a turn of it
    meanwhile; the first turn's messages and compaction would not follow what its model saw."""
    path = tmp_path / "shared.db"
    first, second = SqliteSessionStore(path), SqliteSessionStore(path)
    await first.open()
    await second.open()
    try:
        await first.append_turn("k", [ChatMessage("user", "q1"), ChatMessage("assistant", "a1")])
        read = await first.load_context("k")  # the slow turn reads the session ...
        await second.append_turn(  # ... the other worker stores a turn of it ...
            "k",
            [ChatMessage("user", "q2"), ChatMessage("assistant", "a2")],
            TurnOrigin(expected_length=(await second.load_context("k")).last_position),
        )
        summary = Compaction(2, "q1 and a1")
        stale = TurnOrigin("main", compaction=summary, expected_length=read.last_position)
        with pytest.raises(SessionStoreError, match="another turn of this session"):
            await first.append_turn(
                "k", [ChatMessage("user", "q3"), ChatMessage("assistant", "a3")], stale
            )
        assert [m.text for m in await first.load("k")] == ["q1", "a1", "q2", "a2"]
        assert await first.compactions("k") == []
        fresh = TurnOrigin(expected_length=(await first.load_context("k")).last_position)
        await first.append_turn("k", [ChatMessage("user", "q3")], fresh)  # read again: stored
        assert [m.text for m in await first.load("k")][-1] == "q3"
    finally:
        await first.close()
        await second.close()


async def test_usage_records_sum_by_identity_model_and_day(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "usage.db")
    await store.open()
    try:
        await check_usage_sums(store)
    finally:
        await store.close()
