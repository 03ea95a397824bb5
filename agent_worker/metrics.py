"""The worker's Prometheus metrics, in a registry of its own (served on `worker.metricsListen`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.metric_labels import children_of

_TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_FIRST_TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.turns = Counter(
            "clawgate_worker_turns",
            "Agent turns by agent and outcome (ok, cancelled, stream_broken, or the gRPC code).",
            ["agent", "outcome"],
            registry=self.registry,
        )
        self.turn_seconds = Histogram(
            "clawgate_worker_turn_duration_seconds",
            "Time from a turn's start to its end.",
            ["agent"],
            buckets=_TURN_BUCKETS,
            registry=self.registry,
        )
        self.provider_seconds = Histogram(
            "clawgate_worker_provider_duration_seconds",
            "Time a provider took for a whole answer.",
            ["provider"],
            buckets=_TURN_BUCKETS,
            registry=self.registry,
        )
        self.provider_first_token_seconds = Histogram(
            "clawgate_worker_provider_time_to_first_token_seconds",
            "Time from asking a provider to its first text delta.",
            ["provider"],
            buckets=_FIRST_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.sessions_waiting = Gauge(
            "clawgate_worker_sessions_waiting",
            "Turns waiting for their session's previous turn to finish.",
            registry=self.registry,
        )
        self.turns_in_flight = Gauge(
            "clawgate_worker_turns_in_flight", "Turns running now.", registry=self.registry
        )
        self.tool_calls = Counter(
            "clawgate_worker_tool_calls",
            "Calls of agents' own tools (MCP) by server, tool and outcome (ok, error, timeout,"
            " unavailable, cancelled).",
            ["server", "tool", "outcome"],
            registry=self.registry,
        )
        self.tool_call_seconds = Histogram(
            "clawgate_worker_tool_call_duration_seconds",
            "Time an agent's own tool (MCP) took.",
            ["server", "tool"],
            buckets=_FIRST_TOKEN_BUCKETS + (30, 60, 120),
            registry=self.registry,
        )
        self.compactions = Counter(
            "clawgate_worker_compactions",
            "Session compactions by agent and trigger (budget: the next prompt would not fit;"
            " overflow: the provider refused a prompt as too long; manual).",
            ["agent", "trigger"],
            registry=self.registry,
        )
        self.overflow_recoveries = Counter(
            "clawgate_worker_overflow_recoveries",
            "Model calls refused as too long and asked again after compaction, by agent and"
            " outcome (ok: the retry was accepted; failed: it was refused too).",
            ["agent", "outcome"],
            registry=self.registry,
        )
        self.prompt_tokens = Histogram(
            "clawgate_worker_prompt_tokens",
            "Prompt tokens per model call, as the provider counted them.",
            ["provider"],
            buckets=(64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144),
            registry=self.registry,
        )
        self.model_retries = Counter(
            "clawgate_worker_model_retries",
            "Model calls asked again after a transient failure before any answer (unreachable,"
            " timed out, rate-limited, overloaded), by model (provider/model) and reason.",
            ["model", "reason"],
            registry=self.registry,
        )
        self.model_fallbacks = Counter(
            "clawgate_worker_model_fallbacks",
            "Turns that moved on to the agent's next fallback model, by the model that failed"
            " and the one asked next.",
            ["model", "fallback"],
            registry=self.registry,
        )
        self.model_tokens = Counter(
            "clawgate_worker_model_tokens",
            "Tokens of model calls as providers reported them (or as estimated), by agent,"
            " provider, model and kind (input, output, cache_read, cache_write; input counts"
            " cached tokens too).",
            ["agent", "provider", "model", "kind"],
            registry=self.registry,
        )
        self.model_cost = Counter(
            "clawgate_worker_model_cost_usd",
            "USD spent on model calls, priced from the model catalog's cost, by agent, provider"
            " and model (calls of unpriced models are not counted).",
            ["agent", "provider", "model"],
            registry=self.registry,
        )
        self.auth_profile_calls = Counter(
            "clawgate_worker_auth_profile_calls",
            "Model calls made with each auth profile's key, by provider and profile id.",
            ["provider", "profile"],
            registry=self.registry,
        )
        self.auth_profile_cooldowns = Counter(
            "clawgate_worker_auth_profile_cooldowns",
            "Auth profiles cooled down after their key was refused (auth) or rate-limited"
            " (ratelimited), by provider, profile id and reason.",
            ["provider", "profile", "reason"],
            registry=self.registry,
        )
        self.auth_profile_ready_at = Gauge(
            "clawgate_worker_auth_profile_cooldown_until_seconds",
            "When each auth profile's last cooldown ends (Unix time; past: it is in use).",
            ["provider", "profile"],
            registry=self.registry,
        )
        self.auth_profile_calls_by = children_of(self.auth_profile_calls)
        self.auth_profile_cooldowns_by = children_of(self.auth_profile_cooldowns)
        self.auth_profile_ready_at_by = children_of(self.auth_profile_ready_at)
        self.turns_by = children_of(self.turns)
        self.model_tokens_by = children_of(self.model_tokens)
        self.model_cost_by = children_of(self.model_cost)
        self.model_retries_by = children_of(self.model_retries)
        self.model_fallbacks_by = children_of(self.model_fallbacks)
        self.turn_seconds_by = children_of(self.turn_seconds)
        self.provider_seconds_by = children_of(self.provider_seconds)
        self.provider_first_token_seconds_by = children_of(self.provider_first_token_seconds)
        self.compactions_by = children_of(self.compactions)
        self.overflow_recoveries_by = children_of(self.overflow_recoveries)
        self.prompt_tokens_by = children_of(self.prompt_tokens)
