"""Who a request is for and what it may do (OpenClaw's operator scopes).

Shared-secret callers (token, password) are the gateway's owner, with every scope. Identity-
bearing callers (trusted-proxy, or mode "none") have the scopes `x-openclaw-scopes` lists:
present and empty means none; absent means the default set.
"""

from __future__ import annotations

from dataclasses import dataclass

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.errors import missing_scope
from services.gateway_config import OPERATOR_IDENTITY, OPERATOR_SCOPES

ADMIN, READ, WRITE = "operator.admin", "operator.read", "operator.write"
SCOPES_HEADER = b"x-openclaw-scopes"


@dataclass(frozen=True, slots=True)
class Principal:
    identity: str  # the person; "" for the gateway's owner (or the one caller of mode "none")
    scopes: frozenset[str]

    @property
    def counted_as(self) -> str:
        """Whom limits and usage count the caller as: the person, or `operator` for the owner."""
        return self.identity or OPERATOR_IDENTITY

    @property
    def admin(self) -> bool:
        """Owner-level controls: x-openclaw-model, x-openclaw-session-key, everyone's sessions."""
        return ADMIN in self.scopes

    def require(self, scope: str) -> None:
        """Raises 403 `missing scope: <scope>` unless the caller has it."""
        if scope not in self.scopes:
            raise missing_scope(scope)

    def require_any(self, *scopes: str) -> None:
        if self.scopes.isdisjoint(scopes):
            raise missing_scope(scopes[0])

    def caller(self) -> pb.Caller | None:
        """Whom the worker acts for; None for the owner with full authority (the worker's
        default, and nothing more to send on the hot path)."""
        if not self.identity and self.admin:
            return None
        return pb.Caller(identity=self.identity, admin=self.admin)


OWNER = Principal("", frozenset(OPERATOR_SCOPES))


def scopes_from(header: bytes | None, default: frozenset[str]) -> frozenset[str]:
    """`x-openclaw-scopes`: a comma list; absent: `default`."""
    if header is None:
        return default
    return frozenset(filter(None, (part.strip() for part in header.decode("latin-1").split(","))))
