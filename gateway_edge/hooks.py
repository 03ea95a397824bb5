"""`POST <hooks.path>/agent` and mapped `<hooks.path>/<name>`: webhooks that start agent runs,
with OpenClaw's HTTP contract (docs/http-api.md#hooks).

The hooks' own token (`Authorization: Bearer` or `x-openclaw-token`; never the query), a
throttle after 20 failures a minute from one client (429 with Retry-After, loopback included),
256 KiB bodies read within 30 s, and `{ok: false, error}` for every refusal. Each run is stored
by a worker before it starts (StartRun), under its replay identity, so the same delivery sent
again, through any edge, starts nothing new and answers the same `runId`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any
from urllib.parse import parse_qs

import orjson

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.asgi import (
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    read_body,
    request_headers,
    send_bytes,
)
from gateway_edge.errors import ApiError
from gateway_edge.hook_actions import AgentAction, HookPlanner, HookRefused, WakeAction, bad_hook
from gateway_edge.hook_templates import HookRequest
from gateway_edge.rate_limit import AuthFailureLimiter
from gateway_edge.state import EdgeState
from gateway_edge.worker_calls import ask, ask_each
from services.gateway_config import RateLimitConfig

log = logging.getLogger("clawgate.edge.hooks")
MAX_BODY_BYTES = 256 * 1024
BODY_SECONDS = 30.0
ADMISSION_SECONDS = 15.0  # a single run's StartRun; a fan-out answers after FAN_OUT_SECONDS
FAN_OUT_SECONDS = 8.0
MAX_ERRORS_SAID = 5
_JSON = [(b"content-type", b"application/json")]
_FINISHED = (pb.RUN_STATUS_COMPLETED, pb.RUN_STATUS_FAILED)


class HookEndpoint:
    def __init__(self, state: EdgeState) -> None:
        config = state.config.hooks
        self.prefix = config.path
        self._state = state
        self._token = (config.token or "").encode()
        self._planner = HookPlanner(config, config.token or "", state.config.default_agent_id)
        self._background: set[asyncio.Future[pb.StartRunResponse]] = set()
        self._failures = AuthFailureLimiter(
            RateLimitConfig(maxAttempts=20, windowMs=60_000, lockoutMs=60_000, exemptLoopback=False)
        )

    def serves(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, body = await self._serve(scope, receive)
        except ClientDisconnected:
            return  # the sender left: no one to answer
        except HookRefused as refused:
            status, body = refused.status, {"ok": False, "error": refused.error}
            headers = [(name.encode(), value.encode()) for name, value in refused.headers.items()]
            await send_bytes(send, status, [*_JSON, *headers], orjson.dumps(body))
            return
        except ApiError as error:  # a body too large, a worker's refusal
            status, body = error.status, {"ok": False, "error": error.message}
        except Exception:
            log.exception("hook %s failed", scope["path"])
            status, body = 500, {"ok": False, "error": "hook mapping failed"}
        if status == 204:
            await send_bytes(send, 204, [], b"")
        else:
            await send_bytes(send, status, _JSON, orjson.dumps(body))

    async def _serve(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        if scope["method"] != "POST":
            raise HookRefused(405, "method not allowed: use POST", {"allow": "POST"})
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        if "token" in query:
            raise bad_hook("a token in the query is refused: send it in Authorization")
        raw_headers = request_headers(scope)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers.items()}
        self._authenticate(scope, raw_headers, headers)
        path = scope["path"][len(self.prefix) :].strip("/")
        payload = await self._payload(receive, headers)
        request = HookRequest(payload, path, headers, query)
        if path == "agent":
            action = self._planner.direct(request, headers)
            wait = isinstance(payload, dict) and payload.get("waitForCompletion") is True
            return await self._single(action, wait)
        if path == "wake":
            return await self._wakes([self._planner.wake(request)])
        if not path:
            raise HookRefused(404, "no hook action here: POST to /agent, /wake or a mapped path")
        planned = self._planner.mapped(request, headers)
        if planned is None:
            raise HookRefused(404, f"no hook mapping matches {path!r}")
        _, actions = planned
        wakes = [action for action in actions if isinstance(action, WakeAction)]
        runs = [action for action in actions if isinstance(action, AgentAction)]
        if not actions:
            return 204, {}
        if not runs:
            return await self._wakes(wakes)
        status, answer = await (
            self._single(runs[0], wait=False) if len(runs) == 1 else self._fan_out(runs)
        )
        if wakes:  # wakes have no replay identity: they go whatever the runs did
            answer["eventOutcome"] = (await self._wakes(wakes))[1]["eventOutcome"]
        return status, answer

    def _authenticate(
        self, scope: Scope, raw_headers: dict[bytes, bytes], headers: dict[str, str]
    ) -> None:
        # Behind a trusted proxy, the sender's address it forwarded (gateway.trustedProxies).
        client = self._state.access.client_ip(scope.get("client"), raw_headers)
        bearer = headers.get("authorization", "")
        token = bearer[7:].strip() if bearer[:7].lower() == "bearer " else ""
        token = token or headers.get("x-openclaw-token", "").strip()
        if token and hmac.compare_digest(token.encode(), self._token):
            self._failures.record_success(client)
            return
        wait = self._failures.retry_after(client)
        if wait is not None:
            raise HookRefused(429, "too many failed attempts", {"retry-after": str(int(wait) + 1)})
        self._failures.record_failure(client)
        raise HookRefused(401, "unauthorized: send the hooks token")

    @staticmethod
    async def _payload(receive: Receive, headers: dict[str, str]) -> Any:
        try:
            async with asyncio.timeout(BODY_SECONDS):
                body = await read_body(
                    receive, headers.get("content-length", "").encode(), MAX_BODY_BYTES
                )
        except TimeoutError:
            raise HookRefused(408, f"the body did not arrive within {BODY_SECONDS:g} s") from None
        except ApiError as error:
            raise HookRefused(error.status, error.message) from None
        try:
            return orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            raise bad_hook("the body is not valid JSON") from None

    async def _start(self, action: AgentAction) -> pb.StartRunResponse:
        if action.agent_id not in self._state.workers.known_agents().ids:
            raise bad_hook(f"unknown agent {action.agent_id!r}")
        request = pb.StartRunRequest(
            agent_id=action.agent_id,
            session_key=action.session_key,
            message=action.message,
            hook=action.hook,
            name=action.name,
            replay_key=action.replay_key,
            model=action.model,
            timeout_seconds=action.timeout_seconds,
        )
        try:
            started: pb.StartRunResponse = await ask(
                self._state.workers,
                "StartRun",
                request,
                action.session_key,
                ADMISSION_SECONDS,
                sticky=bool(action.session_key),  # a fresh session: the least busy worker
            )
        except ApiError as error:
            status = 503 if error.status in (503, 504) else 502
            raise HookRefused(status, f"the run was not admitted: {error.message}") from None
        log.info(
            "hook %s: run %s %s (agent %s)",
            action.hook,
            started.run.id,
            "replayed" if started.replayed else "admitted",
            action.agent_id,
        )
        return started

    async def _wakes(self, wakes: list[WakeAction]) -> tuple[int, dict[str, Any]]:
        """Runs each `now` wake on its session and keeps each `next-heartbeat` one for the
        session's next turn; `coalesced` when every one repeated what was already kept."""
        outcomes = [await self._wake(wake) for wake in wakes]
        outcome = "queued" if any(said == "queued" for said, _ in outcomes) else "coalesced"
        answer: dict[str, Any] = {"ok": True, "mode": wakes[0].mode, "eventOutcome": outcome}
        if run_ids := [run_id for _, run_id in outcomes if run_id]:  # ours: the runs it started
            answer["runId"] = run_ids[0]
        return 200, answer

    async def _wake(self, wake: WakeAction) -> tuple[str, str]:
        """(its outcome, the run it started: "" for none)."""
        if wake.mode == "now":
            action = AgentAction(
                wake.hook, "Wake", wake.agent_id, wake.session_key, wake.text, "", 0, ""
            )
            return "queued", (await self._start(action)).run.id
        request = pb.QueueEventRequest(
            agent_id=wake.agent_id, session_key=wake.session_key, text=wake.text
        )
        try:
            queued: pb.QueueEventResponse = await ask(
                self._state.workers, "QueueEvent", request, wake.session_key, ADMISSION_SECONDS
            )
        except ApiError as error:
            raise HookRefused(503 if error.status in (503, 504) else 502, error.message) from None
        return ("coalesced" if queued.coalesced else "queued"), ""

    async def _single(self, action: AgentAction, wait: bool) -> tuple[int, dict[str, Any]]:
        started = await self._start(action)
        answer: dict[str, Any] = {"ok": True, "runId": started.run.id}
        if wait:
            run = await self._finished(started.run)
            answer["completion"] = completion_of(run)
        return 200, answer

    def _settled(self, task: asyncio.Future[pb.StartRunResponse]) -> None:
        """A fan-out item admitted after its answer went: said in the log if it failed."""
        self._background.discard(task)
        if not task.cancelled() and (failure := task.exception()) is not None:
            log.warning("hook fan-out item not admitted: %s", failure)

    async def _finished(self, run: pb.Run) -> pb.Run:
        """The run once it ended, asked of the workers until then (the run may be anywhere)."""
        pause = 0.05
        while run.status not in _FINISHED:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
            found = await ask_each(self._state.workers, "GetRun", pb.GetRunRequest(run_id=run.id))
            if found is None:
                raise HookRefused(502, f"run {run.id} is no longer stored")
            run = found.run
        return run

    async def _fan_out(self, actions: list[AgentAction]) -> tuple[int, dict[str, Any]]:
        tasks = [asyncio.ensure_future(self._start(action)) for action in actions]
        done, pending = await asyncio.wait(tasks, timeout=FAN_OUT_SECONDS)
        for task in pending:  # they go on being admitted after the answer: kept referenced
            self._background.add(task)
            task.add_done_callback(self._settled)
        run_ids = [task.result().run.id for task in tasks if task in done and not task.exception()]
        errors = [
            str(getattr(task.exception(), "error", task.exception()))
            for task in tasks
            if task in done and task.exception()
        ]
        if not errors and not pending:
            return 200, {
                "ok": True,
                "runId": run_ids[0],
                "runIds": run_ids,
                "dispatched": len(run_ids),
            }
        answer = {
            "ok": False,
            "error": f"{len(run_ids)} of {len(actions)} runs admitted"
            + (f", {len(pending)} still pending" if pending else ""),
            "runIds": run_ids,
            "errors": errors[:MAX_ERRORS_SAID],
        }
        return (503 if pending and not errors else 502), answer


def completion_of(run: pb.Run) -> dict[str, Any]:
    """OpenClaw's `completion`, without the answer's text (it is in the session)."""
    completion: dict[str, Any] = {
        "status": "ok" if run.status == pb.RUN_STATUS_COMPLETED else "error",
        "replyDisposition": "visible" if run.answer.strip() else "empty",
        "delivered": False,
        "deliveryAttempted": False,
    }
    return completion
