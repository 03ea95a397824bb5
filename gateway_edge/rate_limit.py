"""Failed-auth limiting per client IP: too many failures in a window lock the IP out for a while."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from services.gateway_config import RateLimitConfig
from services.network import is_loopback

MAX_TRACKED_CLIENTS = 10_000


@dataclass(slots=True)
class _Client:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class AuthFailureLimiter:
    def __init__(
        self, config: RateLimitConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_attempts = config.max_attempts
        self._window = config.window_ms / 1000
        self._lockout = config.lockout_ms / 1000
        self._exempt_loopback = config.exempt_loopback
        self._clock = clock
        self._clients: dict[str, _Client] = {}

    def _exempt(self, ip: str) -> bool:
        return self._exempt_loopback and is_loopback(ip)

    def retry_after(self, ip: str) -> float | None:
        """Seconds until a locked-out IP may try again; None when it is not locked out."""
        client = self._clients.get(ip)
        if client is None:
            return None
        remaining = client.locked_until - self._clock()
        return remaining if remaining > 0 else None

    def record_failure(self, ip: str) -> None:
        if self._exempt(ip):
            return
        now = self._clock()
        if len(self._clients) >= MAX_TRACKED_CLIENTS and ip not in self._clients:
            self._forget_idle(now)
        client = self._clients.setdefault(ip, _Client())
        client.failures.append(now)
        while client.failures and client.failures[0] <= now - self._window:
            client.failures.popleft()
        if len(client.failures) >= self._max_attempts:
            client.locked_until = now + self._lockout
            client.failures.clear()

    def record_success(self, ip: str) -> None:
        self._clients.pop(ip, None)

    def _forget_idle(self, now: float) -> None:
        idle = [
            ip
            for ip, client in self._clients.items()
            if client.locked_until <= now
            and (not client.failures or client.failures[-1] <= now - self._window)
        ]
        for ip in idle:
            del self._clients[ip]
