from __future__ import annotations

import re
import time
import uuid

from services.ids import random_hex, time_ordered_uuid


def test_time_ordered_uuid_is_a_canonical_version_7_uuid_of_now() -> None:
    before = time.time_ns() // 1_000_000
    values = [time_ordered_uuid() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(values)) == 2000
    for value in values:
        parsed = uuid.UUID(value)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == value
        assert before <= parsed.int >> 80 <= after


def test_time_ordered_uuids_sort_by_their_millisecond() -> None:
    earlier = [time_ordered_uuid() for _ in range(200)]
    time.sleep(0.002)
    later = [time_ordered_uuid() for _ in range(200)]
    assert max(earlier) < min(later)


def test_time_ordered_uuid_is_random_after_its_time() -> None:
    values = [uuid.UUID(time_ordered_uuid()).int for _ in range(2000)]
    random_bits = [(value >> 64 & 0xFFF) << 62 | value & ((1 << 62) - 1) for value in values]
    assert len(set(random_bits)) == 2000
    # every one of the 74 random bits is set in some keys and clear in others
    assert all(0 < sum(bits >> index & 1 for bits in random_bits) < 2000 for index in range(74))


def test_random_hex_is_32_hex_digits_and_varies() -> None:
    values = {random_hex() for _ in range(2000)}
    assert len(values) == 2000
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in values)
    # every position takes many values: the bits are random, not a counter or a constant
    assert all(len({value[index] for value in values}) > 8 for index in range(32))
