"""Which session a request continues: header > OpenAI `user` > a fresh key.

Keys travel in an HTTP header both ways, so they are read and written as UTF-8 bytes and may
hold no control characters: a key a client got back can always be sent again verbatim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from gateway_edge.errors import bad_request
from services.ids import time_ordered_uuid

SESSION_KEY_HEADER = "x-openclaw-session-key"
MAX_SESSION_KEY_LENGTH = 512
RESERVED_NAMESPACES = ("subagent:", "cron:", "acp:")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def header_text(raw: str) -> str:
    """A header value as the client meant it: ASGI servers hand us bytes decoded as latin-1."""
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return raw


def _check(key: str, param: str, what: str) -> str:
    if not key:
        raise bad_request(f"{what} must not be empty.", param)
    if len(key) > MAX_SESSION_KEY_LENGTH:
        raise bad_request(f"{what} is longer than {MAX_SESSION_KEY_LENGTH} characters.", param)
    if _CONTROL_CHARACTERS.search(key):
        raise bad_request(f"{what} contains control characters.", param)
    return key


def validate_session_key(key: str) -> str:
    key = _check(key.strip(), SESSION_KEY_HEADER, SESSION_KEY_HEADER)
    if key.lower().startswith(RESERVED_NAMESPACES):
        raise bad_request(
            f"{SESSION_KEY_HEADER} uses a reserved namespace ({', '.join(RESERVED_NAMESPACES)}).",
            SESSION_KEY_HEADER,
        )
    return key


@dataclass(frozen=True, slots=True)
class Session:
    """The session a request continues. `named`: a client named it (the header or `user`), so it
    may have a transcript and its turns stick to one worker; else the key was made up here."""

    key: str
    named: bool


def session_for(
    agent_id: str, user: str | None, header_key: str | None, identity: str = ""
) -> Session:
    """`identity`: whom the turn runs for; a `user` names a conversation of theirs, so two
    people sending the same `user` have two sessions (the owner's keys are as before)."""
    if header_key is not None:
        return Session(validate_session_key(header_text(header_key)), named=True)
    if user:
        key = _check(
            _user_key_prefix(agent_id, identity) + user, "user", "The session key from `user`"
        )
        return Session(key, named=True)
    # The stores know this shape: one turn under it is a one-off call, left out of listings.
    return Session(f"agent:{agent_id}:openai:{time_ordered_uuid()}", named=False)


def user_of(session_key: str, agent_id: str, identity: str) -> str | None:
    """The `user` value that names `session_key` for `identity`, if a `user` named it."""
    prefix = _user_key_prefix(agent_id, identity)
    return session_key[len(prefix) :] if session_key.startswith(prefix) else None


def _user_key_prefix(agent_id: str, identity: str) -> str:
    # Quoted: an identity holding ":" could otherwise make another's key.
    whose = f"person:{quote(identity, safe='@.-_+')}:" if identity else ""
    return f"agent:{agent_id}:{whose}openai-user:"
