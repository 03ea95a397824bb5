"""A provider's auth profiles on this worker: which one a call uses, and which wait.

As OpenClaw does: a session is pinned to the profile that last answered it (a provider's prompt
cache is per key, so moving would pay for the history again); a new session takes the profile
used least recently (round-robin); a profile refused (401/403) or rate-limited (429) is cooled
down (30 s, then 1 min, then 5 min, its failures counted until it answers again or an hour
passes without one) and calls move past it to the next, cooled ones last, soonest ready first.
The state is the worker's own, in memory: each worker learns a failing key on its own call.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent_worker.metrics import WorkerMetrics

log = logging.getLogger("clawgate.worker")
COOLDOWNS = (30.0, 60.0, 300.0)  # seconds, by the profile's failures in a row
FAILURE_WINDOW = 3600.0  # failures older than this are forgotten
MAX_PINS = 100_000  # sessions remembered, least recently answered forgotten first


@dataclass(slots=True)
class _Health:
    failures: int = 0
    last_failure: float = float("-inf")
    ready_at: float = 0.0  # monotonic time its cooldown ends
    last_used: float = float("-inf")


class AuthRotation:
    def __init__(
        self,
        provider: str,
        profiles: Sequence[str],
        metrics: WorkerMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert profiles, "a rotation needs a profile"
        self.provider = provider
        self._profiles = tuple(profiles)
        self._health = {profile: _Health() for profile in profiles}
        self._pins: OrderedDict[str, str] = OrderedDict()  # session digest → profile
        self._metrics = metrics
        self._clock = clock

    def order(self, session: str) -> list[str]:
        """The profiles a call for `session` tries, in turn."""
        now = self._clock()
        health = self._health
        ready = [p for p in self._profiles if health[p].ready_at <= now]
        cooling = sorted(
            (p for p in self._profiles if health[p].ready_at > now),
            key=lambda profile: health[profile].ready_at,
        )
        pinned = self._pins.get(session)
        ready.sort(key=lambda profile: (profile != pinned, health[profile].last_used))
        return ready + cooling

    def tried(self, profile: str) -> None:
        self._health[profile].last_used = self._clock()
        self._metrics.auth_profile_calls_by(self.provider, profile).inc()

    def answered(self, profile: str, session: str) -> None:
        """`profile` answered `session`'s call: the session stays on it."""
        health = self._health[profile]
        health.failures = 0
        pins = self._pins
        pins[session] = profile
        pins.move_to_end(session)
        if len(pins) > MAX_PINS:
            pins.popitem(last=False)

    def failed(self, profile: str, reason: str) -> None:
        """`profile`'s key was refused or rate-limited: it waits before it is tried again."""
        now = self._clock()
        health = self._health[profile]
        if now - health.last_failure > FAILURE_WINDOW:
            health.failures = 0
        health.failures += 1
        health.last_failure = now
        seconds = COOLDOWNS[min(health.failures, len(COOLDOWNS)) - 1]
        health.ready_at = now + seconds
        log.warning(
            "auth profile %s of provider %s cooled down for %.0fs (%s, failure %d in a row)",
            profile,
            self.provider,
            seconds,
            reason,
            health.failures,
        )
        self._metrics.auth_profile_cooldowns_by(self.provider, profile, reason).inc()
        self._metrics.auth_profile_ready_at_by(self.provider, profile).set(time.time() + seconds)
