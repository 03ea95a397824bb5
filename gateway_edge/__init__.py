"""The clawgate edge: an OpenAI-compatible HTTP front (FastAPI) for agent workers."""
