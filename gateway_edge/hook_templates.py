"""OpenClaw's hook templates: `{{payload.issue.title}}` (or `{{issue.title}}`), indexing
(`{{messages[0].subject}}`), `{{headers.x-event-type}}`, `{{query.kind}}`, `{{path}}` and
`{{now}}`. Missing and null values read as empty text, objects and arrays as JSON.

A template is read once: what a value holds is inserted as it is, never read as a template in
turn, so a payload that carries `{{…}}` in its text cannot reach other fields (or the headers).
Values are looked up in the parsed JSON only (dict keys and list indexes), never attributes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class HookRequest:
    """What a template may read of the request."""

    payload: Any
    path: str  # the subpath after hooks.path
    headers: dict[str, str] = field(default_factory=dict)  # lowercase names
    query: dict[str, str] = field(default_factory=dict)


def render(template: str, request: HookRequest) -> str:
    return _PLACEHOLDER.sub(lambda found: _text(_value(found.group(1), request)), template)


def _value(expression: str, request: HookRequest) -> Any:
    if expression == "now":
        return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if expression == "path":
        return request.path
    scope, _, rest = expression.partition(".")
    if scope == "headers" and rest:
        return request.headers.get(rest.lower())
    if scope == "query" and rest:
        return request.query.get(rest)
    if scope == "payload":
        return walk(request.payload, rest) if rest else request.payload
    return walk(request.payload, expression)


def walk(value: Any, path: str) -> Any:
    """`value` at a dotted path with [n] indexes; None where it leads nowhere."""
    position = 0
    for found in _SEGMENT.finditer(path):
        if found.start() != position and path[position] != ".":
            return None  # text between segments that no segment reads: not a path
        position = found.end()
        key, index = found.group(1), found.group(2)
        if key is not None:
            value = value.get(key) if isinstance(value, dict) else None
        else:
            number = int(index)
            value = value[number] if isinstance(value, list) and number < len(value) else None
        if value is None:
            return None
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
