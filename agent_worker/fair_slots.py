"""A worker's running slots, shared fairly: when all are taken, a turn waits (up to a bound)
instead of being refused, and freed slots go round the identities that wait, one turn each,
each identity's turns in arrival order. A person with a hundred waiting turns delays another
person's one turn by at most one of theirs."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable

from agent_worker.errors import WorkerAtCapacityError


class FairSlots:
    def __init__(
        self, capacity: int, max_waiting: int, also_waiting: Callable[[], int] = lambda: 0
    ) -> None:
        self.capacity = capacity
        self.max_waiting = max_waiting
        self._also_waiting = also_waiting  # turns that wait elsewhere within the same bound
        self.running = 0
        self.waiting = 0
        # Identities with waiting turns, in the order their next turn is served.
        self._queues: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    async def acquire(self, identity: str) -> None:
        """Takes a slot, waiting for one fairly; raises WorkerAtCapacityError when the wait
        is full."""
        if self.running < self.capacity and not self.waiting:
            self.running += 1
            return
        if self.waiting + self._also_waiting() >= self.max_waiting:
            raise WorkerAtCapacityError(
                f"worker is at capacity ({self.running} turns in flight, {self.waiting} waiting)"
            )
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(identity, deque()).append(granted)
        self.waiting += 1
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # it was given the slot as it went away: pass it on
            else:
                self._forget(identity, granted)
            raise

    def release(self) -> None:
        """Gives a slot back: to the next identity in turn when one waits."""
        self.running -= 1
        while self._queues and self.running < self.capacity:
            identity, queue = next(iter(self._queues.items()))
            granted = queue.popleft()
            if queue:
                self._queues.move_to_end(identity)  # its next turn waits for the others'
            else:
                del self._queues[identity]
            self.waiting -= 1
            if not granted.done():
                self.running += 1
                granted.set_result(None)

    def _forget(self, identity: str, granted: asyncio.Future[None]) -> None:
        queue = self._queues.get(identity)
        if queue is None or granted not in queue:
            return
        queue.remove(granted)
        self.waiting -= 1
        if not queue:
            del self._queues[identity]
