"""Bearer auth in token or password mode, with the OpenClaw env fallbacks."""

from __future__ import annotations

import hmac
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from gateway_edge.errors import rate_limited, unauthorized
from gateway_edge.rate_limit import AuthFailureLimiter
from services.config import PASSWORD_ENV, TOKEN_ENV, AuthConfig
from services.network import is_loopback

__all__ = ["PASSWORD_ENV", "TOKEN_ENV", "AccessGuard", "Authenticator", "AuthSetupError"]


class AuthSetupError(Exception):
    """The auth config would leave the gateway open by accident; the edge refuses to start."""


def _check_sendable(secret: str, where: str) -> None:
    """A secret no client can send would refuse every request: refuse to start instead (the
    message names the key, never the secret)."""
    if secret != secret.strip():
        raise AuthSetupError(
            f"{where} (or its environment variable) starts or ends with whitespace, such as a"
            " trailing newline: no client sends that in a header; remove it"
        )
    if not secret.isascii() or not secret.isprintable():
        raise AuthSetupError(
            f"{where} holds non-ASCII or control characters, which HTTP clients cannot send in"
            " an Authorization header; use printable ASCII"
        )


@dataclass(frozen=True, slots=True)
class Authenticator:
    mode: Literal["token", "password", "none"]
    secret: bytes

    @classmethod
    def from_config(
        cls, config: AuthConfig, bind: str, environ: Mapping[str, str] = os.environ
    ) -> Authenticator:
        token = config.token or environ.get(TOKEN_ENV) or ""
        password = config.password or environ.get(PASSWORD_ENV) or ""
        mode = config.mode or ("password" if password else "token")
        if mode == "none":
            if not is_loopback(bind) and not config.allow_unauthenticated_non_loopback:
                raise AuthSetupError(
                    f"gateway.auth.mode is 'none' but gateway.bind is {bind!r}, not loopback: set "
                    "gateway.auth.allowUnauthenticatedNonLoopback to true to really run open"
                )
            return cls("none", b"")
        secret = token if mode == "token" else password
        if not secret:
            key, env = ("token", TOKEN_ENV) if mode == "token" else ("password", PASSWORD_ENV)
            raise AuthSetupError(
                f"gateway.auth.mode is {mode!r} but no secret is set: set gateway.auth.{key} "
                f"or the environment variable {env}"
            )
        _check_sendable(secret, f"gateway.auth.{'token' if mode == 'token' else 'password'}")
        return cls(mode, secret.encode())

    def accepts(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header value carries the secret (constant-time compare)."""
        if self.mode == "none":
            return True
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), self.secret)


def client_ip(peer: tuple[str, int] | None) -> str:
    """The client's address: the peer's, or, when the peer is one of `gateway.trustedProxies`,
    what its X-Forwarded-For says (uvicorn rewrites the scope; nobody else is believed)."""
    return peer[0] if peer else ""


class AccessGuard:
    """Auth for the API routes: the secret first (a right one is never refused), then the
    lockout; failures are counted per IP."""

    def __init__(
        self,
        authenticator: Authenticator,
        limiter: AuthFailureLimiter,
        on_failure: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._authenticator = authenticator
        self._limiter = limiter
        self._on_failure = on_failure

    def check(self, client_ip: str, authorization: str | None) -> None:
        """Raises ApiError 429 for a locked-out client and 401 for a missing or wrong secret."""
        if self._authenticator.mode == "none":
            return
        if self._authenticator.accepts(authorization):
            self._limiter.record_success(client_ip)
            return
        wait = self._limiter.retry_after(client_ip)
        if wait is not None:
            self._on_failure("locked_out")
            raise rate_limited(math.ceil(wait))
        if authorization is not None:
            self._limiter.record_failure(client_ip)
        self._on_failure("invalid" if authorization is not None else "missing")
        raise unauthorized()
