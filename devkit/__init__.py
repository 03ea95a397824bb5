"""Helpers the test suite and the benchmarks share: start clawgate's real processes, wait for
them, and observe them (RSS, metrics). Not used by clawgate itself."""
