"""What a hook request asks for: the agent runs it dispatches, by OpenClaw's rules (direct
`/agent` payloads, `mappings` with templates and `forEach`), each checked against the hooks'
agent and session-key policy and given its replay identity. No I/O here: hooks.py serves it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from gateway_edge.external_content import untrusted
from gateway_edge.hook_templates import HookRequest, render
from services.hooks_config import FOR_EACH_LIMIT, HookMapping, HooksConfig

log = logging.getLogger("clawgate.edge.hooks")
MAX_IDEMPOTENCY_KEY = 256


class HookRefused(Exception):
    """A request the hooks refuse: its status and the `error` the sender reads."""

    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.headers = headers or {}


def bad_hook(error: str) -> HookRefused:
    return HookRefused(400, error)


@dataclass(frozen=True, slots=True)
class AgentAction:
    """One agent run to start."""

    hook: str  # the mapping's id, or "agent"
    name: str
    agent_id: str
    session_key: str  # "" for a fresh session of its own (isolated)
    message: str  # as the model reads it (wrapped unless the mapping says otherwise)
    model: str
    timeout_seconds: int
    replay_key: str  # "" for none


@dataclass(frozen=True, slots=True)
class WakeAction:
    """A system event for an agent's main session: run now, or kept for its next turn."""

    hook: str
    agent_id: str
    session_key: str
    text: str  # as the model reads it
    mode: str  # "now" or "next-heartbeat"


Action = AgentAction | WakeAction


def main_session(agent_id: str) -> str:
    """An agent's main session (OpenClaw's key for it)."""
    return f"agent:{agent_id}:main"


def system_event(text: str) -> str:
    return f"System event: {text}"


def idempotency_key(headers: dict[str, str], payload: Any) -> str | None:
    """OpenClaw's order: `Idempotency-Key`, `X-OpenClaw-Idempotency-Key`, the payload's
    `idempotencyKey`; only a trimmed, non-empty string of at most 256 characters counts."""
    found = [
        headers.get("idempotency-key"),
        headers.get("x-openclaw-idempotency-key"),
        payload.get("idempotencyKey") if isinstance(payload, dict) else None,
    ]
    for candidate in found:
        if isinstance(candidate, str) and candidate.strip():
            key = candidate.strip()
            return key if len(key) <= MAX_IDEMPOTENCY_KEY else None
    return None


class HookPlanner:
    def __init__(self, config: HooksConfig, token: str, default_agent: str) -> None:
        self._config = config
        self._default_agent = default_agent
        # Replay identities are scoped to the hooks' token: a new token starts afresh.
        self._scope = hashlib.sha256(token.encode()).hexdigest()[:16]

    def direct(self, request: HookRequest, headers: dict[str, str]) -> AgentAction:
        """`POST <path>/agent`: the payload names the run."""
        payload = request.payload
        if not isinstance(payload, dict):
            raise bad_hook("the payload must be a JSON object")
        message = payload.get("message")
        if not isinstance(message, str) or not message.strip():
            raise bad_hook("message is required (a non-empty string)")
        agent_id = _text_field(payload, "agentId") or self._default_agent
        mode = payload.get("sessionMode", "isolated")
        if mode not in ("isolated", "persistent"):
            raise bad_hook("sessionMode must be 'isolated' or 'persistent'")
        asked_key = _text_field(payload, "sessionKey")
        if asked_key is not None and not self._config.allow_request_session_key:
            raise bad_hook(
                "sessionKey is not accepted from requests (hooks.allowRequestSessionKey is off)"
            )
        if mode == "persistent" and (
            asked_key is None or not self._config.allowed_session_key_prefixes
        ):
            raise bad_hook(
                "sessionMode 'persistent' needs a sessionKey, hooks.allowRequestSessionKey and"
                " hooks.allowedSessionKeyPrefixes"
            )
        return self._action(
            "agent",
            _text_field(payload, "name") or "Hook",
            agent_id,
            asked_key,
            mode == "persistent",
            message,
            _text_field(payload, "model") or "",
            _timeout(payload.get("timeoutSeconds")),
            idempotency_key(headers, payload),
            unsafe=False,
        )

    def wake(self, request: HookRequest) -> WakeAction:
        """`POST <path>/wake`: a system event for the agent's main session."""
        payload = request.payload
        if not isinstance(payload, dict):
            raise bad_hook("the payload must be a JSON object")
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            raise bad_hook("text is required (a non-empty string)")
        mode = payload.get("mode", "now")
        if mode not in ("now", "next-heartbeat"):
            raise bad_hook("mode must be 'now' or 'next-heartbeat'")
        agent_id = _text_field(payload, "agentId") or self._default_agent
        session_key = _text_field(payload, "sessionKey")
        if session_key is not None:
            config = self._config
            if mode != "now" or not config.allow_request_session_key:
                raise bad_hook(
                    "a wake's sessionKey needs mode 'now' and hooks.allowRequestSessionKey"
                )
            if not config.session_key_allowed(session_key):
                raise bad_hook(
                    f"session key {session_key!r} is not allowed by allowedSessionKeyPrefixes"
                )
        return self._wake("wake", agent_id, session_key, text, mode)

    def _wake(
        self, hook: str, agent_id: str, session_key: str | None, text: str, mode: str
    ) -> WakeAction:
        if not self._config.agent_allowed(agent_id):
            raise bad_hook(f"agent {agent_id!r} is not in hooks.allowedAgentIds")
        session = session_key or main_session(agent_id)
        return WakeAction(hook, agent_id, session, system_event(text.strip()), mode)

    def mapped(
        self, request: HookRequest, headers: dict[str, str]
    ) -> tuple[str, list[Action]] | None:
        """The first mapping that matches, and its actions (none: 204); None: no mapping."""
        for index, mapping in enumerate(self._config.mappings):
            if not _matches(mapping, request):
                continue
            mapping_id = self._config.mapping_id(index)
            explicit_key = idempotency_key(headers, request.payload)
            actions: list[Action] = []
            for item in _fanned_out(mapping, request):
                if mapping.action == "wake":
                    text = render(mapping.text_template, item)
                    if not text.strip():
                        raise bad_hook(f"mapping {mapping_id!r}: the rendered text is empty")
                    agent_id = mapping.agent_id or self._default_agent
                    actions.append(self._wake(mapping_id, agent_id, None, text, mapping.wake_mode))
                else:
                    actions.append(self._mapped_action(mapping_id, mapping, item, explicit_key))
            return mapping_id, actions
        return None

    def _mapped_action(
        self, mapping_id: str, mapping: HookMapping, request: HookRequest, key: str | None
    ) -> AgentAction:
        message = render(mapping.message_template, request)
        if not message.strip():
            raise bad_hook(f"mapping {mapping_id!r}: the rendered message is empty")
        session_key = None
        if mapping.session_key is not None:
            session_key = render(mapping.session_key, request)
            if not session_key.strip():
                raise bad_hook(f"mapping {mapping_id!r}: the rendered sessionKey is empty")
            templated = "{{" in mapping.session_key
            if templated and not self._config.allow_request_session_key:
                raise bad_hook(
                    f"mapping {mapping_id!r}: a templated sessionKey needs"
                    " hooks.allowRequestSessionKey"
                )
        persistent = mapping.session_mode == "persistent"
        if persistent and session_key is None and self._config.default_session_key is None:
            raise bad_hook(
                f"mapping {mapping_id!r}: sessionMode 'persistent' needs a sessionKey or"
                " hooks.defaultSessionKey"
            )
        name = render(mapping.name, request) if mapping.name else "Hook"
        model = render(mapping.model, request) if mapping.model else ""
        return self._action(
            mapping_id,
            name,
            mapping.agent_id or self._default_agent,
            session_key,
            persistent,
            message,
            model,
            mapping.timeout_seconds or 0,
            # A fan-out's items replay by what they dispatch, even without a key (OpenClaw's).
            key if key is not None or mapping.for_each is None else "",
            unsafe=mapping.allow_unsafe_external_content,
        )

    def _action(
        self,
        hook: str,
        name: str,
        agent_id: str,
        session_key: str | None,
        persistent: bool,
        message: str,
        model: str,
        timeout_seconds: int,
        key: str | None,
        unsafe: bool,
    ) -> AgentAction:
        config = self._config
        if not config.agent_allowed(agent_id):
            raise bad_hook(f"agent {agent_id!r} is not in hooks.allowedAgentIds")
        resolved = session_key if session_key is not None else config.default_session_key
        if resolved is not None and not config.session_key_allowed(resolved):
            raise bad_hook(f"session key {resolved!r} is not allowed by allowedSessionKeyPrefixes")
        if resolved is None and not config.session_key_allowed("hook:"):
            raise bad_hook(
                "generated hook: session keys are not allowed by allowedSessionKeyPrefixes"
            )
        # Isolated runs get a fresh session each; persistent ones continue the resolved one.
        run_session = resolved if persistent and resolved is not None else ""
        replay_key = ""
        if key is not None:
            identity = [self._scope, hook, key, agent_id, run_session, message, model]
            replay_key = hashlib.sha256(orjson.dumps(identity)).hexdigest()
        return AgentAction(
            hook,
            name,
            agent_id,
            run_session,
            message if unsafe else untrusted(message, f"Webhook: {name}"),
            model,
            timeout_seconds,
            replay_key,
        )


def _matches(mapping: HookMapping, request: HookRequest) -> bool:
    match = mapping.match
    if match.path is not None and match.path != request.path:
        return False
    if match.source is not None:
        source = request.payload.get("source") if isinstance(request.payload, dict) else None
        return source == match.source
    return True


def _fanned_out(mapping: HookMapping, request: HookRequest) -> list[HookRequest]:
    """One request per item of the mapping's `forEach` array (the array replaced by that item
    alone), at most FOR_EACH_LIMIT; the request itself when it has none."""
    key = mapping.for_each
    if key is None:
        return [request]
    payload = request.payload
    items = payload.get(key) if isinstance(payload, dict) else None
    if not isinstance(items, list):
        return []
    if len(items) > FOR_EACH_LIMIT:
        log.warning(
            "hook %s: forEach %r holds %d items; the first %d are dispatched",
            request.path,
            key,
            len(items),
            FOR_EACH_LIMIT,
        )
    return [
        HookRequest({**payload, key: [item]}, request.path, request.headers, request.query)
        for item in items[:FOR_EACH_LIMIT]
    ]


def _text_field(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise bad_hook(f"{name} must be a non-empty string")
    return value.strip()


def _timeout(value: Any) -> int:
    """A positive number of seconds, floored; anything else is ignored (OpenClaw's)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
        return int(value)
    return 0
