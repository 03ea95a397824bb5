"""Per-session serialization inside one worker: turns on one key run one after another."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agent_worker.errors import SessionBusyError


class SessionLocks:
    """One FIFO lock per session key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @property
    def active(self) -> int:
        return len(self._locks)

    def busy(self, session_key: str) -> bool:
        """Whether a turn holds or waits for this session now (a new one would wait)."""
        return session_key in self._users

    @asynccontextmanager
    async def hold(self, session_key: str, wait_seconds: float) -> AsyncIterator[None]:
        lock = self._locks.setdefault(session_key, asyncio.Lock())
        self._users[session_key] = self._users.get(session_key, 0) + 1
        try:
            try:
                if self._users[session_key] == 1:  # nobody holds it or waits: no wait to time
                    await lock.acquire()
                else:  # wait_for costs a task per call, so only a real wait pays for it
                    await asyncio.wait_for(lock.acquire(), wait_seconds)
            except TimeoutError:
                raise SessionBusyError(
                    f"session is busy: the previous turn did not finish within {wait_seconds:g}s"
                ) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            self._users[session_key] -= 1
            if not self._users[session_key]:
                del self._users[session_key]
                del self._locks[session_key]
