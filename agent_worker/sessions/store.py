"""The interface every transcript store implements (sqlite_store.py, postgres_store.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from agent_worker.domain import (
    ChatMessage,
    Compaction,
    SessionSummary,
    StoredContext,
    StoredResponse,
)
from agent_worker.sessions.run_rows import RunRecord
from agent_worker.usage import ModelUsage, UsageQuery, UsageSums


@dataclass(frozen=True, slots=True)
class TurnOrigin:
    """Stored beside a turn: the agent that answered, the caller's id for the answer (a
    Responses API response id) when it gave one, the compaction the turn made, if any, and
    whom it ran for (who owns the session when the turn starts it)."""

    agent_id: str = ""
    response_id: str = ""
    compaction: Compaction | None = None
    owner: str = ""
    # The session's length when the turn read it: the write is refused when another turn was
    # stored since (another worker on the same file). None: not checked.
    expected_length: int | None = None
    # The turn's model calls, stored with it (in its transaction: never lost, never twice),
    # under its run id.
    usage: tuple[ModelUsage, ...] = ()
    run_id: str = ""
    # The edge made the session's key up for this one call (the turn's `new_session`): the
    # session is left out of listings until a later turn continues it.
    one_off: bool = False


NO_ORIGIN = TurnOrigin()
TITLE_CHARACTERS = 80


def title_of(messages: Sequence[ChatMessage]) -> str:
    """A session's title: the start of its first user message's text."""
    for message in messages:
        if message.role == "user" and message.text.strip():
            return " ".join(message.text.split())[:TITLE_CHARACTERS]
    return ""


class SessionStore(Protocol):
    system: str  # the database, as traces name it (OpenTelemetry's db.system.name)

    async def open(self) -> None:
        """Connects and creates or migrates the schema."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """Whether the store answers now (for readiness)."""

    def session_lock(
        self, session_key: str, wait_seconds: float
    ) -> AbstractAsyncContextManager[None]:
        """Holds the session for one turn across the processes that share this store, where the
        store can lock across processes (PostgreSQL; SQLite holds nothing here: the turn runner
        orders a session's turns within its process and the edge keeps the session on one
        worker); raises SessionBusyError after `wait_seconds`."""

    async def load(self, session_key: str, limit: int | None = None) -> list[ChatMessage]:
        """The session's messages, oldest first; only the last `limit` when given."""

    async def load_context(self, session_key: str, limit: int | None = None) -> StoredContext:
        """What a turn builds its prompt from: the latest compaction and the messages after its
        cut (only the last `limit` of them when given)."""

    async def compactions(self, session_key: str) -> list[Compaction]:
        """The session's compactions, oldest first."""

    async def add_compaction(self, session_key: str, compaction: Compaction) -> None:
        """Stores a compaction made outside a turn (a manual one)."""

    def append_turn(
        self,
        session_key: str,
        messages: Sequence[ChatMessage],
        origin: TurnOrigin = NO_ORIGIN,
    ) -> Awaitable[None]:
        """Appends one turn's messages atomically: all of them are stored, or none, and with
        them its origin and the session's summary (title, turns, last update). A store may
        start the write at once and return a future (no task for the caller to shield)."""

    async def find_response(self, response_id: str) -> StoredResponse | None:
        """The session, agent and owner of a stored response id; None when unknown."""

    async def owner_of(self, session_key: str) -> str | None:
        """Whose the session is; None when nothing is stored under the key."""

    async def list_sessions(
        self,
        agent_id: str,
        limit: int,
        after: tuple[float, str] | None,
        owner: str | None = None,
        include_one_off: bool = False,
    ) -> list[SessionSummary]:
        """Sessions newest first (of one agent when `agent_id` is set, of one owner when
        `owner` is), after the cursor (updated_at, session_key) of the last one a previous
        page held. One-off calls (`TurnOrigin.one_off`) only when `include_one_off`."""

    async def record_usage(
        self, request_id: str, identity: str, agent_id: str, calls: Sequence[ModelUsage]
    ) -> None:
        """Stores the model calls of a request that has no turn (an embedding request, a
        manual compaction's summary)."""

    async def usage(self, query: UsageQuery) -> list[UsageSums]:
        """The usage records in the query's range summed by its groups (groups without a
        record have no row). Records outlive their session: deleting one keeps what it cost."""

    async def delete(self, session_key: str) -> bool:
        """Deletes the transcript (and its summary and response ids); whether there was one."""

    async def claim_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        """Stores a new run unless its replay key is stored already: (the run stored under the
        key, whether it is this one). Two claims of one key at once store one run."""

    async def start_run(self, run_id: str, holder: str, now: float) -> bool:
        """A queued run is now running on `holder`; False when it was not queued."""

    async def finish_run(
        self, run_id: str, status: str, finished_at: float, error: str, answer: str
    ) -> None:
        """Ends an unfinished run (a finished one stays as it ended)."""

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def list_runs(self, session_key: str, limit: int) -> list[RunRecord]:
        """A session's runs, newest first."""

    async def touch_runs(self, holder: str, now: float) -> None:
        """`holder` still runs its unfinished runs."""

    async def sweep_runs(self, now: float, stale_before: float) -> list[RunRecord]:
        """Fails the unfinished runs nobody refreshed since `stale_before` (their worker
        stopped), and returns them as they now are: each to one sweeper only."""
