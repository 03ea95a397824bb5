"""Who may call the API: a bearer secret (token or password mode, with the OpenClaw env
fallbacks), an identity-aware proxy's word (trusted-proxy mode), or anyone (mode none); and
what they may do (`Principal`)."""

from __future__ import annotations

import hmac
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, NoReturn

from gateway_edge.errors import ApiError, rate_limited, refused_identity, unauthorized
from gateway_edge.principal import OWNER, SCOPES_HEADER, Principal, scopes_from
from gateway_edge.proxies import NO_PROXIES, TrustedProxies
from gateway_edge.rate_limit import AuthFailureLimiter
from gateway_edge.sessions import header_text
from services.config import PASSWORD_ENV, TOKEN_ENV
from services.gateway_config import OPERATOR_SCOPES, AuthConfig
from services.network import is_loopback

log = logging.getLogger("clawgate.edge")

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
class ProxyRules:
    """Trusted-proxy mode's rules (gateway.auth.trustedProxy), with header names as sent."""

    user_header: bytes
    required_headers: tuple[bytes, ...]
    allow_users: frozenset[str]
    default_scopes: frozenset[str]


AuthMode = Literal["token", "password", "none", "trusted-proxy"]
# Mode "none": a caller without x-openclaw-scopes is the owner, as in OpenClaw.
_OWNER_SCOPES = frozenset(OPERATOR_SCOPES)
# A proxied person's scopes when neither the proxy (x-openclaw-scopes) nor the config
# (defaultScopes) names them: read and write their own sessions, never administer everyone's.
PERSON_SCOPES = frozenset({"operator.read", "operator.write"})


@dataclass(frozen=True, slots=True)
class Authenticator:
    mode: AuthMode
    secret: bytes
    proxy: ProxyRules | None = None  # trusted-proxy mode's

    @classmethod
    def from_config(
        cls,
        config: AuthConfig,
        bind: str,
        environ: Mapping[str, str] = os.environ,
        proxies: TrustedProxies = NO_PROXIES,
    ) -> Authenticator:
        token = config.token or environ.get(TOKEN_ENV) or ""
        password = config.password or environ.get(PASSWORD_ENV) or ""
        mode = config.mode or ("password" if password else "token")
        if mode == "trusted-proxy":
            return cls("trusted-proxy", b"", _proxy_rules(config, proxies))
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


def _proxy_rules(config: AuthConfig, proxies: TrustedProxies) -> ProxyRules:
    rules = config.trusted_proxy
    if not proxies:
        raise AuthSetupError(
            "gateway.auth.mode is 'trusted-proxy' but gateway.trustedProxies is empty: list"
            " the addresses of the identity-aware proxy (nobody else may name a user)"
        )
    user_header = (rules.user_header or "").strip()
    if not user_header:
        raise AuthSetupError(
            "gateway.auth.mode is 'trusted-proxy' but gateway.auth.trustedProxy.userHeader is"
            " not set: name the header the proxy puts the user in (such as x-forwarded-user)"
        )
    if proxies.covers_loopback and not rules.allow_loopback:
        raise AuthSetupError(
            "gateway.trustedProxies holds a loopback address, so any process on this host"
            " could name any user: set gateway.auth.trustedProxy.allowLoopback to true if the"
            " proxy really runs here, or list only the proxy's own address"
        )
    default_scopes = (
        PERSON_SCOPES if rules.default_scopes is None else frozenset(rules.default_scopes)
    )
    log.info(
        "trusted-proxy: a request without x-openclaw-scopes has scopes %s (%s)",
        ", ".join(sorted(default_scopes)) or "none",
        "gateway.auth.trustedProxy.defaultScopes"
        if rules.default_scopes is not None
        else "the default; set gateway.auth.trustedProxy.defaultScopes to change it",
    )
    return ProxyRules(
        user_header.lower().encode("latin-1"),
        tuple(name.strip().lower().encode("latin-1") for name in rules.required_headers),
        frozenset(rules.allow_users),
        default_scopes,
    )


class AccessGuard:
    """Auth for the API routes, once per request: who the caller is and what they may do.
    A right secret is never refused; failures are counted per client address (the lockout)."""

    def __init__(
        self,
        authenticator: Authenticator,
        limiter: AuthFailureLimiter,
        proxies: TrustedProxies,
        on_failure: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._authenticator = authenticator
        self._limiter = limiter
        self._proxies = proxies
        self._on_failure = on_failure
        self.mode = authenticator.mode
        self.admit: Callable[[tuple[str, int] | None, Mapping[bytes, bytes]], Principal] = {
            "token": self._by_secret,
            "password": self._by_secret,
            "none": self._open,
            "trusted-proxy": self._by_proxy,
        }[authenticator.mode]

    def client_ip(self, peer: tuple[str, int] | None, headers: Mapping[bytes, bytes]) -> str:
        """The client's address (through trusted proxies) for the lockout and the logs."""
        return self._proxies.client_of(peer, headers.get(b"x-forwarded-for"))

    def _by_secret(self, peer: tuple[str, int] | None, headers: Mapping[bytes, bytes]) -> Principal:
        """Raises ApiError 429 for a locked-out client and 401 for a missing or wrong secret."""
        raw = headers.get(b"authorization")
        authorization = None if raw is None else raw.decode("latin-1")
        client = self.client_ip(peer, headers)
        if self._authenticator.accepts(authorization):
            self._limiter.record_success(client)
            return OWNER
        self._refuse(client, "invalid" if authorization is not None else "missing", unauthorized())

    def _open(self, peer: tuple[str, int] | None, headers: Mapping[bytes, bytes]) -> Principal:
        return Principal("", scopes_from(headers.get(SCOPES_HEADER), _OWNER_SCOPES))

    def _by_proxy(self, peer: tuple[str, int] | None, headers: Mapping[bytes, bytes]) -> Principal:
        rules = self._authenticator.proxy
        assert rules is not None  # the mode has its rules
        client = self.client_ip(peer, headers)
        if peer is None or not self._proxies.trusts(peer[0]):
            self._refuse(
                client,
                "trusted_proxy_untrusted_source",
                refused_identity(
                    401,
                    "Unauthorized: requests must come through the gateway's identity-aware"
                    " proxy (gateway.trustedProxies).",
                    "trusted_proxy_untrusted_source",
                ),
            )
        for name in rules.required_headers:
            if not headers.get(name, b"").strip():
                header = name.decode("latin-1")
                message = f"Unauthorized: the proxy did not send {header}."
                error = refused_identity(401, message, f"trusted_proxy_missing_header_{header}")
                self._refuse(client, "trusted_proxy_missing_header", error)
        user = header_text(headers.get(rules.user_header, b"").decode("latin-1")).strip()
        if not user:
            message = "Unauthorized: the proxy named no user."
            code = "trusted_proxy_user_missing"
            self._refuse(client, code, refused_identity(401, message, code))
        if rules.allow_users and user not in rules.allow_users:
            code = "trusted_proxy_user_not_allowed"
            message = f"Forbidden: {user!r} is not in gateway.auth.trustedProxy.allowUsers."
            self._refuse(client, code, refused_identity(403, message, code))
        self._limiter.record_success(client)
        return Principal(user, scopes_from(headers.get(SCOPES_HEADER), rules.default_scopes))

    def _refuse(self, client: str, reason: str, error: ApiError) -> NoReturn:
        wait = self._limiter.retry_after(client)
        if wait is not None:
            self._on_failure("locked_out")
            raise rate_limited(math.ceil(wait))
        if reason != "missing":  # a client that sent nothing has not guessed anything
            self._limiter.record_failure(client)
        self._on_failure(reason)
        raise error
