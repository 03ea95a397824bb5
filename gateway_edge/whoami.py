"""GET /whoami: what a client (the chat page) needs before its first call: whether it must
send a token, and once let in, who it is, what it may do and which agent is the default."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway_edge.json_responses import json_response
from gateway_edge.state import EdgeState, admitted

router = APIRouter()
_SECRET_MODES = ("token", "password")


@router.get("/whoami")
async def whoami(request: Request) -> Response:
    state: EdgeState = request.app.state.edge
    mode = state.access.mode
    needs_token = mode in _SECRET_MODES
    if needs_token and "authorization" not in request.headers:
        # Asking is not a failed attempt: the page learns that it needs a token.
        return json_response({"auth": mode, "needs_token": True, "signed_in": False})
    principal = admitted(request).principal
    return json_response(
        {
            "auth": mode,
            "needs_token": needs_token,
            "signed_in": True,
            "identity": principal.identity or None,
            "scopes": sorted(principal.scopes),
            "admin": principal.admin,
            "default_agent": state.workers.agents.default_id or None,
        }
    )
