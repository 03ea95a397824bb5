"""Session transcripts: the store interface, its backends and per-session serialization."""
