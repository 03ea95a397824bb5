"""Session leases in PostgreSQL: one turn of a session at a time across every worker, without a
connection held for the turn's length.

A lease is a row (session, holder, holder's liveness lock, expiry). Taking one is one statement;
so is giving it back, which also NOTIFYs waiters, who sleep on this worker's one listening
connection instead of polling. That connection also holds the worker's *liveness lock* (a
session-level advisory lock with a random id) for the worker's life, so a lease can be taken
over as soon as either

- its holder's liveness lock is free: the holder's process or its connection died, so a killed
  worker's sessions move at once; or
- it expired: the holder stopped renewing it (frozen, cut off from the database). Held leases
  are renewed together, one statement every LEASE_SECONDS / 4.

A turn whose lease was taken over cannot store its turn: the write checks the lease in its
transaction (`fence`), so a session's turns never interleave in the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import asyncpg

from agent_worker.errors import SessionBusyError, SessionStoreError
from agent_worker.sessions.postgres_errors import DRIVER_ERRORS, store_errors
from agent_worker.sessions.postgres_schema import LEASES_TABLE

log = logging.getLogger("clawgate.worker.sessions")
LEASE_SECONDS = 10.0
RELEASED_CHANNEL = "clawgate_session_released"
LISTENER_NAME = "clawgate-session-leases"  # the listening connection, in pg_stat_activity
# How often a waiter tries again without a release: the bound on how long a killed holder's
# session stays taken. A session waited for across workers is rare (the edge keeps a session on
# one worker), so these tries cost little.
RETRY_SECONDS = 1.0
_RECONNECT_SECONDS = (0.5, 1, 2, 5)
Connection = Any  # asyncpg has no stubs

_TAKE = f"""
WITH taken AS (
    INSERT INTO {LEASES_TABLE} AS lease (session_key, holder, holder_lock, expires_at)
    VALUES ($1, $2, $3, now() + make_interval(secs => $4))
    ON CONFLICT (session_key) DO UPDATE
        SET holder = excluded.holder, holder_lock = excluded.holder_lock,
            expires_at = excluded.expires_at
        WHERE lease.expires_at < now() OR pg_try_advisory_xact_lock(lease.holder_lock)
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM taken),
       (SELECT extract(epoch FROM expires_at - now())::float8
        FROM {LEASES_TABLE} WHERE session_key = $1)
"""
_GIVE_BACK = f"""
WITH gone AS (DELETE FROM {LEASES_TABLE} WHERE session_key = $1 AND holder = $2 RETURNING 1)
SELECT pg_notify('{RELEASED_CHANNEL}', $3) FROM gone
"""
_RENEW = f"""
UPDATE {LEASES_TABLE} AS lease
SET expires_at = now() + make_interval(secs => $3), holder_lock = $4
FROM unnest($1::text[], $2::text[]) AS held(session_key, holder)
WHERE lease.session_key = held.session_key AND lease.holder = held.holder
RETURNING lease.session_key
"""
_FENCE = f"SELECT 1 FROM {LEASES_TABLE} WHERE session_key = $1 AND holder = $2 FOR UPDATE"


def channel_word(session_key: str) -> str:
    """What a release NOTIFYs: a digest, since a key may be longer than a payload may be."""
    return hashlib.blake2b(session_key.encode(), digest_size=12).hexdigest()


class SessionLeases:
    def __init__(self, url: str, pool: asyncpg.Pool, lease_seconds: float = LEASE_SECONDS) -> None:
        self._url = url
        self._pool = pool
        self._lease_seconds = lease_seconds
        self._liveness_lock = secrets.randbits(63)
        self._listener: Connection | None = None
        self._held: dict[str, str] = {}  # session key -> this turn's holder token
        self._waiters: dict[str, set[asyncio.Event]] = {}  # channel word -> who waits
        self._keeper: asyncio.Task[None] | None = None
        self._giving_back: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._listen()
        self._keeper = asyncio.create_task(self._keep(), name="clawgate-session-leases")

    async def stop(self) -> None:
        if self._giving_back:
            await asyncio.wait(self._giving_back, timeout=5)
        if self._keeper is not None:
            self._keeper.cancel()
            with suppress(asyncio.CancelledError):
                await self._keeper
        if self._listener is not None:
            with suppress(*DRIVER_ERRORS):
                await self._listener.close(timeout=2)
            self._listener = None

    @asynccontextmanager
    async def hold(self, session_key: str, wait_seconds: float) -> AsyncIterator[None]:
        token = secrets.token_hex(8)
        try:
            with store_errors("taking the session's lease"):
                await self._take(session_key, token, wait_seconds)
        except asyncio.CancelledError:
            self._give_back_soon(session_key, token)  # the take may have landed all the same
            raise
        self._held[session_key] = token
        try:
            yield
        finally:
            del self._held[session_key]
            # A cancelled turn gives its session back too (else it stays taken until expiry).
            await asyncio.shield(self._give_back_soon(session_key, token))

    async def fence(self, connection: Connection, session_key: str) -> None:
        """Inside a write's transaction: refuses the write when this worker holds no lease on
        the session now (another worker took it over), and keeps it until the commit."""
        token = self._held.get(session_key)
        if token is not None and await connection.fetchval(_FENCE, session_key, token) is None:
            raise SessionStoreError(
                "the turn lost its session to another worker (its lease was taken over); the"
                " turn was not stored"
            )

    async def _take(self, session_key: str, token: str, wait_seconds: float) -> None:
        deadline = time.monotonic() + wait_seconds
        word = channel_word(session_key)
        while True:
            # Listening before the attempt, so a release between the two is not missed.
            released = asyncio.Event()
            waiters = self._waiters.setdefault(word, set())
            waiters.add(released)
            try:
                if await self._try_take(session_key, token, deadline, released):
                    return
            finally:
                waiters.discard(released)
                if not waiters and self._waiters.get(word) is waiters:
                    del self._waiters[word]
            if time.monotonic() >= deadline:
                raise SessionBusyError(
                    "session is busy: another worker's turn did not finish"
                    f" within {wait_seconds:g}s"
                )

    async def _try_take(
        self, session_key: str, token: str, deadline: float, released: asyncio.Event
    ) -> bool:
        """One attempt; when it fails, sleeps until the holder's release, the time its lease
        runs out, or RETRY_SECONDS (a killed holder releases nothing: its liveness lock goes)."""
        try:
            taken, expires_in = await self._pool.fetchrow(
                _TAKE, session_key, token, self._liveness_lock, self._lease_seconds,
                timeout=max(deadline - time.monotonic(), 1.0),
            )  # fmt: skip
        except TimeoutError:
            return False
        if taken:
            return True
        nap = min(deadline - time.monotonic(), max(expires_in or 0.0, 0.0) + 0.05, RETRY_SECONDS)
        if nap > 0:
            with suppress(TimeoutError):
                await asyncio.wait_for(released.wait(), nap)
        return False

    def _give_back_soon(self, session_key: str, token: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._give_back(session_key, token))
        self._giving_back.add(task)
        task.add_done_callback(self._giving_back.discard)
        return task

    async def _give_back(self, session_key: str, token: str) -> None:
        try:
            await self._pool.execute(_GIVE_BACK, session_key, token, channel_word(session_key))
        except DRIVER_ERRORS as error:
            # The lease stays until it expires (or this worker's liveness lock goes).
            log.warning("giving back a session lease failed: %s", error)

    def _on_release(self, _connection: Connection, _pid: int, _channel: str, word: str) -> None:
        for released in self._waiters.pop(word, ()):
            released.set()

    async def _listen(self) -> None:
        listener = await asyncpg.connect(
            self._url, timeout=10, server_settings={"application_name": LISTENER_NAME}
        )
        try:
            # The lock of a connection that died may outlive it on the server for a while (until
            # the server notices): then this worker takes a fresh id instead of waiting, and the
            # next renewal points its leases at it.
            while not await listener.fetchval(
                "SELECT pg_try_advisory_lock($1)", self._liveness_lock, timeout=10
            ):
                self._liveness_lock = secrets.randbits(63)
            await listener.add_listener(RELEASED_CHANNEL, self._on_release)
        except BaseException:
            await listener.close()
            raise
        self._listener = listener
        # Waiters that slept through the outage try again now.
        for waiters in self._waiters.values():
            for released in waiters:
                released.set()

    async def _keep(self) -> None:
        """Renews held leases and keeps the listening connection up."""
        failures = 0
        while True:
            await asyncio.sleep(self._lease_seconds / 4)
            try:
                await self._renew()  # first: the leases matter more than the wake-ups
                if self._listener is None or self._listener.is_closed():
                    self._listener = None
                    await self._listen()
                    log.info("session lease listener connected again")
                failures = 0
            except DRIVER_ERRORS as error:
                failures += 1
                log.warning("session leases: %s", error)
                await asyncio.sleep(_RECONNECT_SECONDS[min(failures, len(_RECONNECT_SECONDS)) - 1])

    async def _renew(self) -> None:
        if not self._held:
            return
        held = dict(self._held)
        rows = await self._pool.fetch(
            _RENEW, list(held), list(held.values()), self._lease_seconds, self._liveness_lock
        )
        renewed = {row[0] for row in rows}
        # Not renewed and still held: taken over. (A turn that ended meanwhile gave it back.)
        lost = [
            key
            for key, token in held.items()
            if key not in renewed and self._held.get(key) == token
        ]
        if lost:
            log.warning(
                "%d session lease(s) were taken over; those turns will not be stored", len(lost)
            )
