"""The agents the edge serves, as its workers list them (`ListAgents`).

The edge keeps no agent config of its own: it needs only `gateway.*` and the workers' shared
secret. Each worker's list is read when its health turns SERVING (a restarted worker may serve
other agents) and dropped when it leaves the pool; the directory is the union of the lists.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from clawgate.agent.v1 import agent_service_pb2 as pb

FALLBACK_DEFAULT_AGENT = "main"  # as in the config: without a `default: true` agent, `main`


@dataclass(frozen=True, slots=True)
class AgentDirectory:
    ids: frozenset[str] = frozenset()
    default_id: str = FALLBACK_DEFAULT_AGENT
    # Every worker's store keeps a session's turns in order across workers (PostgreSQL).
    sessions_shared: bool = False
    logprob_ids: frozenset[str] = frozenset()  # agents whose model returns logprobs
    providers: frozenset[str] = frozenset()  # what `x-openclaw-model` may name

    @classmethod
    def of(cls, listings: Iterable[pb.ListAgentsResponse]) -> AgentDirectory:
        listings = list(listings)
        agents = [agent for listing in listings for agent in listing.agents]
        defaults = sorted({agent.id for agent in agents if agent.is_default})
        return cls(
            ids=frozenset(agent.id for agent in agents),
            default_id=defaults[0] if defaults else FALLBACK_DEFAULT_AGENT,
            sessions_shared=bool(listings) and all(item.sessions_shared for item in listings),
            logprob_ids=frozenset(agent.id for agent in agents if agent.gives_logprobs),
            providers=frozenset(name for listing in listings for name in listing.providers),
        )
