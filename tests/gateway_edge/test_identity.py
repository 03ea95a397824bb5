"""Trusted-proxy auth, operator scopes and per-person session keys, unit by unit (issue 32);
tests/integration/test_trusted_proxy.py runs them behind a real nginx."""

from __future__ import annotations

from typing import Any

import pytest

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.auth import AccessGuard, Authenticator, AuthSetupError
from gateway_edge.errors import ApiError
from gateway_edge.principal import OWNER, Principal, scopes_from
from gateway_edge.proxies import TrustedProxies
from gateway_edge.rate_limit import AuthFailureLimiter
from gateway_edge.sessions import session_for, user_of
from services.config import ConfigError, parse_config
from services.gateway_config import OPERATOR_SCOPES, AuthConfig, RateLimitConfig

PROXY = ("10.0.0.5", 40000)
STRANGER = ("10.9.9.9", 40000)


def guard(proxies: list[str] | None = None, bind: str = "127.0.0.1", **rules: Any) -> AccessGuard:
    trusted = TrustedProxies(["10.0.0.5"] if proxies is None else proxies)
    config = AuthConfig.model_validate(
        {"mode": "trusted-proxy", "trustedProxy": {"userHeader": "X-Forwarded-User", **rules}}
    )
    authenticator = Authenticator.from_config(config, bind, {}, proxies=trusted)
    limiter = AuthFailureLimiter(RateLimitConfig.model_validate({"maxAttempts": 3}))
    return AccessGuard(authenticator, limiter, trusted)


def refusal(call: Any) -> ApiError:
    with pytest.raises(ApiError) as raised:
        call()
    return raised.value


def test_startup_refuses_a_trusted_proxy_config_that_would_trust_anyone() -> None:
    with pytest.raises(AuthSetupError, match="gateway.trustedProxies is empty"):
        guard(proxies=[])
    with pytest.raises(AuthSetupError, match="userHeader"):
        config = AuthConfig.model_validate({"mode": "trusted-proxy"})
        Authenticator.from_config(config, "127.0.0.1", {}, proxies=TrustedProxies(["10.0.0.5"]))
    for bind in ("0.0.0.0", "127.0.0.1"):
        for loopback in (["127.0.0.1"], ["127.0.0.0/8"], ["::1"], ["0.0.0.0/0"]):
            with pytest.raises(AuthSetupError, match="allowLoopback"):
                guard(proxies=loopback, bind=bind)
    assert guard(proxies=["127.0.0.2"], allowLoopback=True).mode == "trusted-proxy"


def test_a_trusted_proxy_entry_that_is_no_address_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="gateway.trustedProxies"):
        parse_config('{"gateway": {"trustedProxies": ["proxy.internal"]}}')


def test_only_the_proxy_may_name_a_user() -> None:
    access = guard()
    forged = refusal(lambda: access.admit(STRANGER, {b"x-forwarded-user": b"alice"}))
    assert (forged.status, forged.code) == (401, "trusted_proxy_untrusted_source")
    assert access.admit(PROXY, {b"x-forwarded-user": b"alice"}).identity == "alice"
    missing = refusal(lambda: access.admit(PROXY, {b"x-forwarded-user": b"  "}))
    assert (missing.status, missing.code) == (401, "trusted_proxy_user_missing")
    assert refusal(lambda: access.admit(None, {b"x-forwarded-user": b"a"})).status == 401


def test_required_headers_and_allowed_users() -> None:
    access = guard(requiredHeaders=["X-Forwarded-Proto"], allowUsers=["alice"])
    missing = refusal(lambda: access.admit(PROXY, {b"x-forwarded-user": b"alice"}))
    assert (missing.status, missing.code) == (401, "trusted_proxy_missing_header_x-forwarded-proto")
    headers = {b"x-forwarded-user": b"bob", b"x-forwarded-proto": b"https"}
    outsider = refusal(lambda: access.admit(PROXY, headers))
    assert (outsider.status, outsider.code, outsider.type) == (
        403,
        "trusted_proxy_user_not_allowed",
        "forbidden",
    )
    headers[b"x-forwarded-user"] = b"alice"
    assert access.admit(PROXY, headers).identity == "alice"


def test_a_user_header_in_utf8_is_read_as_sent() -> None:
    name = "zoë@example.com"
    user = {b"x-forwarded-user": name.encode()}
    assert guard().admit(PROXY, user).identity == name


def test_scopes_from_the_header_the_config_or_a_persons_default_set(
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = {b"x-forwarded-user": b"alice"}
    caplog.set_level("INFO")
    person = guard().admit(PROXY, user)
    assert person.scopes == {"operator.read", "operator.write"} and not person.admin
    assert "scopes operator.read, operator.write (the default;" in caplog.text
    assert guard(defaultScopes=list(OPERATOR_SCOPES)).admit(PROXY, user).admin
    narrowed = guard(defaultScopes=["operator.read"]).admit(PROXY, user)
    assert narrowed.scopes == {"operator.read"} and not narrowed.admin
    sent = {**user, b"x-openclaw-scopes": b" operator.write , operator.admin,"}
    assert guard().admit(PROXY, sent).scopes == {"operator.write", "operator.admin"}
    assert guard().admit(PROXY, {**user, b"x-openclaw-scopes": b""}).scopes == frozenset()
    assert scopes_from(None, frozenset({"x"})) == {"x"}


def test_shared_secret_callers_are_the_owner_whatever_scopes_they_send() -> None:
    config = AuthConfig.model_validate({"mode": "token", "token": "t"})
    trusted = TrustedProxies([])
    limiter = AuthFailureLimiter(RateLimitConfig())
    access = AccessGuard(Authenticator.from_config(config, "127.0.0.1", {}), limiter, trusted)
    headers = {b"authorization": b"Bearer t", b"x-openclaw-scopes": b"operator.read"}
    assert access.admit(PROXY, headers) is OWNER
    assert OWNER.caller() is None  # the worker's default: nothing to send


def test_mode_none_callers_bear_the_scopes_they_send() -> None:
    config = AuthConfig.model_validate({"mode": "none"})
    limiter = AuthFailureLimiter(RateLimitConfig())
    trusted = TrustedProxies([])
    access = AccessGuard(Authenticator.from_config(config, "127.0.0.1", {}), limiter, trusted)
    assert access.admit(PROXY, {}).admin
    narrowed = access.admit(PROXY, {b"x-openclaw-scopes": b"operator.write"})
    assert not narrowed.admin
    assert narrowed.caller() == pb.Caller(identity="", admin=False)


def test_failures_lock_out_the_forwarded_client_not_the_proxy() -> None:
    access = guard(allowUsers=["alice"])
    mallory = {b"x-forwarded-user": b"mallory", b"x-forwarded-for": b"198.51.100.7"}
    for _ in range(3):
        assert refusal(lambda: access.admit(PROXY, mallory)).status == 403
    assert refusal(lambda: access.admit(PROXY, mallory)).status == 429
    alice = {b"x-forwarded-user": b"alice", b"x-forwarded-for": b"198.51.100.8"}
    assert access.admit(PROXY, alice).identity == "alice"


def test_the_client_is_the_nearest_untrusted_hop() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    assert proxies.client_of(("10.0.0.5", 1), b"203.0.113.9, 10.1.1.1") == "203.0.113.9"
    assert proxies.client_of(("10.0.0.5", 1), b"6.6.6.6, 203.0.113.9") == "203.0.113.9"
    assert proxies.client_of(("203.0.113.1", 1), b"6.6.6.6") == "203.0.113.1"
    assert proxies.client_of(("::ffff:10.0.0.5", 1), b"203.0.113.9") == "203.0.113.9"
    assert proxies.client_of(None, b"6.6.6.6") == ""


def test_a_user_names_a_conversation_of_its_person() -> None:
    alice = session_for("main", "notes", None, "alice")
    bob = session_for("main", "notes", None, "bob")
    owner = session_for("main", "notes", None)
    assert len({alice.key, bob.key, owner.key}) == 3
    assert owner.key == "agent:main:openai-user:notes"  # the owner's keys are as before
    assert user_of(alice.key, "main", "alice") == "notes"
    assert user_of(alice.key, "main", "bob") is None
    # An identity holding the separator cannot make another person's key.
    tricky = session_for("main", "c", None, "a:openai-user:b")
    assert tricky.key != session_for("main", "b:openai-user:c", None, "a").key


def test_a_principal_tells_the_worker_whom_it_acts_for() -> None:
    reader = Principal("alice", frozenset({"operator.read"}))
    assert reader.caller() == pb.Caller(identity="alice", admin=False)
    assert refusal(lambda: reader.require("operator.write")).message == (
        "missing scope: operator.write"
    )
    admin = Principal("root", frozenset({"operator.admin"}))
    assert admin.caller() == pb.Caller(identity="root", admin=True)
