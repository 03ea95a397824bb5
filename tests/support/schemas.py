"""Validates responses against OpenAI's published schemas (a copy of shared/spec's file).

The file mixes OpenAPI 3.1 with 3.0's `nullable`; that keyword is turned into JSON Schema's
`null` type so that `"finish_reason": null` validates as OpenAI means it to.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMAS_FILE = Path(__file__).with_name("openai-chat-schemas.json")


def _without_nullable(node: Any) -> Any:
    if isinstance(node, list):
        return [_without_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _without_nullable(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        if "type" in converted:
            types = (
                converted["type"] if isinstance(converted["type"], list) else [converted["type"]]
            )
            converted["type"] = [*types, "null"]
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
    return converted


@functools.cache
def _components() -> dict[str, Any]:
    document = json.loads(SCHEMAS_FILE.read_text())
    return _without_nullable(document["components"])


@functools.cache
def validator(schema_name: str) -> Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": _components()}
    return Draft202012Validator(schema)


def assert_valid(schema_name: str, instance: Any) -> None:
    errors = sorted(
        validator(schema_name).iter_errors(instance), key=lambda error: list(error.path)
    )
    assert not errors, f"{schema_name}: " + "; ".join(
        f"{'/'.join(map(str, error.path))}: {error.message}" for error in errors[:5]
    )
