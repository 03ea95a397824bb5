# syntax=docker/dockerfile:1
# One image for both roles: `clawgate edge` and `clawgate worker`.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, in a layer of their own: an edit to clawgate's code does not rebuild them
# (llama-cpp-python compiles llama.cpp for about 8 minutes); pip's cache survives a change of
# pyproject.toml too. GGML_NATIVE=OFF builds llama.cpp for any x86-64 CPU, not just this one.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    CMAKE_ARGS="-DGGML_NATIVE=OFF" pip wheel --wheel-dir /wheels -r requirements.txt
COPY README.md ./
COPY clawgate clawgate
COPY services services
COPY gateway_edge gateway_edge
COPY agent_worker agent_worker
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 curl \
    && rm -rf /var/lib/apt/lists/* && useradd --create-home clawgate
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER clawgate
# The edge's HTTP port and the worker's gRPC port (their defaults).
EXPOSE 18789 50051
# Whichever role the container runs: a worker answers its gRPC health check, an edge /readyz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD clawgate probe --worker 127.0.0.1:50051 --timeout 2 >/dev/null 2>&1 \
        || curl -fsS http://127.0.0.1:18789/readyz >/dev/null || exit 1
ENTRYPOINT ["clawgate"]
