"""An agent's models in the order it tries them (`model: {primary, fallbacks}`), and the rule
for asking again: a transient failure before any answer (unreachable, timed out, rate-limited,
overloaded) is asked again of the same model after a pause, then of the next model; an answer
that has started is never restarted. A provider with auth profiles (auth_rotation.py) first
moves to its next profile when a key is refused or rate-limited; a refused key is never asked
again, and when no profile is left the next model is.

Only the start of an answer goes through here (`first_event`): once the first event came, the
turn reads the provider's own stream, so a turn that never fails pays nothing per event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from agent_worker.auth_rotation import AuthRotation
from agent_worker.deadline import ProviderDeadline
from agent_worker.errors import TurnError
from agent_worker.metrics import WorkerMetrics
from agent_worker.model_call import model_stream
from agent_worker.providers.base import Provider, ProviderEvent, ProviderRequest

log = logging.getLogger("clawgate.worker")


@dataclass(frozen=True, slots=True)
class ModelTarget:
    provider_name: str
    model: str
    provider: Provider
    rotation: AuthRotation | None = None  # the provider's auth profiles, when it has them

    @property
    def ref(self) -> str:
        return f"{self.provider_name}/{self.model}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts_per_model: int = 3
    first_pause: float = 0.5  # seconds; doubled per attempt, with jitter
    max_pause: float = 4.0
    # A longer Retry-After is not waited out within the turn: the next model is asked instead.
    max_retry_after: float = 10.0

    def pause(self, attempt: int, retry_after: float | None) -> float | None:
        """The pause before attempt `attempt + 1` on the same model; None: move on."""
        if attempt >= self.attempts_per_model:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        pause = min(self.first_pause * 2 ** (attempt - 1), self.max_pause)
        return pause * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret


def _reason(error: TurnError) -> str:
    """ratelimited, auth, overloaded, timeout, unavailable…"""
    return type(error).__name__.removeprefix("Provider").removesuffix("Error").lower()


class ModelChain:
    """The primary model, then the fallbacks; the primary's provider says what the chain can do
    (a fallback that cannot do it refuses the request as any provider would)."""

    def __init__(
        self,
        targets: Sequence[ModelTarget],
        metrics: WorkerMetrics,
        policy: RetryPolicy | None = None,
    ) -> None:
        assert targets, "a chain needs its primary model"
        self.targets = tuple(targets)
        self.primary = targets[0].provider
        self._metrics = metrics
        self._policy = policy or RetryPolicy()

    async def first_event(
        self, request: ProviderRequest, deadline: ProviderDeadline
    ) -> tuple[AsyncGenerator[ProviderEvent, None], ProviderEvent | None, ModelTarget]:
        """The answer's stream, its first event (None: it ended at once) and the model that
        gives it: the first that starts one. The caller closes the stream. Raises the last
        failure, naming each model tried, when none did."""
        tried: list[str] = []
        failure: TurnError | None = None
        for position, target in enumerate(self.targets):
            asked = request
            if target.model != request.model:
                asked = dataclasses.replace(request, model=target.model)
            rotation = target.rotation
            # The profiles this call may use, in turn ("" alone: the provider's own key).
            profiles = rotation.order(request.cache_key) if rotation else [""]
            profile = profiles.pop(0)
            cooled: set[str] = set()  # a profile's cooldown grows once per call, not per retry
            attempt = 0
            while True:
                attempt += 1
                if rotation is not None:
                    asked = dataclasses.replace(asked, auth_profile=profile)
                    rotation.tried(profile)
                events = model_stream(target.provider_name, target.provider, asked)
                try:
                    first = await deadline.wait_for(anext(events, None))
                except TurnError as error:
                    await events.aclose()
                    error.model_ref = error.model_ref or target.ref
                    if not (error.transient or error.key_refused):
                        raise
                    failure = error
                else:
                    if rotation is not None:
                        rotation.answered(profile, request.cache_key)
                    return events, first, target
                if rotation is not None and (failure.key_refused or failure.rate_limited):
                    if profile not in cooled:
                        cooled.add(profile)
                        rotation.failed(profile, _reason(failure))
                    if profiles:  # the next key at once: its limits are its own
                        log.warning(
                            "model %s: auth profile %s failed (%s); trying profile %s",
                            target.ref,
                            profile,
                            failure.message,
                            profiles[0],
                        )
                        profile = profiles.pop(0)
                        attempt -= 1
                        continue
                if failure.key_refused:
                    break  # no key left that might do: the next model
                pause = self._policy.pause(attempt, failure.retry_after)
                if pause is None:
                    break
                log.warning(
                    "model %s failed before answering (%s); asking again in %.2fs (%d of %d)",
                    target.ref,
                    failure.message,
                    pause,
                    attempt + 1,
                    self._policy.attempts_per_model,
                )
                self._metrics.model_retries_by(target.ref, _reason(failure)).inc()
                await deadline.wait_for(asyncio.sleep(pause))
            tried.append(f"{target.ref} ×{attempt}")
            if position + 1 < len(self.targets):
                fallback = self.targets[position + 1].ref
                log.warning(
                    "model %s failed (%s); falling back to %s",
                    target.ref,
                    failure.message,
                    fallback,
                )
                self._metrics.model_fallbacks_by(target.ref, fallback).inc()
        assert failure is not None
        failure.message = f"{failure.message} (models tried: {', '.join(tried)})"
        raise failure
