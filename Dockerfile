# One image for both roles: `clawgate edge` and `clawgate worker`.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clawgate clawgate
COPY services services
COPY gateway_edge gateway_edge
COPY agent_worker agent_worker
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 curl \
    && rm -rf /var/lib/apt/lists/* && useradd --create-home clawgate
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER clawgate
ENTRYPOINT ["clawgate"]
