"""historyLimit cuts in steps of half the limit (issue 46): the prompt's first message moves
once every `limit / 2` messages, not with each one, so a provider's prompt cache keeps it."""

from __future__ import annotations

from agent_worker.domain import ChatMessage, StoredContext


def read(total: int, limit: int) -> StoredContext:
    """What the store reads of a session of `total` messages: the last `limit`."""
    first = max(total - limit, 0)
    return StoredContext([ChatMessage("user", str(n)) for n in range(first, total)], first)


def test_nothing_is_cut_under_the_limit() -> None:
    stored = read(99, 100)
    assert stored.cut_in_steps(100) is stored
    assert stored.cut_in_steps(None) is stored  # no limit


def test_the_start_moves_in_steps_of_half_the_limit() -> None:
    starts = [read(total, 100).cut_in_steps(100).first_position for total in range(100, 260)]
    assert sorted(set(starts)) == [0, 50, 100, 150, 200]
    for total in range(100, 260):
        stepped = read(total, 100).cut_in_steps(100)
        assert 50 <= len(stepped.messages) <= 100
        assert stepped.messages[0].text == str(stepped.first_position)
        assert stepped.last_position == total  # the session's length as read is unchanged
