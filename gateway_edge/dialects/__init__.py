"""The API dialects a turn is served in: each a request adapter and an answer encoder for the
one turn driver (gateway_edge/serving.py)."""
