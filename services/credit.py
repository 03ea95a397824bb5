"""Exchange's flow control: how many events of one turn may be on their way to its caller.

The caller opens a turn with `WINDOW` events of credit and gives credit back as its own client
takes events; the worker sends no more than it holds. Both ends keep one `CreditWindow` per turn.
"""

from __future__ import annotations

WINDOW = 256
# Credit goes back in batches of half the window: a short turn sends no credit message at all,
# and a long one keeps the worker from ever waiting on a full window.
GIVE_BACK_BATCH = WINDOW // 2


class CreditWindow:
    """The worker spends it (`spend`, `grant`); the caller counts what it took (`took`)."""

    __slots__ = ("room", "_taken")

    def __init__(self, room: int = WINDOW) -> None:
        self.room = room  # events the worker may still send
        self._taken = 0  # events the caller took in since it last gave credit back

    def spend(self, wanted: int) -> int:
        """How many of `wanted` events may go now; they are taken off the room."""
        allowed = min(wanted, self.room)
        self.room -= allowed
        return allowed

    def grant(self, events: int) -> None:
        self.room += events

    def took(self, events: int) -> int:
        """Counts events the caller took in; returns the credit to give back now (0 until
        half a window has been taken)."""
        self._taken += events
        if self._taken < GIVE_BACK_BATCH:
            return 0
        give_back, self._taken = self._taken, 0
        return give_back
