from __future__ import annotations

import re
import uuid

from services.ids import random_hex, random_uuid


def test_random_uuid_is_a_canonical_version_4_uuid() -> None:
    values = {random_uuid() for _ in range(2000)}
    assert len(values) == 2000
    for value in values:
        parsed = uuid.UUID(value)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == value


def test_random_hex_is_32_hex_digits_and_varies() -> None:
    values = {random_hex() for _ in range(2000)}
    assert len(values) == 2000
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in values)
    # every position takes many values: the bits are random, not a counter or a constant
    assert all(len({value[index] for value in values}) > 8 for index in range(32))
