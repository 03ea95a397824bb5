from __future__ import annotations

import time
import uuid

import pytest

from gateway_edge.errors import ApiError
from gateway_edge.sessions import Session, session_for


def session_key_for(agent_id: str, user: str | None, header_key: str | None) -> str:
    return session_for(agent_id, user, header_key).key


def test_one_decision_gives_the_key_and_whether_a_client_named_it() -> None:
    assert session_for("main", "bob", "custom:key") == Session("custom:key", named=True)
    assert session_for("main", "bob", None) == Session("agent:main:openai-user:bob", named=True)
    fresh = session_for("main", None, None)
    assert not fresh.named and fresh.key.startswith("agent:main:openai:")


def test_precedence_header_then_user_then_fresh() -> None:
    assert session_key_for("main", "bob", " custom:key ") == "custom:key"
    assert session_key_for("main", "bob", None) == "agent:main:openai-user:bob"
    fresh = {session_key_for("beta", None, None) for _ in range(3)}
    assert len(fresh) == 3 and all(key.startswith("agent:beta:openai:") for key in fresh)
    assert session_key_for("main", "", None).startswith("agent:main:openai:")


def test_fresh_keys_sort_in_the_order_they_were_made() -> None:
    """Stores index sessions by key: later keys go to the end of the index."""
    earlier = session_key_for("main", None, None)
    time.sleep(0.002)
    later = session_key_for("main", None, None)
    assert earlier < later
    assert uuid.UUID(later.removeprefix("agent:main:openai:")).version == 7


@pytest.mark.parametrize(
    "key",
    ["", "  ", "x" * 513, "a\x00b", "a\nb", "a\x7fb", "a\u0085b", "subagent:1", "CRON:x", "acp:y"],
)
def test_bad_header_keys(key: str) -> None:
    with pytest.raises(ApiError) as caught:
        session_key_for("main", None, key)
    assert caught.value.status == 400 and caught.value.param == "x-openclaw-session-key"


def test_longest_allowed_key() -> None:
    assert session_key_for("main", None, "k" * 512) == "k" * 512


def test_header_keys_are_read_as_utf8() -> None:
    sent = "agent:main:openai-user:日本".encode()
    assert session_key_for("main", None, sent.decode("latin-1")) == "agent:main:openai-user:日本"
    assert session_key_for("main", None, "caf\xe9") == "caf\xe9"  # not UTF-8: kept as received


@pytest.mark.parametrize("user", ["a\nb", "\x00", "u" * 600])
def test_users_that_cannot_make_a_key(user: str) -> None:
    with pytest.raises(ApiError) as caught:
        session_key_for("main", user, None)
    assert caught.value.param == "user"
