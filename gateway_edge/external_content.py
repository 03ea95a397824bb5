"""Text from outside (a file a request carries, a webhook's payload) as the model reads it:
between markers with a random id that the text cannot forge, so it reads as data, not as
instructions (OpenClaw's wrapping, without its long notice)."""

from __future__ import annotations

import secrets


def untrusted(text: str, source: str) -> str:
    marker = secrets.token_hex(8)
    return (
        f'<<<EXTERNAL_UNTRUSTED_CONTENT id="{marker}">>>\n'
        f"Source: External\n{source}\n---\n{text}\n"
        f'<<<END_EXTERNAL_UNTRUSTED_CONTENT id="{marker}">>>'
    )
