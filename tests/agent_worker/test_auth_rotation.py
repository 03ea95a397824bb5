"""A provider's auth profiles: the order calls try them, cooldowns, session pins."""

from __future__ import annotations

import pytest

from agent_worker.auth_rotation import COOLDOWNS, FAILURE_WINDOW, AuthRotation
from agent_worker.metrics import WorkerMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def rotation(clock: Clock, *profiles: str) -> AuthRotation:
    return AuthRotation("p", profiles or ("p:a", "p:b", "p:c"), WorkerMetrics(), clock)


def use(turns: AuthRotation, clock: Clock, session: str) -> str:
    """A call for `session` that the first profile in its order answers."""
    clock.now += 1
    profile = turns.order(session)[0]
    turns.tried(profile)
    turns.answered(profile, session)
    return profile


def test_new_sessions_take_turns_and_each_stays_on_its_profile(clock: Clock) -> None:
    turns = rotation(clock)
    first = [use(turns, clock, session) for session in ("s1", "s2", "s3", "s4")]
    assert first == ["p:a", "p:b", "p:c", "p:a"]
    assert [use(turns, clock, session) for session in ("s3", "s1", "s2")] == [
        "p:c",
        "p:a",
        "p:b",
    ]


def test_a_failing_profile_cools_down_longer_each_time_and_goes_last(clock: Clock) -> None:
    turns = rotation(clock)
    assert use(turns, clock, "s") == "p:a"
    for seconds in (*COOLDOWNS, COOLDOWNS[-1]):
        turns.failed("p:a", "ratelimited")
        assert turns.order("s") == ["p:b", "p:c", "p:a"]  # moved past, pin or not
        clock.now += seconds - 0.5
        assert turns.order("s")[-1] == "p:a"
        clock.now += 1
        assert turns.order("s")[0] == "p:a"  # ready again: the session's pin wins


def test_cooling_profiles_are_ordered_by_when_they_are_ready(clock: Clock) -> None:
    turns = rotation(clock)
    turns.failed("p:a", "auth")
    turns.failed("p:a", "auth")  # 60 s
    turns.failed("p:b", "auth")  # 30 s
    assert turns.order("s") == ["p:c", "p:b", "p:a"]


def test_an_answer_or_a_quiet_hour_forgets_the_failures(clock: Clock) -> None:
    turns = rotation(clock, "p:a", "p:b")
    turns.failed("p:a", "auth")
    turns.failed("p:a", "auth")
    clock.now += FAILURE_WINDOW + 1
    turns.failed("p:a", "auth")  # the first of a new spell: 30 s, not the third's 5 minutes
    clock.now += COOLDOWNS[0] + 0.5
    assert turns.order("s") == ["p:a", "p:b"]
    turns.failed("p:a", "auth")  # the second in a row: a minute
    clock.now += COOLDOWNS[0] + 0.5
    assert turns.order("s") == ["p:b", "p:a"]
    clock.now += COOLDOWNS[1]
    turns.answered("p:a", "s")
    turns.failed("p:a", "auth")  # after an answer, the first again
    clock.now += COOLDOWNS[0] + 0.5
    assert turns.order("s") == ["p:a", "p:b"]


def test_cooldowns_are_counted_by_profile_and_reason(clock: Clock) -> None:
    metrics = WorkerMetrics()
    turns = AuthRotation("p", ("p:a", "p:b"), metrics, clock)
    turns.failed("p:b", "ratelimited")
    cooldowns = metrics.registry.get_sample_value(
        "clawgate_worker_auth_profile_cooldowns_total",
        {"provider": "p", "profile": "p:b", "reason": "ratelimited"},
    )
    assert cooldowns == 1
