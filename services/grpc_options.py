"""The gRPC settings of the edge ⇄ worker hop, in one place so that both sides agree.

- Message size: both sides accept `worker.maxMessageBytes`. The edge never sends a turn larger
  than that (it answers 413 instead), so one turn cannot break the stream its neighbours share.
- Keepalive: the edge pings every `gateway.workerKeepaliveSeconds`, with or without calls, to
  find a dead or frozen worker. A worker takes pings as often as once a second and never answers
  them with GOAWAY `too_many_pings` (gRPC's server default allows one per five minutes, and
  broke every quiet stream after a couple of pings); it pings the edge too, to drop the turns
  of an edge that vanished.
- Ports: `SO_REUSEPORT` is off, so a second worker on a taken port fails to start instead of
  silently taking half of the connections.
"""

from __future__ import annotations

from services.config import ClawgateConfig

Options = tuple[tuple[str, int], ...]
_WORKER_PINGS_EDGE_MS = 30_000
_PING_ANSWER_TIMEOUT_MS = 10_000


def worker_server_options(config: ClawgateConfig) -> Options:
    size = config.worker.max_message_bytes
    return (
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        ("grpc.so_reuseport", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.keepalive_time_ms", _WORKER_PINGS_EDGE_MS),
        ("grpc.keepalive_timeout_ms", _PING_ANSWER_TIMEOUT_MS),
    )


def edge_channel_options(config: ClawgateConfig) -> Options:
    size = config.worker.max_message_bytes
    ping_ms = int(config.gateway.worker_keepalive_seconds * 1000)
    return (
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        ("grpc.keepalive_time_ms", ping_ms),
        ("grpc.keepalive_timeout_ms", min(ping_ms, _PING_ANSWER_TIMEOUT_MS)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    )
