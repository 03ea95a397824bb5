from __future__ import annotations

import pytest

from tests.support.schemas import SCHEMAS_FILE, SHARED_SCHEMAS_FILE


def test_vendored_schemas_match_the_shared_spec() -> None:
    if not SHARED_SCHEMAS_FILE.exists():
        pytest.skip(f"no shared spec beside the checkout ({SHARED_SCHEMAS_FILE})")
    assert SCHEMAS_FILE.read_bytes() == SHARED_SCHEMAS_FILE.read_bytes(), (
        "tests/support/openai-chat-schemas.json is stale: copy shared/spec's file over it"
    )
