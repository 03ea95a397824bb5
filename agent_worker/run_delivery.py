"""Posts each finished run to `hooks.delivery.url`, signed so the receiver can tell it came
from this gateway and was not replayed later (docs/http-api.md#run-delivery).

The body is the run object with its answer; `x-clawgate-timestamp` holds Unix seconds and
`x-clawgate-signature` `sha256=<hex>`, the HMAC-SHA256 with the secret of "<timestamp>.<body>".
A failed post (no answer, a 5xx, 408 or 429) is tried again after 1 s, 2 s, 4 s… up to
`maxAttempts`; another 4xx is the receiver's refusal and ends it. The worker that finishes a run
delivers it (a run failed by a sweep, the sweeping worker), once unless the receiver failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from typing import Any

import orjson
import yarl

from agent_worker.providers.http_client import (
    HttpClient,
    UpstreamBroken,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from agent_worker.providers.proxy import proxy_for
from agent_worker.sessions.run_rows import RunRecord
from services.hooks_config import HookDelivery

log = logging.getLogger("clawgate.worker.runs")
MAX_ANSWER_READ = 64 << 10
MAX_PAUSE_SECONDS = 60.0
_RETRIED = frozenset({408, 429})


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def delivered_body(run: RunRecord) -> bytes:
    document: dict[str, Any] = {
        "object": "run",
        "id": run.run_id,
        "status": run.status,
        "agent": run.agent_id,
        "session_key": run.session_key,
        "hook": run.hook,
        "name": run.name,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "error": run.error or None,
        "answer": run.answer,
    }
    return orjson.dumps(document)


class RunDelivery:
    def __init__(self, config: HookDelivery) -> None:
        url = yarl.URL(config.url)
        self._http = HttpClient(
            url,
            {"content-type": "application/json", "user-agent": "clawgate"},
            connect_timeout=5.0,
            read_timeout=30.0,
            proxy=proxy_for(url, None),
        )
        self._secret = config.secret.encode()
        self._attempts = config.max_attempts
        self._sending: set[asyncio.Task[None]] = set()

    def deliver(self, run: RunRecord) -> None:
        task = asyncio.create_task(self._send(run))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, run: RunRecord) -> None:
        body = delivered_body(run)
        for attempt in range(1, self._attempts + 1):
            timestamp = str(int(time.time()))
            head = (
                f"x-clawgate-timestamp: {timestamp}\r\n"
                f"x-clawgate-signature: {signature(self._secret, timestamp, body)}\r\n"
            ).encode()
            outcome = await self._post(body, head)
            if outcome is None:
                log.info("run %s delivered (attempt %d)", run.run_id, attempt)
                return
            retried = attempt < self._attempts and outcome != "refused"
            log.warning(
                "run %s: delivery attempt %d of %d failed (%s)%s",
                run.run_id,
                attempt,
                self._attempts,
                outcome,
                "; trying again" if retried else "",
            )
            if not retried:
                return
            pause = min(2.0 ** (attempt - 1), MAX_PAUSE_SECONDS)
            await asyncio.sleep(pause * random.uniform(0.9, 1.1))  # noqa: S311 - jitter

    async def _post(self, body: bytes, head: bytes) -> str | None:
        """None when the receiver took it; else what went wrong ("refused": not to retry)."""
        try:
            response = await self._http.post(body, head)
            try:
                await response.read(MAX_ANSWER_READ)
            finally:
                response.release()
        except (UpstreamTimeout, UpstreamUnreachable, UpstreamBroken) as error:
            return str(error) or type(error).__name__
        if 200 <= response.status < 300:
            return None
        if 400 <= response.status < 500 and response.status not in _RETRIED:
            return "refused"
        return f"HTTP {response.status}"

    async def close(self) -> None:
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        self._http.close()
