"""Which session a request continues: header > OpenAI `user` > a fresh key."""

from __future__ import annotations

import re
import uuid

from gateway_edge.errors import bad_request

MAX_SESSION_KEY_LENGTH = 512
RESERVED_NAMESPACES = ("subagent:", "cron:", "acp:")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def validate_session_key(key: str) -> str:
    key = key.strip()
    if not key:
        raise bad_request(
            "x-openclaw-session-key must not be empty.", param="x-openclaw-session-key"
        )
    if len(key) > MAX_SESSION_KEY_LENGTH:
        raise bad_request(
            f"x-openclaw-session-key is longer than {MAX_SESSION_KEY_LENGTH} characters.",
            param="x-openclaw-session-key",
        )
    if _CONTROL_CHARACTERS.search(key):
        raise bad_request(
            "x-openclaw-session-key contains control characters.", param="x-openclaw-session-key"
        )
    if key.lower().startswith(RESERVED_NAMESPACES):
        raise bad_request(
            f"x-openclaw-session-key uses a reserved namespace ({', '.join(RESERVED_NAMESPACES)}).",
            param="x-openclaw-session-key",
        )
    return key


def session_key_for(agent_id: str, user: str | None, header_key: str | None) -> str:
    if header_key is not None:
        return validate_session_key(header_key)
    if user:
        return f"agent:{agent_id}:openai-user:{user}"
    return f"agent:{agent_id}:openai:{uuid.uuid4()}"
