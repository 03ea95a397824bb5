from __future__ import annotations

import pytest

from gateway_edge.auth import PASSWORD_ENV, TOKEN_ENV, Authenticator, AuthSetupError
from services.gateway_config import AuthConfig


def auth(
    environ: dict[str, str] | None = None, bind: str = "127.0.0.1", **fields: object
) -> Authenticator:
    return Authenticator.from_config(AuthConfig.model_validate(fields), bind, environ or {})


def test_token_mode_checks_bearer_case_insensitively_and_trimmed() -> None:
    checker = auth(token="s3cret")
    assert checker.mode == "token"
    assert checker.accepts("Bearer s3cret") and checker.accepts("  bearer   s3cret  ")
    assert checker.accepts("BEARER s3cret")
    assert not checker.accepts("Bearer s3cre") and not checker.accepts("Basic s3cret")
    assert not checker.accepts(None) and not checker.accepts("") and not checker.accepts("Bearer")


def test_env_fallbacks_and_config_wins() -> None:
    assert auth({TOKEN_ENV: "env-token"}).accepts("Bearer env-token")
    assert auth({TOKEN_ENV: "env-token"}, token="cfg").accepts("Bearer cfg")
    assert not auth({TOKEN_ENV: "env-token"}, token="cfg").accepts("Bearer env-token")
    password = auth({PASSWORD_ENV: "pw"})
    assert password.mode == "password" and password.accepts("Bearer pw")
    assert auth(mode="password", password="pw2").accepts("Bearer pw2")


def test_mode_absent_prefers_password_when_set() -> None:
    checker = auth(token="t", password="p")
    assert (
        checker.mode == "password"
        and checker.accepts("Bearer p")
        and not checker.accepts("Bearer t")
    )


def test_no_secret_refuses_to_start() -> None:
    with pytest.raises(AuthSetupError, match=TOKEN_ENV):
        auth()
    with pytest.raises(AuthSetupError, match=PASSWORD_ENV):
        auth(mode="password")


def test_none_mode_only_on_loopback_unless_opted_in() -> None:
    assert auth(mode="none").accepts(None)
    assert auth(mode="none", bind="::1").accepts(None)
    with pytest.raises(AuthSetupError, match="allowUnauthenticatedNonLoopback"):
        auth(mode="none", bind="0.0.0.0")
    assert auth(mode="none", bind="0.0.0.0", allowUnauthenticatedNonLoopback=True).accepts(None)
