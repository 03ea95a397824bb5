"""Retries and fallbacks before the first event (agent_worker/model_chain.py), with scripted
providers: which failures are asked again, how long the pauses are, what the caller gets."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from agent_worker.auth_rotation import AuthRotation
from agent_worker.deadline import ProviderDeadline
from agent_worker.domain import FinishReason, Sampling, Usage
from agent_worker.errors import (
    ProviderOverloadedError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    TurnError,
)
from agent_worker.events import TextDelta, TurnFinished
from agent_worker.metrics import WorkerMetrics
from agent_worker.model_chain import ModelChain, ModelTarget, RetryPolicy
from agent_worker.providers.base import ProviderEvent, ProviderRequest

FAST = RetryPolicy(first_pause=0.001, max_pause=0.002)


class Scripted:
    """Fails with the scripted errors, one per call, then answers "ok"."""

    supports_images = supports_tools = gives_logprobs = False

    def __init__(self, *failures: TurnError) -> None:
        self.failures = list(failures)
        self.models: list[str] = []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        self.models.append(request.model)
        if self.failures:
            raise self.failures.pop(0)
        yield TextDelta("ok")
        yield TurnFinished(FinishReason.STOP, Usage(1, 1))


def chain(*targets: tuple[str, Scripted]) -> ModelChain:
    return ModelChain(
        [ModelTarget("p", model, provider) for model, provider in targets], WorkerMetrics(), FAST
    )


async def first_text(models: ModelChain) -> str:
    deadline = ProviderDeadline(10)
    try:
        events, first, _ = await models.first_event(ProviderRequest("a", (), Sampling()), deadline)
        await events.aclose()
    finally:
        deadline.cancel()
    assert isinstance(first, TextDelta)
    return first.text


async def test_a_transient_failure_is_asked_again_of_the_same_model() -> None:
    primary = Scripted(ProviderOverloadedError("busy"))
    assert await first_text(chain(("a", primary))) == "ok"
    assert primary.models == ["a", "a"]


async def test_after_its_attempts_the_next_model_answers() -> None:
    primary = Scripted(*[ProviderOverloadedError("busy")] * 3)
    fallback = Scripted()
    assert await first_text(chain(("a", primary), ("b", fallback))) == "ok"
    assert primary.models == ["a"] * 3 and fallback.models == ["b"]


async def test_a_rejected_request_is_not_asked_again() -> None:
    primary, fallback = Scripted(ProviderRejectedError("bad")), Scripted()
    with pytest.raises(ProviderRejectedError):
        await first_text(chain(("a", primary), ("b", fallback)))
    assert fallback.models == []


async def test_when_all_fail_the_last_failure_names_every_model() -> None:
    limited = ProviderRateLimitedError("provider rate limit: slow down", retry_after=60)
    primary = Scripted(ProviderOverloadedError("busy"), *[ProviderOverloadedError("busy")] * 2)
    fallback = Scripted(limited)
    with pytest.raises(ProviderRateLimitedError) as caught:
        await first_text(chain(("a", primary), ("b", fallback)))
    assert caught.value.message.endswith("(models tried: p/a ×3, p/b ×1)")
    assert caught.value.retry_after == 60  # too long to wait out: passed on to the client


def test_pauses_double_with_jitter_and_honour_a_short_retry_after() -> None:
    policy = RetryPolicy()
    assert 0.25 <= policy.pause(1, None) <= 0.5  # type: ignore[operator]
    assert 0.5 <= policy.pause(2, None) <= 1.0  # type: ignore[operator]
    assert policy.pause(3, None) is None  # three attempts per model
    assert policy.pause(1, 2.0) == 2.0
    assert policy.pause(1, 30.0) is None  # longer than a turn waits: the next model now


class Keyed(Scripted):
    """Scripted, recording the auth profile each call used."""

    def __init__(self, *failures: TurnError) -> None:
        super().__init__(*failures)
        self.profiles: list[str] = []

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        self.profiles.append(request.auth_profile)
        async for event in super().stream(request):
            yield event


def keyed_chain(provider: Keyed, metrics: WorkerMetrics) -> ModelChain:
    rotation = AuthRotation("p", ("p:a", "p:b"), metrics)
    return ModelChain([ModelTarget("p", "a", provider, rotation)], metrics, FAST)


def cooldowns(metrics: WorkerMetrics, profile: str, reason: str) -> float | None:
    return metrics.registry.get_sample_value(
        "clawgate_worker_auth_profile_cooldowns_total",
        {"provider": "p", "profile": profile, "reason": reason},
    )


async def test_a_rate_limited_key_moves_to_the_next_profile_before_any_pause() -> None:
    metrics = WorkerMetrics()
    provider = Keyed(ProviderRateLimitedError("slow down", retry_after=30))
    assert await first_text(keyed_chain(provider, metrics)) == "ok"
    assert provider.profiles == ["p:a", "p:b"]  # a Retry-After of 30 s was not waited out
    assert cooldowns(metrics, "p:a", "ratelimited") == 1


async def test_every_key_rate_limited_cools_each_once_and_retries_the_last() -> None:
    metrics = WorkerMetrics()
    limited = [ProviderRateLimitedError("slow down") for _ in range(3)]
    provider = Keyed(*limited)
    assert await first_text(keyed_chain(provider, metrics)) == "ok"
    assert provider.profiles == ["p:a", "p:b", "p:b", "p:b"]  # the last key's three attempts
    assert cooldowns(metrics, "p:a", "ratelimited") == 1
    assert cooldowns(metrics, "p:b", "ratelimited") == 1  # its retries do not lengthen it
