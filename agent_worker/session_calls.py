"""The session RPCs' work (read, compact, delete, list, find a stored response), each checking
that the caller reaches the session: another identity's is not there for them."""

from __future__ import annotations

import base64
import binascii

from agent_worker.agents import AgentRegistry
from agent_worker.domain import identity_of
from agent_worker.errors import InvalidTurnError, NotFoundError
from agent_worker.proto_mapping import caller_from_proto, compaction_to_proto, message_to_proto
from agent_worker.sessions.store import SessionStore
from agent_worker.turn_runner import TurnRunner
from clawgate.agent.v1 import agent_service_pb2 as pb

DEFAULT_PAGE, MAX_PAGE = 20, 100
SessionCall = pb.GetSessionRequest | pb.CompactSessionRequest | pb.DeleteSessionRequest


class SessionCalls:
    def __init__(self, store: SessionStore, runner: TurnRunner, agents: AgentRegistry) -> None:
        self._store = store
        self._runner = runner
        self._agents = agents

    async def _reaches(self, request: SessionCall) -> bool:
        caller = caller_from_proto(request)
        if caller is None or caller.admin:
            return True
        return caller.reaches(await self._store.owner_of(request.session_key))

    async def get(self, request: pb.GetSessionRequest) -> pb.GetSessionResponse:
        if not await self._reaches(request):
            return pb.GetSessionResponse(session_key=request.session_key)
        messages = await self._store.load(request.session_key)
        compactions = await self._store.compactions(request.session_key) if messages else []
        return pb.GetSessionResponse(
            session_key=request.session_key,
            messages=[message_to_proto(m) for m in messages],
            compactions=[compaction_to_proto(c) for c in compactions],
        )

    async def compact(self, request: pb.CompactSessionRequest) -> pb.CompactSessionResponse:
        if not await self._reaches(request):
            return pb.CompactSessionResponse(found=False)
        default = next((agent.id for agent in self._agents if agent.is_default), "")
        agent_id = request.agent_id or default  # no agent at all: NOT_FOUND from the runner
        found, made = await self._runner.compact(
            request.session_key,
            agent_id,
            request.instructions,
            identity_of(caller_from_proto(request)),
        )
        if made is None:
            return pb.CompactSessionResponse(found=found)
        return pb.CompactSessionResponse(compaction=compaction_to_proto(made), found=found)

    async def delete(self, request: pb.DeleteSessionRequest) -> pb.DeleteSessionResponse:
        if not await self._reaches(request):
            return pb.DeleteSessionResponse(deleted=False)
        return pb.DeleteSessionResponse(deleted=await self._store.delete(request.session_key))

    async def find_response(self, request: pb.FindResponseRequest) -> pb.FindResponseResponse:
        found = await self._store.find_response(request.response_id)
        caller = caller_from_proto(request)
        if found is not None and (caller is None or caller.reaches(found.owner)):
            return pb.FindResponseResponse(session_key=found.session_key, agent_id=found.agent_id)
        raise NotFoundError("no stored response has that id")

    async def list(self, request: pb.ListSessionsRequest) -> pb.ListSessionsResponse:
        limit = min(request.limit or DEFAULT_PAGE, MAX_PAGE)
        try:
            after = cursor_position(request.after) if request.after else None
        except ValueError:
            raise InvalidTurnError("after: not a cursor") from None
        caller = caller_from_proto(request)
        reaches_all = caller is None or caller.admin
        owner = None if reaches_all and not request.only_own else identity_of(caller)
        found = await self._store.list_sessions(
            request.agent_id, limit + 1, after, owner, request.include_one_off
        )
        page = found[:limit]
        last = page[-1] if len(found) > limit else None
        return pb.ListSessionsResponse(
            sessions=[
                pb.SessionSummary(
                    session_key=summary.session_key,
                    agent_id=summary.agent_id,
                    title=summary.title,
                    turns=summary.turns,
                    updated_at=summary.updated_at,
                    owner=summary.owner,
                )
                for summary in page
            ],
            next_cursor=cursor_of(last.updated_at, last.session_key) if last else "",
        )


def cursor_of(updated_at: float, session_key: str) -> str:
    """An opaque page cursor: where the last listed session stands in the order."""
    raw = f"{updated_at!r}\n{session_key}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_position(cursor: str) -> tuple[float, str]:
    """Raises ValueError for anything cursor_of did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as error:
        raise ValueError(str(error)) from None
    updated_at, newline, session_key = raw.partition("\n")
    if not newline:
        raise ValueError("no position")
    return float(updated_at), session_key
