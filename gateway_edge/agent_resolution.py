"""Which agent a request is for: header `x-openclaw-agent-id` first, then the `model` field."""

from __future__ import annotations

import re
from collections.abc import Collection

from gateway_edge.errors import bad_request

_AGENT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_DEFAULT_MODELS = ("openclaw", "openclaw/default")
_PREFIXES = ("openclaw:", "openclaw/", "agent:")
QUOTED_CHARACTERS = 64


def quoted(value: str) -> str:
    """A client's value in an error message: at most a short prefix of it."""
    if len(value) <= QUOTED_CHARACTERS:
        return repr(value)
    return f"{value[:QUOTED_CHARACTERS]!r}… ({len(value)} characters)"


VALID_FORMS = (
    "'openclaw', 'openclaw/default', "
    "'openclaw:<agentId>', 'openclaw/<agentId>' or 'agent:<agentId>'"
)


def agent_id_from_model(model: str | None, default_agent_id: str) -> str:
    if model is None:
        return default_agent_id
    lowered = model.strip().lower()
    if lowered in _DEFAULT_MODELS:
        return default_agent_id
    for prefix in _PREFIXES:
        if lowered.startswith(prefix):
            candidate = lowered.removeprefix(prefix)
            if _AGENT_ID.fullmatch(candidate):
                return candidate
            break
    raise bad_request(
        f"Invalid model {quoted(model)}: use {VALID_FORMS}.", param="model", code="model_not_found"
    )


def resolve_agent(
    model: str | None, header_agent_id: str | None, known: Collection[str], default_agent_id: str
) -> str:
    if header_agent_id is not None and header_agent_id.strip():
        agent_id = header_agent_id.strip().lower()
        if not _AGENT_ID.fullmatch(agent_id):
            raise bad_request(
                f"Invalid agent id {quoted(header_agent_id)} in x-openclaw-agent-id.", param="model"
            )
    else:
        agent_id = agent_id_from_model(model, default_agent_id)
    if agent_id not in known:
        raise bad_request(
            f"Unknown agent {quoted(agent_id)};"
            f" configured agents: {', '.join(sorted(known)) or 'none'}.",
            param="model",
            code="model_not_found",
        )
    return agent_id
