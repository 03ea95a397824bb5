"""Runs: agent turns the gateway starts itself (webhooks), kept in the session store.

A run is stored before it starts, under its replay key when it has one: the store keeps one
run per key (a unique column), so a second delivery of the same webhook, through any edge and
before or after any restart, finds the first's run and starts nothing. The worker that stored
it runs its turn in the background (the answer lands in the session as any turn's) and says
every HEARTBEAT_SECONDS that it still runs it; every worker fails the unfinished runs nobody has
refreshed for STALE_SECONDS, so a run whose worker died ends `failed` instead of running
forever. Such a run is not retried: its model may have called tools already, and a second try
could do their work twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import aclosing

from agent_worker.agents import AgentRegistry
from agent_worker.domain import ChatMessage, TurnRequest
from agent_worker.errors import InvalidTurnError, NotFoundError, TurnError
from agent_worker.events import TextDelta
from agent_worker.proto_mapping import caller_from_proto
from agent_worker.sessions.run_rows import (
    COMPLETED,
    FAILED,
    QUEUED,
    RUNNING,
    RunRecord,
)
from agent_worker.sessions.store import SessionStore, TurnOrigin
from agent_worker.turn_runner import TurnRunner
from clawgate.agent.v1 import agent_service_pb2 as pb
from services.ids import random_hex
from services.logging import fingerprint

log = logging.getLogger("clawgate.worker.runs")
HEARTBEAT_SECONDS = 2.0
STALE_SECONDS = 15.0
MAX_LISTED = 100
_STATUSES = {
    QUEUED: pb.RUN_STATUS_QUEUED,
    RUNNING: pb.RUN_STATUS_RUNNING,
    COMPLETED: pb.RUN_STATUS_COMPLETED,
    FAILED: pb.RUN_STATUS_FAILED,
}
Finished = Callable[[RunRecord], None]


def run_to_proto(run: RunRecord) -> pb.Run:
    return pb.Run(
        id=run.run_id,
        status=_STATUSES.get(run.status, pb.RUN_STATUS_UNSPECIFIED),
        agent_id=run.agent_id,
        session_key=run.session_key,
        hook=run.hook,
        name=run.name,
        created_at=run.created_at,
        finished_at=run.finished_at or 0.0,
        error=run.error,
        answer=run.answer,
        owner=run.owner,
    )


class Runs:
    def __init__(
        self,
        runner: TurnRunner,
        store: SessionStore,
        agents: AgentRegistry,
        on_finished: Finished = lambda run: None,
    ) -> None:
        self.holder = f"worker-{random_hex()}"
        self._runner = runner
        self._store = store
        self._agents = agents
        self._on_finished = on_finished
        self._running: dict[str, asyncio.Task[None]] = {}
        self._keeper: asyncio.Task[None] | None = None

    async def start(self, request: pb.StartRunRequest) -> pb.StartRunResponse:
        agent = self._agents.get(request.agent_id)  # NOT_FOUND for an unknown agent
        if not request.message.strip():
            raise InvalidTurnError("a run needs a message")
        caller = caller_from_proto(request)
        now = time.time()
        record = RunRecord(
            run_id=f"run_{uuid.uuid4().hex}",
            replay_key=request.replay_key or None,
            status=QUEUED,
            agent_id=agent.id,
            session_key=request.session_key or f"hook:{uuid.uuid4()}",
            hook=request.hook or "agent",
            name=request.name or "Hook",
            owner=caller.identity if caller is not None else "",
            created_at=now,
            holder=self.holder,
            alive_at=now,
        )
        stored, created = await self._store.claim_run(record)
        if not created:
            log.info("run %s replayed (%s): nothing started", stored.run_id, stored.hook)
            return pb.StartRunResponse(run=run_to_proto(stored), replayed=True)
        turn = TurnRequest(
            agent_id=agent.id,
            session_key=stored.session_key,
            input=ChatMessage("user", request.message),
            request_id=request.request_id or stored.run_id,
            new_session=not request.session_key,
            model=request.model,
            caller=caller,
        )
        timeout = request.timeout_seconds or agent.turn_timeout or None
        task = asyncio.create_task(self._run(stored, turn, timeout))
        self._running[stored.run_id] = task
        task.add_done_callback(lambda _: self._running.pop(stored.run_id, None))
        return pb.StartRunResponse(run=run_to_proto(stored))

    async def _run(self, run: RunRecord, turn: TurnRequest, seconds: float | None) -> None:
        await self._store.start_run(run.run_id, self.holder, time.time())
        log.info("run %s started: agent=%s hook=%s", run.run_id, run.agent_id, run.hook)
        texts: list[str] = []
        status, error = FAILED, ""
        try:
            async with asyncio.timeout(seconds), aclosing(self._runner.run(turn)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        texts.append(event.text)
            status = COMPLETED
        except TurnError as failure:
            error = failure.message
        except TimeoutError:
            error = f"the run took longer than {seconds:g} s"
        except asyncio.CancelledError:
            error = "the worker stopped before the run finished"
            raise
        except Exception:
            log.exception("run %s failed unexpectedly", run.run_id)
            error = "the run failed unexpectedly"
        finally:
            await self._finish(run, status, error, "".join(texts))

    async def _finish(self, run: RunRecord, status: str, error: str, answer: str) -> None:
        finished_at = time.time()
        try:
            await self._store.finish_run(run.run_id, status, finished_at, error, answer)
        except TurnError as failure:  # the sweep ends it once this worker stops refreshing it
            log.warning("run %s: its end could not be stored: %s", run.run_id, failure.message)
            return
        (log.info if status == COMPLETED else log.warning)(
            "run %s %s%s", run.run_id, status, f": {error}" if error else ""
        )
        stored = dataclasses.replace(
            run, status=status, finished_at=finished_at, error=error, answer=answer
        )
        self._on_finished(stored)

    async def queue_event(self, request: pb.QueueEventRequest) -> pb.QueueEventResponse:
        """A wake for the session's next turn: stored as a message of the session (its next
        turn reads it with the rest of the history), unless it repeats the last one."""
        agent = self._agents.get(request.agent_id)
        if not request.text.strip() or not request.session_key:
            raise InvalidTurnError("an event needs its text and a session")
        event = ChatMessage("user", request.text)
        async with self._runner.session_held(request.session_key):
            last = await self._store.load(request.session_key, limit=1)
            if last and last[-1] == event:
                return pb.QueueEventResponse(coalesced=True)
            origin = TurnOrigin(agent_id=agent.id, expected_length=None)
            await self._store.append_turn(request.session_key, [event], origin)
        log.info("event queued for the next turn of session %s", fingerprint(request.session_key))
        return pb.QueueEventResponse(coalesced=False)

    async def get(self, request: pb.GetRunRequest) -> pb.GetRunResponse:
        run = await self._store.get_run(request.run_id)
        if run is None:
            raise NotFoundError(f"no run {request.run_id!r}")
        return pb.GetRunResponse(run=run_to_proto(run))

    async def list(self, request: pb.ListRunsRequest) -> pb.ListRunsResponse:
        limit = min(request.limit or MAX_LISTED, MAX_LISTED)
        runs = await self._store.list_runs(request.session_key, limit)
        return pb.ListRunsResponse(runs=[run_to_proto(run) for run in runs])

    def keep(self) -> None:
        """Starts refreshing this worker's runs and sweeping every worker's stale ones."""
        self._keeper = asyncio.create_task(self._keep())

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            now = time.time()
            try:
                if self._running:
                    await self._store.touch_runs(self.holder, now)
                swept = await self._store.sweep_runs(now, now - STALE_SECONDS)
            except TurnError as failure:
                log.warning("runs could not be refreshed: %s", failure.message)
                continue
            for run in swept:
                log.warning("run %s failed: %s", run.run_id, run.error)
                self._on_finished(run)

    async def close(self) -> None:
        """Ends the keeper and this worker's runs (each stored as failed)."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        running = list(self._running.values())
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
